package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = stack.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	// Every request to an api of startStack, and every answer, is checked
	// against the OpenAPI document (contract_test.go).
	http.DefaultClient.Transport = contract
	code := contract.finish(m.Run())
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Simulated model latencies used by these tests.
const (
	modelSnapshot  = "sim-snapshot"  // 500 ms
	modelExtract   = "sim-extract"   // 100 ms
	modelNarrative = "sim-narrative" // 100 ms
	modelSlow      = "sim-slow"      // 20 s: still running when a test acts
)

type env struct {
	stack  *stack.Stack
	api    *client.Client
	rdb    redis.UniversalClient // the stack's Redis, whatever its topology
	apiURL string
}

// startStack runs redis, the simulator, workers and the api as processes.
// Each of with may change the options before the start (e.g. a Redis
// topology: topology_test.go).
func startStack(t *testing.T, workers int, apiEnv, workerEnv map[string]string, with ...func(*stack.Options)) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wenv := map[string]string{"SHUTDOWN_TIMEOUT": "2s"}
	for k, v := range workerEnv {
		wenv[k] = v
	}
	opts := stack.Options{
		BinDir: binDir, Dir: t.TempDir(), Workers: workers, Sim: true,
		// The models go to the api too: its cache keys name them.
		Env: map[string]string{
			"LOG_LEVEL": "info",
			"LLM_MODEL": modelSnapshot, "LLM_EXTRACTION_MODEL": modelExtract, "LLM_NARRATIVE_MODEL": modelNarrative,
			// Requests of these tests name the slow models too.
			"LLM_ALLOWED_MODELS": modelSlow + ",sim-2s",
		},
		APIEnv:    apiEnv,
		WorkerEnv: wenv,
		SimEnv: map[string]string{
			"LLMSIM_TTFT":              "50ms",
			"LLMSIM_TOKENS_PER_SECOND": "200",
			"LLMSIM_LATENCY":           modelSnapshot + "=500ms," + modelExtract + "=100ms," + modelNarrative + "=100ms," + modelSlow + "=20s,sim-2s=2s",
		},
	}
	for _, f := range with {
		f(&opts)
	}
	s, err := stack.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append([]*stack.Proc{s.API}, s.WorkerList()...) {
				t.Logf("--- %s log tail ---\n%s", p.Name, p.LogTail())
			}
		}
		s.Stop()
	})
	rdb, err := s.NewRedisClient("e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return env{stack: s, api: client.New(s.APIURL, client.WithHTTPClient(contractClient(t, s.APIURL))), rdb: rdb, apiURL: s.APIURL}
}

