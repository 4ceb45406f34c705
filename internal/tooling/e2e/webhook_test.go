package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// Webhook secrets (Standard Webhooks form): B replaces A in a rotation.
const (
	whSecretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	whSecretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

// webhookEnv is what the api and the worker get: the secret(s), and plain
// http to loopback admitted for the receiver in this process.
func webhookEnv(current, previous string) map[string]string {
	env := map[string]string{
		"WEBHOOK_SECRET": current, "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
	}
	if previous != "" {
		env["WEBHOOK_SECRET_PREVIOUS"] = previous
	}
	return env
}

func merged(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range []map[string]string{a, b} {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// hook is one request the receiver got.
type hook struct {
	Header    http.Header
	Body      []byte
	VerifyOK  bool
	VerifyErr error
	Type      string
	JobID     string
	Data      client.JobView
}

// hookReceiver is a webhook endpoint on loopback that verifies each request
// with the reference library and the secret it holds, and answers with
// respond (per job, per attempt from 1; nil: 200).
type hookReceiver struct {
	t       *testing.T
	srv     *httptest.Server
	verify  *standardwebhooks.Webhook
	respond func(jobID string, n int) int

	mu   sync.Mutex
	hook map[string][]hook
	wake chan struct{}
}

func newHookReceiver(t *testing.T, secret string, respond func(jobID string, n int) int) *hookReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{t: t, verify: wh, respond: respond, hook: map[string][]hook{}, wake: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		h := hook{Header: req.Header.Clone(), Body: body}
		h.VerifyErr = r.verify.Verify(body, req.Header)
		h.VerifyOK = h.VerifyErr == nil
		var b struct {
			Type string         `json:"type"`
			Data client.JobView `json:"data"`
		}
		_ = json.Unmarshal(body, &b)
		h.Type, h.JobID, h.Data = b.Type, b.Data.ID, b.Data
		r.mu.Lock()
		r.hook[h.JobID] = append(r.hook[h.JobID], h)
		n := len(r.hook[h.JobID])
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
		code := http.StatusOK
		if r.respond != nil {
			code = r.respond(h.JobID, n)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) url() string { return r.srv.URL + "/hook" }

func (r *hookReceiver) of(jobID string) []hook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hook(nil), r.hook[jobID]...)
}

// waitView polls the job until its webhook has a final status.
func waitView(t *testing.T, e env, id string, d time.Duration) client.JobView {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := jobView(t, e, id)
		if v.Webhook != nil && v.Webhook.Status.Final() {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: webhook %+v has no outcome after %s", id, v.Webhook, d)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by deadline
	}
}

// replayTail reads an ended job's whole SSE stream (the api replays it and
// closes) and returns the event names.
func replayTail(t *testing.T, e env, id string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.apiURL+"/api/jobs/"+id+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var names []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			names = append(names, name)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("replay of %s: %v", id, err)
	}
	return names
}

// checkDelivered checks the one delivery of an ended job: signed, the job as
// the api shows it, state delivered, and webhook.delivered after the
// terminal event.
func checkDelivered(t *testing.T, e env, r *hookReceiver, id string, status job.Status, attempts int) {
	t.Helper()
	v := waitView(t, e, id, 30*time.Second)
	if string(v.Status) != string(status) {
		t.Fatalf("job status %s, want %s", v.Status, status)
	}
	w := v.Webhook
	if w.Status != client.WebhookDelivered || w.Attempts != attempts || w.DeliveredAt == nil || w.LastStatusCode != 200 {
		t.Fatalf("webhook state %+v, want delivered after %d attempts", w, attempts)
	}
	hooks := r.of(id)
	if len(hooks) != attempts {
		t.Fatalf("the receiver got %d requests for job %s, want %d", len(hooks), id, attempts)
	}
	for _, h := range hooks {
		if !h.VerifyOK {
			t.Errorf("delivery does not verify: %v", h.VerifyErr)
		}
		if got := h.Header.Get("webhook-id"); got != "msg_"+id {
			t.Errorf("webhook-id %q, want msg_%s", got, id)
		}
		if h.Type != "job."+string(status) {
			t.Errorf("type %q, want job.%s", h.Type, status)
		}
		// The data is GET /api/jobs/{id} without the delivery state and the
		// links.
		v.Webhook, v.Links = nil, client.Links{}
		want, _ := json.Marshal(v)
		got, _ := json.Marshal(h.Data)
		if string(got) != string(want) {
			t.Errorf("data\n  %s\nwant\n  %s", got, want)
		}
	}
	names := replayTail(t, e, id)
	if len(names) < 2 || names[len(names)-2] != client.EventJobCompleted || names[len(names)-1] != client.EventWebhookDelivered {
		t.Errorf("replay does not end with job.completed, webhook.delivered: %v", names)
	}
}

// Every terminal status reaches the callback URL, signed, through the real
// processes: api, worker, simulator and Redis.
func TestWebhookOnEveryTerminalStatus(t *testing.T) {
	t.Parallel()
	// A failed model call fails its snapshot at once: one request, no
	// retry (the api sets the snapshot tasks' retries).
	wh := merged(webhookEnv(whSecretA, ""), map[string]string{"SNAPSHOT_MAX_RETRY": "0"})
	e := startStack(t, 1, wh, merged(wh, map[string]string{"LLM_MAX_ATTEMPTS": "1"}))
	r := newHookReceiver(t, whSecretA, nil)
	ctl := simControl(t, e)
	noSecretLogged(t, e, whSecretA, true)
	defer noSecretLogged(t, e, whSecretA, false)

	t.Run("completed", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "What are the best AI models?", TimePoints: twoDates, CallbackURL: r.url()})
		checkDelivered(t, e, r, id, job.StatusCompleted, 1)
	})
	t.Run("partial", func(t *testing.T) {
		faultNext(t, ctl, modelSnapshot, llmsim.FaultServerError, 1)
		id := submit(t, e, client.SubmitRequest{Question: "What changed?", TimePoints: twoDates, CallbackURL: r.url()})
		checkDelivered(t, e, r, id, job.StatusPartial, 1)
	})
	t.Run("failed", func(t *testing.T) {
		faultNext(t, ctl, modelSnapshot, llmsim.FaultServerError, 2)
		id := submit(t, e, client.SubmitRequest{Question: "Will anything answer?", TimePoints: twoDates, CallbackURL: r.url()})
		checkDelivered(t, e, r, id, job.StatusFailed, 1)
	})
	t.Run("canceled", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "Will this be canceled?", Model: modelSlow, CallbackURL: r.url()})
		v, err := e.api.Cancel(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != client.StatusCanceled || v.Webhook == nil {
			t.Fatalf("cancel answered %s with webhook %+v; want canceled with the webhook queued", v.Status, v.Webhook)
		}
		checkDelivered(t, e, r, id, job.StatusCanceled, 1)
	})
	t.Run("bad callback_url gets a clear 400", func(t *testing.T) {
		for _, u := range []string{
			"ftp://127.0.0.1/hook", "http://user:pw@127.0.0.1/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest",
			"http://[fd00:ec2::254]/", "http://[::1]:8080/", "http://224.0.0.1/", "not a url",
		} {
			t.Run(u, func(t *testing.T) {
				body, _ := json.Marshal(map[string]string{"question": "x", "callback_url": u})
				req, _ := http.NewRequest(http.MethodPost, e.apiURL+"/api/time-travel", strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				expectError(t, req, 400, "invalid_field", "callback_url")
			})
		}
	})
}

