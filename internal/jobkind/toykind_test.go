package jobkind_test

// A third, made-up kind registered in this test only, run end to end
// through the real api and worker (in this process) on a real redis-server
// and the simulator: SSE resume, cancel, the deadline, the caches and a
// signed webhook. No shared package knows it: that is the seam's promise.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// toyKind is a made-up third kind, registered in this test only: a
// "digest" asks the default model for N takes on a question (its members,
// the "take" noun, with an "angle" reference field), then writes a streamed
// summary over them and counts them (a structured part that needs no call).
// Nothing of it exists outside this file.
type toyKind struct{}

const toyName = "digest"

type toyParams struct {
	Takes int `json:"takes"`
}

type toyRequest struct {
	Question    *string `json:"question"`
	Takes       int     `json:"takes"`
	Cache       string  `json:"cache"`
	CallbackURL string  `json:"callback_url"`
}

func (toyKind) Name() string   { return toyName }
func (toyKind) Path() string   { return "/digest" }
func (toyKind) Noun() job.Noun { return "take" }

func (toyKind) Decode(body []byte, _ time.Time) (job.Spec, error) {
	var r toyRequest
	if err := jobkind.DecodeStrict(body, &r); err != nil {
		return job.Spec{}, err
	}
	if r.Takes < 1 || r.Takes > 4 {
		return job.Spec{}, &job.FieldError{Field: "takes", Message: fmt.Sprintf("takes must be 1 to 4, got %d", r.Takes)}
	}
	spec, ferr := job.Common{Question: r.Question, Cache: r.Cache, CallbackURL: r.CallbackURL}.Validate()
	if ferr != nil {
		return job.Spec{}, ferr
	}
	spec.Kind = toyName
	spec.Params = jobkind.EncodeParams(toyParams{Takes: r.Takes})
	return spec, nil
}

func (toyKind) Models(job.Spec) []jobkind.NamedModel { return nil }

func toyParamsOf(spec job.Spec) toyParams {
	var p toyParams
	_ = jobkind.DecodeParams(spec, &p)
	return p
}

func (toyKind) Plan(spec job.Spec, env jobkind.Env) ([]jobkind.Member, error) {
	n := toyParamsOf(spec).Takes
	out := make([]jobkind.Member, n)
	for i := range out {
		angle := fmt.Sprintf("angle-%d", i+1)
		out[i] = jobkind.Member{
			Label: fmt.Sprintf("take %d", i+1),
			Ref:   map[string]string{"angle": angle},
			Request: llm.Request{Model: env.Model, MaxTokens: 200,
				System: "You give one take on a question, from the angle named.",
				User:   fmt.Sprintf("Angle: %s\nQuestion: %s", angle, spec.Question)},
			CacheKey: cache.Identity(struct{ K, Q, A, M, P string }{toyName, cache.NormalizeQuestion(spec.Question), angle, env.Model, env.Provider(env.Model)}),
		}
	}
	return out, nil
}

func (toyKind) Parts(spec job.Spec, env jobkind.Env, done []job.Member) ([]jobkind.Part, error) {
	var b strings.Builder
	for _, m := range done {
		fmt.Fprintf(&b, "%s: %s\n", m.Label, m.Text)
	}
	return []jobkind.Part{
		{Name: "summary", Stream: true, Request: llm.Request{Model: env.Model, MaxTokens: 200,
			System: "You summarise the takes given.", User: b.String()}},
		{Name: "count", Fixed: map[string]int{"takes": len(done)}},
	}, nil
}

func (toyKind) ResultKey(spec job.Spec, env jobkind.Env, done []job.Member) string {
	texts := make([]string, len(done))
	for i, m := range done {
		texts[i] = m.Text
	}
	return cache.Identity(struct {
		K, Q, M string
		T       []string
	}{toyName, cache.NormalizeQuestion(spec.Question), env.Model, texts})
}

func (toyKind) Accepted(spec job.Spec, _ []job.Member) (map[string]any, error) {
	return map[string]any{"takes": toyParamsOf(spec).Takes}, nil
}