func simStats(t *testing.T, e env) llmsim.Stats {
	t.Helper()
	resp, err := http.Get(e.stack.SimURL + "/sim/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st llmsim.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// collect reads a job's whole stream.
func collect(t *testing.T, e env, id string) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var evs []client.Event
	if _, err := e.api.Events(ctx, id, "", func(ev client.Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	return evs
}

func submit(t *testing.T, e env, req client.SubmitRequest) string {
	t.Helper()
	acc, err := e.api.Submit(context.Background(), req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return acc.JobID
}

// checkOrder asserts the protocol's ordering rules on one job's events.
func checkOrder(t *testing.T, evs []client.Event, n int) {
	t.Helper()
	if len(evs) == 0 || evs[0].Name != client.EventJobAccepted {
		t.Fatalf("stream does not start with job.accepted: %v", names(evs))
	}
	last := evs[len(evs)-1]
	if last.Name != client.EventJobCompleted {
		t.Fatalf("stream does not end with job.completed: %v", names(evs))
	}
	started := map[int]bool{}
	done := map[int]bool{}
	aggregating := false
	seen := map[string]bool{}
	prev := ""
	for _, ev := range evs {
		if seen[ev.ID] {
			t.Fatalf("event id %s delivered twice", ev.ID)
		}
		seen[ev.ID] = true
		if prev != "" && !idLess(prev, ev.ID) {
			t.Fatalf("event ids out of order: %s then %s", prev, ev.ID)
		}
		prev = ev.ID
		var d struct {
			Index int `json:"index"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		switch ev.Name {
		case "snapshot.started":
			if done[d.Index] || aggregating {
				t.Fatalf("snapshot %d started after it ended or after aggregation began", d.Index)
			}
			started[d.Index] = true
		case "snapshot.delta":
			if !started[d.Index] || done[d.Index] {
				t.Fatalf("delta of snapshot %d outside its started..completed window", d.Index)
			}
		case "snapshot.completed", "snapshot.failed":
			if !started[d.Index] || done[d.Index] {
				t.Fatalf("snapshot %d ended twice or before it started", d.Index)
			}
			done[d.Index] = true
		case "aggregate.started":
			aggregating = true
		case "key_changes.completed", "key_changes.failed", "narrative.completed", "narrative.failed":
			aggregating = true
			part, _, _ := strings.Cut(ev.Name, ".")
			if seen[part] {
				t.Fatalf("%s ended twice: %v", part, names(evs))
			}
			seen[part] = true
		case "narrative.delta":
			aggregating = true
		}
	}
	if countNamed(evs, client.EventJobCompleted) != 1 {
		t.Fatalf("job.completed more than once: %v", names(evs))
	}
	if len(done) != n {
		t.Fatalf("%d snapshots ended, want %d: %v", len(done), n, names(evs))
	}
}

func idLess(a, b string) bool {
	var am, as, bm, bs uint64
	fmt.Sscanf(a, "%d-%d", &am, &as)
	fmt.Sscanf(b, "%d-%d", &bm, &bs)
	return am < bm || (am == bm && as < bs)
}

func names(evs []client.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Name
	}
	return out
}

func countNamed(evs []client.Event, name string) int {
	n := 0
	for _, e := range evs {
		if e.Name == name {
			n++
		}
	}
	return n
}

func terminalStatus(t *testing.T, evs []client.Event) string {
	t.Helper()
	var d client.JobCompletedData
	if err := evs[len(evs)-1].Decode(&d); err != nil {
		t.Fatal(err)
	}
	return string(d.Status)
}

func TestPipeline(t *testing.T) {
	e := startStack(t, 1, nil, nil)

	t.Run("completes with concurrent snapshots", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "What are the best AI models?"})
		evs := collect(t, e, id)
		checkOrder(t, evs, 4)
		if got := terminalStatus(t, evs); got != "completed" {
			t.Fatalf("status %s, want completed", got)
		}
		if n := countNamed(evs, "snapshot.delta"); n < 4 {
			t.Fatalf("%d snapshot deltas: text did not stream", n)
		}
		if peak := simStats(t, e).Models[modelSnapshot].PeakInFlight; peak < 4 {
			t.Fatalf("simulator saw at most %d snapshot calls at once, want 4", peak)
		}
		v, err := e.api.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != client.StatusCompleted || len(v.Snapshots) != 4 || len(v.KeyChanges) != 3 || v.Narrative == "" {
			t.Fatalf("job view: status %s, %d snapshots, %d key changes, narrative %q", v.Status, len(v.Snapshots), len(v.KeyChanges), v.Narrative)
		}
		for _, s := range v.Snapshots {
			if s.Status != client.SnapshotCompleted || !strings.Contains(s.Text, "Simulated") || s.Attempts != 1 {
				t.Fatalf("snapshot %+v", s)
			}
		}
		nonEmpty := 0
		for _, kc := range v.KeyChanges {
			if len(kc.Changes) > 0 {
				nonEmpty++
			}
		}
		if nonEmpty == 0 {
			t.Fatalf("no key changes found: %+v", v.KeyChanges)
		}
		tm := v.Timings
		if tm.TotalMS == nil || tm.QueueWaitMS == nil || tm.SnapshotsMS == nil || tm.FanInMS == nil || tm.KeyChangesMS == nil || tm.NarrativeMS == nil {
			t.Fatalf("timings incomplete: %+v", tm)
		}
		// The snapshots ran side by side: the stage took about one call, not four.
		if *tm.SnapshotsMS >= 4*500 {
			t.Fatalf("snapshot stage took %d ms: not concurrent", *tm.SnapshotsMS)
		}
	})

	t.Run("resume with Last-Event-ID delivers every event once", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "How do vaccines work?", TimePoints: []client.TimePoint{{Date: "2020-01-01"}, {Date: "2022-06-15"}, client.Today}})
		ctx := context.Background()
		var got []client.Event
		stop := errors.New("disconnect")
		last := ""
		// Disconnect three times at different points, resuming each time.
		for _, after := range []int{1, 3, 6} {
			n := 0
			var err error
			last, err = e.api.Events(ctx, id, last, func(ev client.Event) error {
				got = append(got, ev)
				if n++; n == after {
					return stop
				}
				return nil
			})
			if err == nil {
				break
			}
			if !errors.Is(err, stop) {
				t.Fatalf("events: %v", err)
			}
		}
		if len(got) == 0 || got[len(got)-1].Name != client.EventJobCompleted {
			if _, err := e.api.Events(ctx, id, last, func(ev client.Event) error { got = append(got, ev); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		full := collect(t, e, id)
		if fmt.Sprint(ids(got)) != fmt.Sprint(ids(full)) {
			t.Fatalf("resumed stream differs from the full replay:\n got %v\nwant %v", ids(got), ids(full))
		}
		checkOrder(t, got, 3)
	})

	t.Run("query parameter last_event_id resumes too", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "What is the capital of Australia?", Complexity: "brief"})
		full := collect(t, e, id)
		resp, err := http.Get(e.apiURL + "/api/jobs/" + id + "/events?last_event_id=" + full[len(full)-2].ID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		body := b.String()
		if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("headers %v", resp.Header)
		}
		if !strings.HasPrefix(body, "retry: ") || strings.Count(body, "\nevent: ") != 1 || !strings.Contains(body, "id: "+full[len(full)-1].ID+"\nevent: job.completed\n") {
			t.Fatalf("resumed body:\n%s", body)
		}
		// Resuming after the terminal event gets 204 No Content, which
		// stops an EventSource; an id past the end is a 400.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.apiURL+"/api/jobs/"+id+"/events", nil)
		req.Header.Set("Last-Event-ID", full[len(full)-1].ID)
		resp2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b2 bytes.Buffer
		_, _ = b2.ReadFrom(resp2.Body)
		resp2.Body.Close()
		if resp2.StatusCode != http.StatusNoContent || b2.Len() != 0 {
			t.Fatalf("resuming after the end: %d %q, want 204 and no body", resp2.StatusCode, b2.String())
		}
		past := "99999999999999-0"
		req, _ = http.NewRequest(http.MethodGet, e.apiURL+"/api/jobs/"+id+"/events", nil)
		req.Header.Set("Last-Event-ID", past)
		expectError(t, req, http.StatusBadRequest, "invalid_field", "Last-Event-ID")
	})

	t.Run("cancel stops running calls and ends the job", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "Will this be canceled?", Model: modelSlow})
		ctx, cancelCtx := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancelCtx()
		var evs []client.Event
		canceled := false
		_, err := e.api.Events(ctx, id, "", func(ev client.Event) error {
			evs = append(evs, ev)
			if ev.Name == "snapshot.started" && !canceled {
				canceled = true
				v, err := e.api.Cancel(ctx, id)
				if err != nil {
					return err
				}
				if v.Status != client.StatusCanceled {
					return fmt.Errorf("cancel answered status %s", v.Status)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := terminalStatus(t, evs); got != "canceled" {
			t.Fatalf("terminal status %s, want canceled", got)
		}
		if _, err := e.api.Cancel(ctx, id); !client.IsCode(err, "job_finished") {
			t.Fatalf("second cancel: %v, want job_finished", err)
		}
		// The 20 s calls stop long before they would end by themselves.
		deadline := time.Now().Add(10 * time.Second)
		for simStats(t, e).Models[modelSlow].InFlight > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("slow calls still in flight after cancel: %+v", simStats(t, e).Models[modelSlow])
			}
			time.Sleep(50 * time.Millisecond)
		}
		// No task of the job is left on a queue: not pending, not up for a
		// retry, and the aggregation is gone too.
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		waitUntil(t, 10*time.Second, func() bool {
			for i := range 4 {
				if _, err := insp.GetTaskInfo(tasks.QueueSnapshot, tasks.MemberTaskID(id, i)); !errors.Is(err, asynq.ErrTaskNotFound) {
					return false
				}
			}
			_, err := insp.GetTaskInfo(tasks.QueueAggregate, tasks.AggregateTaskID(id))
			return errors.Is(err, asynq.ErrTaskNotFound)
		})
	})

	t.Run("duplicate deliveries count once", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "What is the tallest building?"})
		v, err := e.api.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		// Deliver every snapshot task a second time, as at-least-once
		// delivery may, while the first deliveries run.
		ac := asynq.NewClientFromRedisClient(e.rdb)
		payloads := memberPayloads(t, e, v)
		for i := range v.Snapshots {
			p, _ := json.Marshal(payloads[i])
			if _, err := ac.Enqueue(asynq.NewTask(tasks.TypeMember, p), asynq.Queue(tasks.QueueSnapshot), asynq.TaskID(fmt.Sprintf("dup-%s-%d", id, i))); err != nil {
				t.Fatal(err)
			}
		}
		evs := collect(t, e, id)
		checkOrder(t, evs, 4)
		if got := terminalStatus(t, evs); got != "completed" {
			t.Fatalf("status %s, want completed", got)
		}
		for _, name := range []string{"snapshot.completed", "key_changes.completed", "narrative.completed", "job.completed"} {
			if n := countNamed(evs, name); n != map[string]int{"snapshot.completed": 4}[name]+map[bool]int{true: 1}[name != "snapshot.completed"] {
				t.Fatalf("%d %s events: %v", n, name, names(evs))
			}
		}
		if done := e.rdb.HGet(context.Background(), store.JobKey(id), "done").Val(); done != "4" {
			t.Fatalf("fan-in counted %s snapshots, want 4", done)
		}
		// A delivery after the end changes nothing.
		p, _ := json.Marshal(payloads[0])
		if _, err := ac.Enqueue(asynq.NewTask(tasks.TypeMember, p), asynq.Queue(tasks.QueueSnapshot), asynq.TaskID("late-"+id)); err != nil {
			t.Fatal(err)
		}
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		waitUntil(t, 10*time.Second, func() bool {
			_, err := insp.GetTaskInfo(tasks.QueueSnapshot, "late-"+id)
			return errors.Is(err, asynq.ErrTaskNotFound)
		})
		if after := collect(t, e, id); len(after) != len(evs) {
			t.Fatalf("late delivery added events: %d then %d", len(evs), len(after))
		}
	})

	t.Run("bad input gets a clear 4xx", func(t *testing.T) {
		future := time.Now().UTC().AddDate(0, 0, 2).Format(timetravel.DateLayout)
		many := make([]string, 13)
		for i := range many {
			many[i] = fmt.Sprintf("%q", fmt.Sprintf("20%02d-01-01", i+10))
		}
		cases := []struct {
			name, ctype, body string
			status            int
			code, field       string
		}{
			{"malformed json", "application/json", `{"question": "x"`, 400, "malformed_json", ""},
			{"not an object", "application/json", `["x"]`, 400, "malformed_json", ""},
			{"empty body", "application/json", ``, 400, "malformed_json", ""},
			{"trailing data", "application/json", `{"question":"x"} {}`, 400, "malformed_json", ""},
			{"unknown field", "application/json", `{"question":"x","colour":"red"}`, 400, "unknown_field", "colour"},
			{"missing question", "application/json", `{}`, 400, "invalid_field", "question"},
			{"empty question", "application/json", `{"question":""}`, 400, "invalid_field", "question"},
			{"blank question", "application/json", `{"question":" \n\t "}`, 400, "invalid_field", "question"},
			{"question not a string", "application/json", `{"question":42}`, 400, "invalid_field", "question"},
			{"question too long", "application/json", `{"question":"` + strings.Repeat("a", 4001) + `"}`, 400, "invalid_field", "question"},
			{"invalid date", "application/json", `{"question":"x","time_points":["2023-02-30"]}`, 400, "invalid_field", "time_points[0]"},
			{"not a date", "application/json", `{"question":"x","time_points":["last year"]}`, 400, "invalid_field", "time_points[0]"},
			{"future date", "application/json", `{"question":"x","time_points":["2023-01-01","` + future + `"]}`, 400, "invalid_field", "time_points[1]"},
			{"too many time points", "application/json", `{"question":"x","time_points":[` + strings.Join(many, ",") + `]}`, 400, "invalid_field", "time_points"},
			{"duplicate dates", "application/json", `{"question":"x","time_points":["2023-01-01",{"date":"2023-01-01","label":"again"}]}`, 400, "invalid_field", "time_points[1]"},
			{"empty time points", "application/json", `{"question":"x","time_points":[]}`, 400, "invalid_field", "time_points"},
			{"unknown complexity", "application/json", `{"question":"x","complexity":"epic"}`, 400, "invalid_field", "complexity"},
			{"bad model", "application/json", `{"question":"x","model":"a b"}`, 400, "invalid_field", "model"},
			{"callback without webhooks configured", "application/json", `{"question":"x","callback_url":"https://93.184.215.14/hook"}`, 400, "invalid_field", "callback_url"},
			{"callback not a string", "application/json", `{"question":"x","callback_url":["https://93.184.215.14/hook"]}`, 400, "invalid_field", "callback_url"},
			{"body too large", "application/json", `{"question":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "body_too_large", ""},
			{"wrong content type", "text/plain", `{"question":"x"}`, 415, "unsupported_media_type", ""},
			{"no content type", "", `{"question":"x"}`, 415, "unsupported_media_type", ""},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, e.apiURL+"/api/time-travel", strings.NewReader(c.body))
				if c.ctype != "" {
					req.Header.Set("Content-Type", c.ctype)
				}
				expectError(t, req, c.status, c.code, c.field)
			})
		}
		unknown := "0190aaaa-0000-7000-8000-000000000000"
		for _, c := range []struct {
			method, path string
			header       map[string]string
			status       int
			code, field  string
		}{
			{"GET", "/api/jobs/" + unknown, nil, 404, "job_not_found", ""},
			{"GET", "/api/jobs/not-an-id", nil, 404, "job_not_found", ""},
			{"DELETE", "/api/jobs/" + unknown, nil, 404, "job_not_found", ""},
			{"GET", "/api/jobs/" + unknown + "/events", nil, 404, "job_not_found", ""},
			{"GET", "/api/jobs/" + unknown + "/events", map[string]string{"Last-Event-ID": "garbage"}, 400, "invalid_field", "Last-Event-ID"},
			{"GET", "/api/nothing-here", nil, 404, "not_found", ""},
			{"PUT", "/api/time-travel", nil, 405, "method_not_allowed", ""},
		} {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				req, _ := http.NewRequest(c.method, e.apiURL+c.path, nil)
				for k, v := range c.header {
					req.Header.Set(k, v)
				}
				expectError(t, req, c.status, c.code, c.field)
			})
		}
	})
}