// The receiver fails the first attempt with a 500: the real schedule's
// first retry (5 s) delivers, with the same webhook-id; during a rotation a
// receiver holding only the previous secret verifies every attempt.
func TestWebhookRetriedWithRotatedSecret(t *testing.T) {
	t.Parallel()
	wh := webhookEnv(whSecretB, whSecretA)
	e := startStack(t, 1, wh, wh)
	r := newHookReceiver(t, whSecretA, func(_ string, n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	start := time.Now()
	id := submit(t, e, client.SubmitRequest{Question: "What are the best AI models?", TimePoints: twoDates, CallbackURL: r.url()})
	checkDelivered(t, e, r, id, job.StatusCompleted, 2)
	hooks := r.of(id)
	if gap := time.Since(start); gap < 4*time.Second {
		t.Errorf("delivered %s after submission; the first retry waits 5 s", gap)
	}
	for i, h := range hooks {
		if n := len(strings.Fields(h.Header.Get("webhook-signature"))); n != 2 {
			t.Errorf("attempt %d: %d signatures, want 2 (current and previous secret)", i+1, n)
		}
	}
	if hooks[0].Header.Get("webhook-id") != hooks[1].Header.Get("webhook-id") {
		t.Errorf("webhook-id changed across attempts")
	}
}

// noSecretLogged checks the api's and worker's logs (their recent part) for
// the secret; withMask, that the configuration line shows it masked.
func noSecretLogged(t *testing.T, e env, secret string, withMask bool) {
	t.Helper()
	key := strings.TrimPrefix(secret, "whsec_")
	for _, p := range append([]*stack.Proc{e.stack.API}, e.stack.WorkerList()...) {
		tail := p.LogTail()
		if strings.Contains(tail, key) {
			t.Errorf("%s log has the webhook secret:\n%s", p.Name, tail)
		}
		if withMask && !strings.Contains(tail, `"WEBHOOK_SECRET":"****"`) {
			t.Errorf("%s log does not show the webhook secret masked:\n%s", p.Name, tail)
		}
	}
}

// A job served wholly from the caches ends at once and still gets its
// webhook, like any other.
func TestWebhookOfCachedJob(t *testing.T) {
	t.Parallel()
	wh := webhookEnv(whSecretA, "")
	e := startStack(t, 1, wh, wh)
	r := newHookReceiver(t, whSecretA, nil)
	req := client.SubmitRequest{Question: "What are the best AI models?", TimePoints: twoDates, CallbackURL: r.url()}
	first := submit(t, e, req)
	checkDelivered(t, e, r, first, job.StatusCompleted, 1)
	acc, err := e.api.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !acc.Cached || acc.JobID == first {
		t.Fatalf("second submission %+v, want a new job served from cache", acc)
	}
	checkDelivered(t, e, r, acc.JobID, job.StatusCompleted, 1)
	if v := jobView(t, e, acc.JobID); !v.Cached {
		t.Errorf("the delivered job is not marked cached")
	}
}