type toyView struct {
	Takes   []job.Member    `json:"takes"`
	Summary string          `json:"summary"`
	Count   json.RawMessage `json:"count,omitempty"`
}

func (toyKind) View(j *job.Job) (any, error) {
	v := toyView{Takes: j.Members}
	if p := j.Result.Part("summary"); p != nil {
		v.Summary = p.Text
	}
	if p := j.Result.Part("count"); p != nil {
		v.Count = p.Value
	}
	return v, nil
}

const (
	toyModel      = "sim-model"
	toySecret     = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	toyDeadline   = 8 * time.Second
	wantTakes     = 3
	toyStopReason = "enough events read"
)

// toyStack is the api and the worker of one process, with the toy kind
// registered beside the real ones.
type toyStack struct {
	base     string
	hookBase string
	api      *client.Client
	sim      *llmsim.Server
	hook     *hookSink
}

// hookSink receives the webhooks.
type hookSink struct {
	got    chan *http.Request
	bodies chan []byte
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.got <- r
	h.bodies <- body
	w.WriteHeader(http.StatusNoContent)
}

func startToyStack(t *testing.T) *toyStack {
	t.Helper()
	db := redistest.New(t)
	sim := llmsim.New(llmsim.Config{})
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	t.Cleanup(sim.Close)
	hook := &hookSink{got: make(chan *http.Request, 8), bodies: make(chan []byte, 8)}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)

	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_URL": db.URL, "API_ADDR": "127.0.0.1:0", "WORKER_ADDR": "127.0.0.1:0",
		"OPENAI_BASE_URL": simSrv.URL + "/v1", "OPENAI_API_KEY": "sim-key",
		"LLM_MODEL": toyModel, "LLM_EXTRACTION_MODEL": "sim-extract",
		"JOB_DEADLINE": toyDeadline.String(), "SHUTDOWN_TIMEOUT": "5s",
		"WEBHOOK_SECRET": toySecret, "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := kinds.Registry()
	reg.Add(toyKind{})
	log := slog.New(slog.DiscardHandler)

	ctx, stop := context.WithCancel(context.Background())
	wrdb, err := redisx.NewClient(cfg.Redis, "tt-worker", worker.PoolSize(cfg), false)
	if err != nil {
		t.Fatal(err)
	}
	workerDone := make(chan error, 1)
	go func() { workerDone <- worker.Run(ctx, cfg, worker.Deps{Redis: wrdb, Kinds: reg, Log: log}) }()
	ardb, err := redisx.NewClient(cfg.Redis, "tt-api", 8, false)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: ardb, Kinds: reg, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		stop()
		for name, done := range map[string]chan error{"api": apiDone, "worker": workerDone} {
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		_ = srv.Close()
		_ = ardb.Close()
		_ = wrdb.Close()
	})
	base := "http://" + ln.Addr().String()
	return &toyStack{base: base, hookBase: hookSrv.URL + "/hook", api: client.New(base), sim: sim, hook: hook}
}

// submit posts a digest request and returns the 202's body.
func (s *toyStack) submit(t *testing.T, body map[string]any) client.Accepted {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(s.base+"/api/digest", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/digest: %d %s", resp.StatusCode, raw)
	}
	var acc client.Accepted
	if err := json.Unmarshal(raw, &acc); err != nil {
		t.Fatal(err)
	}
	return acc
}

// follow reads the job's events from after lastID to the end.
func (s *toyStack) follow(t *testing.T, id, lastID string) []client.Event {
	t.Helper()
	var evs []client.Event
	if _, err := s.api.Events(t.Context(), id, lastID, func(ev client.Event) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	return evs
}

// terminal returns the status of the stream's job.completed.
func terminal(t *testing.T, evs []client.Event) string {
	t.Helper()
	if len(evs) == 0 || evs[len(evs)-1].Name != client.EventJobCompleted {
		t.Fatalf("stream does not end with job.completed: %v", eventNames(evs))
	}
	var d client.JobCompletedData
	if err := evs[len(evs)-1].Decode(&d); err != nil {
		t.Fatal(err)
	}
	return string(d.Status)
}

func eventNames(evs []client.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Name
	}
	return out
}