func expectError(t *testing.T, req *http.Request, status int, code, field string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message, Field string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("status %d, body is not the JSON error model: %v", resp.StatusCode, err)
	}
	if resp.StatusCode != status || body.Error.Code != code || body.Error.Field != field || body.Error.Message == "" {
		t.Fatalf("got %d %+v, want %d code %q field %q", resp.StatusCode, body.Error, status, code, field)
	}
}

func ids(evs []client.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With one snapshot at a time and 2 s per snapshot, a 4 s deadline passes
// with one or two of four snapshots done: the job ends partial with those.
func TestDeadlineYieldsPartial(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, map[string]string{"JOB_DEADLINE": "4s"},
		map[string]string{"SNAPSHOT_CONCURRENCY": "1"})
	id := submit(t, e, client.SubmitRequest{Question: "What changed?", Model: "sim-2s"})
	evs := collect(t, e, id)
	checkOrder(t, evs, countNamed(evs, "snapshot.completed")+countNamed(evs, "snapshot.failed"))
	if got := terminalStatus(t, evs); got != "partial" {
		t.Fatalf("status %s, want partial: %v", got, names(evs))
	}
	v, err := e.api.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	for _, s := range v.Snapshots {
		if s.Status == client.SnapshotCompleted {
			done++
		}
	}
	if done == 0 || done == 4 || len(v.Errors) == 0 || v.Narrative == "" {
		t.Fatalf("partial job: %d snapshots done, errors %v, narrative %q", done, v.Errors, v.Narrative)
	}
}

// A worker killed mid-snapshot does not leave the job without an end: the
// deadline ends it, with a clear error, on the worker that replaces it.
func TestKilledWorkerStillEndsJob(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, map[string]string{"JOB_DEADLINE": "3s"}, nil)
	id := submit(t, e, client.SubmitRequest{Question: "Who survives a crash?", Model: modelSlow})
	evs := killAndReplace(t, e, id, func(ev client.Event) bool { return ev.Name == client.EventSnapshotStarted })
	if got := terminalStatus(t, evs); got != "failed" {
		t.Fatalf("status %s, want failed (no snapshot could finish)", got)
	}
	var d client.JobCompletedData
	_ = evs[len(evs)-1].Decode(&d)
	if !strings.Contains(d.Error, "deadline") {
		t.Fatalf("terminal error %q does not say the deadline passed", d.Error)
	}
}