func count(evs []client.Event, name string) int {
	n := 0
	for _, ev := range evs {
		if ev.Name == name {
			n++
		}
	}
	return n
}

// view reads the job's view as JSON (the client knows no toy fields).
func (s *toyStack) view(t *testing.T, id string) map[string]json.RawMessage {
	t.Helper()
	resp, err := http.Get(s.base + "/api/jobs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestToyKindEndToEnd(t *testing.T) {
	s := startToyStack(t)

	t.Run("invalid request", func(t *testing.T) {
		b := []byte(`{"question":"Why?","takes":9}`)
		resp, err := http.Post(s.base+"/api/digest", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code, Field string }
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != http.StatusBadRequest || e.Error.Field != "takes" {
			t.Fatalf("takes 9: %d %+v, want 400 naming takes", resp.StatusCode, e.Error)
		}
	})

	const question = "What makes a good toy?"
	var first []client.Event
	t.Run("completes, resumes and calls back", func(t *testing.T) {
		acc := s.submit(t, map[string]any{"question": question, "takes": wantTakes, "callback_url": s.hookURL(t)})
		// Read part of the stream, drop it, and resume from the last id.
		var head []client.Event
		stop := errors.New(toyStopReason)
		lastID, err := s.api.Events(t.Context(), acc.JobID, "", func(ev client.Event) error {
			head = append(head, ev)
			if ev.Name == "take.completed" {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Fatalf("first read: %v (events %v)", err, eventNames(head))
		}
		tail := s.follow(t, acc.JobID, lastID)
		resumed := append(head, tail...)
		full := s.follow(t, acc.JobID, "")
		if got, want := eventIDs(resumed), eventIDs(full); got != want {
			t.Fatalf("resumed stream differs from the replay:\n%s\n%s", got, want)
		}
		first = full
		if st := terminal(t, full); st != "completed" {
			t.Fatalf("status %s: %v", st, eventNames(full))
		}
		for name, want := range map[string]int{
			"job.accepted": 1, "take.started": wantTakes, "take.completed": wantTakes,
			"aggregate.started": 1, "summary.completed": 1, "count.completed": 1, "job.completed": 1,
		} {
			if got := count(full, name); got != want {
				t.Errorf("%d %s events, want %d: %v", got, name, want, eventNames(full))
			}
		}
		if count(full, "take.delta") == 0 || count(full, "summary.delta") == 0 {
			t.Errorf("no streamed text: %v", eventNames(full))
		}
		var acceptedData struct {
			Kind  string `json:"kind"`
			Takes int    `json:"takes"`
		}
		if err := full[0].Decode(&acceptedData); err != nil || acceptedData.Kind != toyName || acceptedData.Takes != wantTakes {
			t.Errorf("job.accepted %s: %+v %v", full[0].Data, acceptedData, err)
		}
		for _, ev := range full {
			if ev.Name == "take.started" && !strings.Contains(string(ev.Data), `"angle":"angle-`) {
				t.Errorf("take.started without its reference field: %s", ev.Data)
			}
			if ev.Name == "count.completed" && !strings.Contains(string(ev.Data), `"takes":3`) {
				t.Errorf("count.completed: %s", ev.Data)
			}
		}

		v := s.view(t, acc.JobID)
		var takes []job.Member
		_ = json.Unmarshal(v["takes"], &takes)
		var summary string
		_ = json.Unmarshal(v["summary"], &summary)
		if string(v["kind"]) != `"digest"` || len(takes) != wantTakes || summary == "" {
			t.Fatalf("view: kind %s, %d takes, summary %q", v["kind"], len(takes), summary)
		}
		for _, m := range takes {
			if m.Status != job.MemberCompleted || m.Text == "" || m.Ref["angle"] == "" {
				t.Errorf("take %+v", m)
			}
		}

		// The webhook: signed, once, with the kind's view.
		r := <-s.hook.got
		body := <-s.hook.bodies
		wh, err := standardwebhooks.NewWebhook(toySecret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, r.Header); err != nil {
			t.Fatalf("webhook signature: %v", err)
		}
		var envelope struct {
			Type string                     `json:"type"`
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &envelope); err != nil {
			t.Fatal(err)
		}
		hv := envelope.Data
		if envelope.Type != "job.completed" || string(hv["kind"]) != `"digest"` || string(hv["status"]) != `"completed"` || len(hv["takes"]) == 0 || len(hv["summary"]) < 3 {
			t.Fatalf("webhook body: %s", body)
		}
	})

	t.Run("served from the caches", func(t *testing.T) {
		calls := s.sim.Stats()
		acc := s.submit(t, map[string]any{"question": question, "takes": wantTakes})
		if !acc.Cached {
			t.Fatalf("same question again: %+v, want cached", acc)
		}
		evs := s.follow(t, acc.JobID, "")
		if st := terminal(t, evs); st != "completed" {
			t.Fatalf("status %s", st)
		}
		var summary, firstSummary string
		summary = partText(t, evs, "summary.completed")
		firstSummary = partText(t, first, "summary.completed")
		if summary != firstSummary {
			t.Errorf("cached summary %q, want %q", summary, firstSummary)
		}
		if got := s.sim.Stats(); got.Total.Requests != calls.Total.Requests {
			t.Errorf("a cached job called the model: %d calls before, %d after", calls.Total.Requests, got.Total.Requests)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		hangModel(t, s)
		acc := s.submit(t, map[string]any{"question": "Which toy lasts longest?", "takes": 2})
		stop := errors.New(toyStopReason)
		lastID, err := s.api.Events(t.Context(), acc.JobID, "", func(ev client.Event) error {
			if ev.Name == "take.started" {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Fatal(err)
		}
		if _, err := s.api.Cancel(t.Context(), acc.JobID); err != nil {
			t.Fatal(err)
		}
		evs := s.follow(t, acc.JobID, lastID)
		if st := terminal(t, evs); st != "canceled" {
			t.Fatalf("status %s: %v", st, eventNames(evs))
		}
		if n := count(evs, "take.completed") + count(evs, "summary.completed"); n != 0 {
			t.Errorf("%d answers after the cancel", n)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		hangModel(t, s)
		acc := s.submit(t, map[string]any{"question": "Which toy never ends?", "takes": 2})
		evs := s.follow(t, acc.JobID, "")
		if st := terminal(t, evs); st != "failed" {
			t.Fatalf("status %s, want failed (no take could finish): %v", st, eventNames(evs))
		}
		var d client.JobCompletedData
		_ = evs[len(evs)-1].Decode(&d)
		v := s.view(t, acc.JobID)
		t.Logf("terminal error: %s; created %s deadline %s finished %s", d.Error, v["created_at"], v["deadline"], v["finished_at"])
		if !strings.Contains(d.Error, "deadline") {
			t.Errorf("terminal error %q does not name the deadline", d.Error)
		}
	})
}

// hangModel makes every call of the toy's model hang until canceled.
func hangModel(t *testing.T, s *toyStack) {
	t.Helper()
	if err := s.sim.SetRuntimeFaults(llmsim.FaultRule{Model: toyModel, Faults: []llmsim.Fault{{Kind: llmsim.FaultHang, Rate: 1}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.sim.ClearRuntimeFaults(toyModel) })
}

// hookURL is the webhook receiver's URL.
func (s *toyStack) hookURL(t *testing.T) string {
	t.Helper()
	return s.hookBase
}

func eventIDs(evs []client.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s:%s ", ev.ID, ev.Name)
	}
	return b.String()
}

func partText(t *testing.T, evs []client.Event, name string) string {
	t.Helper()
	for _, ev := range evs {
		if ev.Name == name {
			var d struct {
				Text string `json:"text"`
			}
			if err := ev.Decode(&d); err != nil {
				t.Fatal(err)
			}
			return d.Text
		}
	}
	t.Fatalf("no %s event", name)
	return ""
}
