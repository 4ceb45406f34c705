package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/webhook"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

// Webhook secrets (Standard Webhooks form); B is the current one after a
// rotation from A.
const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

// webhookTimeout bounds waits for deliveries and their outcome.
const webhookTimeout = 20 * time.Second

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}

// delivery is one request a receiver got.
type delivery struct {
	N      int // from 1
	Header http.Header
	Body   []byte
	// Verified maps each secret the receiver holds to the reference
	// library's verdict (nil: verified).
	Verified map[string]error
}

// receiver is a webhook endpoint on loopback that verifies every request
// with the Standard Webhooks reference library.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	secrets []string
	// respond answers request n (from 1); nil answers 204.
	respond func(n int, w http.ResponseWriter, r *http.Request)

	mu      sync.Mutex
	got     []delivery
	arrived chan delivery
}

func newReceiver(t *testing.T, secrets []string, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{t: t, secrets: secrets, respond: respond, arrived: make(chan delivery, 64)}
	rc.srv = httptest.NewUnstartedServer(rc)
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d := delivery{Header: r.Header.Clone(), Body: body, Verified: map[string]error{}}
	for _, s := range rc.secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		d.Verified[s] = err
	}
	rc.mu.Lock()
	d.N = len(rc.got) + 1
	rc.got = append(rc.got, d)
	rc.mu.Unlock()
	rc.arrived <- d
	if rc.respond != nil {
		rc.respond(d.N, w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hooks/timetravel?token=receiver-own-token" }

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// next waits for the next request.
func (rc *receiver) next() delivery {
	rc.t.Helper()
	select {
	case d := <-rc.arrived:
		return d
	case <-time.After(webhookTimeout):
		rc.t.Fatalf("no webhook request within %s", webhookTimeout)
		return delivery{}
	}
}

// wantVerified fails unless every secret the receiver holds verified d.
func wantVerified(t *testing.T, d delivery) {
	t.Helper()
	for s, err := range d.Verified {
		if err != nil {
			t.Errorf("delivery %d does not verify with %s…: %v", d.N, s[:10], err)
		}
	}
}

func sender(t *testing.T, p webhook.Policy, timeout time.Duration, current, previous string) *webhook.Sender {
	t.Helper()
	s, err := webhook.NewSigner(current, previous)
	if err != nil {
		t.Fatal(err)
	}
	return webhook.NewSender(p, s, timeout)
}

// delays records what the webhook queue's retry delay was asked.
type delays struct {
	mu    sync.Mutex
	calls [][2]time.Duration // {n, retryAfter}
	d     time.Duration
}

func (d *delays) delay(n int, after time.Duration) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, [2]time.Duration{time.Duration(n), after})
	return d.d
}

func (d *delays) seen() [][2]time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][2]time.Duration(nil), d.calls...)
}

type whOptions struct {
	policy   *webhook.Policy // nil: http and loopback allowed
	timeout  time.Duration   // 0: 5s
	current  string          // "": secretA
	previous string
	// delay is the retry delay given to asynq, which keeps retry times in
	// whole seconds (0: at once, up to the forwarder's 100 ms).
	delay    time.Duration
	maxRetry int
	script   func(call) *answer
}

// newWebhookHarness is a harness whose worker delivers webhooks, with a
// short retry schedule.
func newWebhookHarness(t *testing.T, o whOptions) (*harness, *delays) {
	t.Helper()
	p := webhook.Policy{AllowHTTP: true, Allow: loopback}
	if o.policy != nil {
		p = *o.policy
	}
	if o.timeout == 0 {
		o.timeout = 5 * time.Second
	}
	if o.current == "" {
		o.current = secretA
	}
	d := &delays{d: o.delay}
	hs := newHarness(t, options{script: o.script, webhookRetries: o.maxRetry, webhooks: &worker.Webhooks{
		Sender:     sender(t, p, o.timeout, o.current, o.previous),
		RetryDelay: d.delay,
	}})
	return hs, d
}

// submitWithCallback submits a job of dates whose callback URL is url.
func (hs *harness) submitWithCallback(url string, dates []string, deadline time.Duration) *job.Job {
	hs.t.Helper()
	j := newJob(hs.t, dates, deadline)
	j.Spec.CallbackURL = url
	return hs.submitJob(j)
}

// waitWebhook polls the job until its webhook has a final status.
func (hs *harness) waitWebhook(jobID string) *job.Job {
	hs.t.Helper()
	deadline := time.Now().Add(webhookTimeout)
	for {
		j := hs.job(jobID)
		if j.Webhook != nil && j.Webhook.Status.Final() {
			return j
		}
		if time.Now().After(deadline) {
			hs.t.Fatalf("webhook of job %s has no outcome after %s: %+v", jobID, webhookTimeout, j.Webhook)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by deadline
	}
}

// waitWebhookTask polls until the job's webhook task is in state.
func (hs *harness) waitWebhookTask(jobID string, state asynq.TaskState) *asynq.TaskInfo {
	hs.t.Helper()
	deadline := time.Now().Add(webhookTimeout)
	for {
		info, err := hs.insp.GetTaskInfo(tasks.QueueWebhook, tasks.WebhookTaskID(jobID))
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			hs.t.Fatalf("webhook task of job %s: %+v, %v; want it %s", jobID, info, err, state)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by deadline
	}
}

// wantWebhookEvent checks that the stream ends with job.completed and then
// exactly one webhook event, of type typ, and returns its data.
func wantWebhookEvent(t *testing.T, evs []events.Event, typ string) events.WebhookData {
	t.Helper()
	if len(evs) < 2 || evs[len(evs)-1].Type != typ || !evs[len(evs)-2].Terminal() {
		t.Fatalf("stream does not end with job.completed, %s: %v", typ, typesOf(evs))
	}
	if n := len(ofType(evs, events.WebhookDelivered)) + len(ofType(evs, events.WebhookFailed)); n != 1 {
		t.Errorf("%d webhook events, want 1: %v", n, typesOf(evs))
	}
	return decode[events.WebhookData](t, evs[len(evs)-1])
}

// wantBody checks a delivery's headers and body against the ended job.
func wantBody(t *testing.T, d delivery, j *job.Job) {
	t.Helper()
	if id := d.Header.Get("webhook-id"); id != "msg_"+j.ID {
		t.Errorf("webhook-id %q, want msg_%s", id, j.ID)
	}
	if ts := d.Header.Get("webhook-timestamp"); ts == "" {
		t.Error("no webhook-timestamp")
	}
	if ct := d.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var body struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(d.Body, &body); err != nil {
		t.Fatalf("body %s: %v", d.Body, err)
	}
	if body.Type != "job."+string(j.Status) {
		t.Errorf("type %q, want job.%s", body.Type, j.Status)
	}
	if ts, err := time.Parse(time.RFC3339, body.Timestamp); err != nil || !ts.Equal(j.FinishedAt) {
		t.Errorf("timestamp %q (%v), want the job's end %s in RFC 3339", body.Timestamp, err, j.FinishedAt.UTC())
	}
	// The data is the job as GET /api/jobs/{id} shows it (its kind's
	// view), without the delivery's own state.
	v, err := kinds.Registry().View(j)
	if err != nil {
		t.Fatal(err)
	}
	v.Webhook = nil
	want, _ := json.Marshal(v)
	if !bytes.Equal(body.Data, want) {
		t.Errorf("data\n  %s\nwant the job's view\n  %s", body.Data, want)
	}
	if strings.Contains(string(d.Body), `"webhook"`) {
		t.Errorf("body carries the delivery state: %s", d.Body)
	}
}

// Every terminal status is delivered, signed, with the job as the api shows
// it; the delivery state and event are recorded after the terminal event.
func TestWebhookEveryTerminalStatus(t *testing.T) {
	t.Parallel()
	fail := func(c call) *answer {
		if c.Kind == kindSnapshot {
			return &answer{Err: statusErr(400)}
		}
		return nil
	}
	cases := []struct {
		status job.Status
		script func(call) *answer
		// end ends the job when the handlers do not by themselves.
		end func(hs *harness, j *job.Job)
	}{
		{status: job.StatusCompleted},
		{status: job.StatusPartial, script: func(c call) *answer {
			if c.Kind == kindSnapshot && c.Date == dates3[1] {
				return &answer{Err: statusErr(400)}
			}
			return nil
		}},
		{status: job.StatusFailed, script: fail},
		{
			// Canceled as if the api died between ending the job and
			// queuing its webhook: the aggregation task, still scheduled,
			// finds the job ended and queues the webhook.
			status: job.StatusCanceled,
			script: func(c call) *answer {
				if c.Kind == kindSnapshot {
					return &answer{Block: true}
				}
				return nil
			},
			end: func(hs *harness, j *job.Job) {
				hs.model.waitBlocked(hs.t, len(dates3), 10*time.Second)
				if err := hs.store.Finish(context.Background(), j.ID, job.StatusCanceled, "canceled by the client", nil); err != nil {
					hs.t.Fatal(err)
				}
				if info, err := hs.insp.GetTaskInfo(tasks.QueueWebhook, tasks.WebhookTaskID(j.ID)); err == nil {
					hs.t.Fatalf("webhook task %+v before the safety net ran", info)
				}
				if err := tasks.Promote(hs.insp, tasks.UserLane, j.ID); err != nil {
					hs.t.Fatal(err)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(string(c.status), func(t *testing.T) {
			t.Parallel()
			hs, _ := newWebhookHarness(t, whOptions{script: c.script})
			rc := newReceiver(t, []string{secretA}, nil)
			j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
			if c.end != nil {
				c.end(hs, j)
			}
			d := rc.next()
			wantVerified(t, d)
			got := hs.waitWebhook(j.ID)
			if got.Status != c.status {
				t.Fatalf("job %s, want %s", got.Status, c.status)
			}
			wantBody(t, d, got)
			w := got.Webhook
			if w.Status != job.WebhookDelivered || w.Attempts != 1 || w.LastStatusCode != http.StatusNoContent || w.LastError != "" ||
				w.DeliveredAt == nil || w.DeliveredAt.Before(got.FinishedAt.Add(-time.Millisecond)) {
				t.Errorf("webhook state %+v, want delivered at the first attempt with 204", w)
			}
			if v := got.View(); v.Webhook == nil || v.CallbackURL != strings.Split(rc.URL(), "?")[0] {
				t.Errorf("view: callback_url %q, webhook %+v", v.CallbackURL, v.Webhook)
			}
			ev := wantWebhookEvent(t, hs.events(j.ID), events.WebhookDelivered)
			if ev.WebhookID != "msg_"+j.ID || ev.Attempts != 1 || ev.StatusCode != 204 || ev.Error != "" {
				t.Errorf("webhook.delivered %+v", ev)
			}
			// Kept, so that enqueuing again is a conflict.
			hs.waitWebhookTask(j.ID, asynq.TaskStateCompleted)
			if n := len(rc.deliveries()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// A second enqueue, a redelivered task and a late aggregation never deliver
// twice.
func TestWebhookIsDeliveredOnce(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{})
	rc := newReceiver(t, []string{secretA}, nil)
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	rc.next()
	hs.waitWebhook(j.ID)
	hs.waitWebhookTask(j.ID, asynq.TaskStateCompleted)
	ctx := context.Background()

	if err := hs.enq.EnqueueWebhook(ctx, j.ID, webhook.MaxRetries); err != nil {
		t.Errorf("second enqueue: %v, want nil (a conflict counts as enqueued)", err)
	}
	p, _ := json.Marshal(tasks.WebhookPayload{JobID: j.ID})
	if err := hs.h.HandleWebhook(ctx, asynq.NewTask(tasks.TypeWebhook, p)); err != nil {
		t.Errorf("redelivered webhook task: %v, want nil", err)
	}
	agg, _ := json.Marshal(tasks.AggregatePayload{JobID: j.ID})
	if err := hs.h.HandleAggregate(ctx, asynq.NewTask(tasks.TypeAggregate, agg)); err != nil {
		t.Errorf("late aggregation: %v, want nil", err)
	}
	if n := len(rc.deliveries()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if evs := hs.events(j.ID); len(ofType(evs, events.WebhookDelivered)) != 1 {
		t.Errorf("events %v, want one webhook.delivered", typesOf(evs))
	}
	if w := hs.job(j.ID).Webhook; w.Attempts != 1 {
		t.Errorf("webhook state %+v, want 1 attempt", w)
	}
}

// A job without a callback URL queues nothing.
func TestNoCallbackNoWebhook(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{})
	j := hs.submit(dates3, time.Minute)
	hs.follow(j.ID, endTimeout)
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	if info, err := hs.insp.GetTaskInfo(tasks.QueueWebhook, tasks.WebhookTaskID(j.ID)); !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Errorf("webhook task %+v, %v; want none", info, err)
	}
	if got := hs.job(j.ID); got.Webhook != nil || got.View().Webhook != nil {
		t.Errorf("webhook state %+v, want none", got.Webhook)
	}
}

// The receiver is down (connection refused), then comes up on the same
// address: a later attempt delivers.
func TestWebhookReceiverDownThenUp(t *testing.T) {
	t.Parallel()
	// asynq keeps retry times in whole seconds: a 2 s delay is 1 to 2 s, time
	// enough to bring the receiver up between the first two attempts.
	hs, d := newWebhookHarness(t, whOptions{delay: 2 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	j := hs.submitWithCallback("http://"+addr+"/hook", dates3, time.Minute)

	// Down: the first attempt fails to connect and is up for a retry.
	deadline := time.Now().Add(webhookTimeout)
	for {
		w := hs.job(j.ID).Webhook
		if w != nil && w.Attempts >= 1 {
			if w.Status != job.WebhookPending || w.LastStatusCode != 0 || !strings.Contains(w.LastError, "connection refused") {
				t.Fatalf("after a refused connection: %+v, want pending with the error", w)
			}
			if strings.Contains(w.LastError, "/hook") {
				t.Errorf("recorded error %q names the URL", w.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt within %s: %+v", webhookTimeout, w)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by deadline
	}

	// Up on the same address.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("address %s taken meanwhile: %v", addr, err)
	}
	rc := &receiver{t: t, secrets: []string{secretA}, arrived: make(chan delivery, 8)}
	rc.srv = httptest.NewUnstartedServer(rc)
	rc.srv.Listener.Close()
	rc.srv.Listener = ln
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)

	got := rc.next()
	wantVerified(t, got)
	if id := got.Header.Get("webhook-id"); id != "msg_"+j.ID {
		t.Errorf("webhook-id %q", id)
	}
	final := hs.waitWebhook(j.ID)
	if w := final.Webhook; w.Status != job.WebhookDelivered || w.Attempts < 2 || w.LastError != "" {
		t.Errorf("webhook state %+v, want delivered after at least 2 attempts", w)
	}
	wantBody(t, got, final)
	if s := d.seen(); len(s) == 0 || s[0][0] != 0 {
		t.Errorf("retry delays asked %v, want the first retry (n 0) among them", s)
	}
}

// 410 Gone stops at once: one attempt, failed, no retry.
func TestWebhookGoneStops(t *testing.T) {
	t.Parallel()
	hs, d := newWebhookHarness(t, whOptions{})
	rc := newReceiver(t, []string{secretA}, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	wantVerified(t, rc.next())
	got := hs.waitWebhook(j.ID)
	if w := got.Webhook; w.Status != job.WebhookFailed || w.Attempts != 1 || w.LastStatusCode != 410 || !strings.Contains(w.LastError, "410") || w.DeliveredAt != nil {
		t.Errorf("webhook state %+v, want failed after 1 attempt with 410", w)
	}
	ev := wantWebhookEvent(t, hs.events(j.ID), events.WebhookFailed)
	if ev.Attempts != 1 || ev.StatusCode != 410 || ev.Error == "" || ev.WebhookID != "msg_"+j.ID {
		t.Errorf("webhook.failed %+v", ev)
	}
	// Archived (asynq.SkipRetry), kept: no further attempt can come.
	hs.waitWebhookTask(j.ID, asynq.TaskStateArchived)
	if n := len(rc.deliveries()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if s := d.seen(); len(s) != 0 {
		t.Errorf("retry delays asked %v, want none", s)
	}
}

// 500, then 429 with Retry-After, then 200: delivered at the third attempt,
// each attempt with the same webhook-id and a valid signature; the
// Retry-After reaches the retry delay.
func TestWebhookRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	hs, d := newWebhookHarness(t, whOptions{})
	rc := newReceiver(t, []string{secretA}, func(n int, w http.ResponseWriter, _ *http.Request) {
		switch n {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	before := deliveryCounts(t)
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	got := hs.waitWebhook(j.ID)
	ds := rc.deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d requests, want 3", len(ds))
	}
	for _, dl := range ds {
		wantVerified(t, dl)
		wantBody(t, dl, got)
	}
	if ds[0].Header.Get("webhook-id") != ds[2].Header.Get("webhook-id") {
		t.Errorf("webhook-id changed across attempts: %q, %q", ds[0].Header.Get("webhook-id"), ds[2].Header.Get("webhook-id"))
	}
	if w := got.Webhook; w.Status != job.WebhookDelivered || w.Attempts != 3 || w.LastStatusCode != 200 || w.LastError != "" || w.DeliveredAt == nil {
		t.Errorf("webhook state %+v, want delivered after 3 attempts", w)
	}
	ev := wantWebhookEvent(t, hs.events(j.ID), events.WebhookDelivered)
	if ev.Attempts != 3 || ev.StatusCode != 200 {
		t.Errorf("webhook.delivered %+v", ev)
	}
	want := [][2]time.Duration{{0, 0}, {1, 3 * time.Second}}
	if s := d.seen(); len(s) != 2 || s[0] != want[0] || s[1] != want[1] {
		t.Errorf("retry delays asked (n, Retry-After) %v, want %v", s, want)
	}
	after := deliveryCounts(t)
	if after["retry"]-before["retry"] < 2 || after["delivered"]-before["delivered"] < 1 {
		t.Errorf("timetravel_webhook_deliveries_total went from %v to %v", before, after)
	}
	// The secret is in no job record, event or error.
	h, _ := hs.rdb.HGetAll(context.Background(), "tt:{"+j.ID+"}:job").Result()
	record, _ := json.Marshal(h)
	for _, e := range hs.events(j.ID) {
		record = append(record, e.Data...)
	}
	if key := strings.TrimPrefix(secretA, "whsec_"); bytes.Contains(record, []byte(key)) {
		t.Errorf("the webhook secret is in the job's record or events")
	}
	// The task was run three times: two retries, then done.
	info := hs.waitWebhookTask(j.ID, asynq.TaskStateCompleted)
	if info.Retried != 2 || info.MaxRetry != webhook.MaxRetries {
		t.Errorf("task retried %d of %d, want 2 of %d", info.Retried, info.MaxRetry, webhook.MaxRetries)
	}
}

// deliveryCounts reads timetravel_webhook_deliveries_total by outcome from
// a registry as the worker's /metrics has it.
func deliveryCounts(t *testing.T) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.WebhookDeliveries)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "timetravel_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	for _, o := range []string{"delivered", "retry", "failed"} {
		if _, ok := out[o]; !ok {
			t.Fatalf("timetravel_webhook_deliveries_total has no outcome %q: %v", o, out)
		}
	}
	return out
}

// Retryable failures on every attempt use up the retries; the last one
// fails the delivery for good.
func TestWebhookRetriesRunOut(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{maxRetry: 2})
	rc := newReceiver(t, []string{secretA}, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	got := hs.waitWebhook(j.ID)
	if w := got.Webhook; w.Status != job.WebhookFailed || w.Attempts != 3 || w.LastStatusCode != 503 {
		t.Errorf("webhook state %+v, want failed after 3 attempts", w)
	}
	if ev := wantWebhookEvent(t, hs.events(j.ID), events.WebhookFailed); ev.Attempts != 3 || ev.StatusCode != 503 {
		t.Errorf("webhook.failed %+v", ev)
	}
	hs.waitWebhookTask(j.ID, asynq.TaskStateArchived)
	if n := len(rc.deliveries()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

// A receiver slower than the attempt timeout is given up on and retried.
func TestWebhookSlowReceiverTimesOut(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{timeout: 300 * time.Millisecond})
	var gaveUp atomic.Bool
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rc := newReceiver(t, []string{secretA}, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-r.Context().Done():
				gaveUp.Store(true) // the sender hung up
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	got := hs.waitWebhook(j.ID)
	if w := got.Webhook; w.Status != job.WebhookDelivered || w.Attempts != 2 || w.LastStatusCode != 202 {
		t.Errorf("webhook state %+v, want delivered at the second attempt", w)
	}
	if !gaveUp.Load() {
		t.Error("the first attempt did not give up on the slow receiver")
	}
	for _, dl := range rc.deliveries() {
		wantVerified(t, dl)
	}
}

// A redirect is not followed, even to an address the policy admits: the
// delivery fails for good and the target is never contacted.
func TestWebhookRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{})
	var targetHit atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { targetHit.Store(true) }))
	t.Cleanup(target.Close)
	rc := newReceiver(t, []string{secretA}, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/internal", http.StatusTemporaryRedirect)
	})
	j := hs.submitWithCallback(rc.URL(), dates3, time.Minute)
	got := hs.waitWebhook(j.ID)
	if w := got.Webhook; w.Status != job.WebhookFailed || w.Attempts != 1 || w.LastStatusCode != 307 || !strings.Contains(w.LastError, "redirect") {
		t.Errorf("webhook state %+v, want failed at once on the redirect", w)
	}
	wantWebhookEvent(t, hs.events(j.ID), events.WebhookFailed)
	hs.waitWebhookTask(j.ID, asynq.TaskStateArchived)
	if targetHit.Load() {
		t.Error("the redirect's target was contacted")
	}
	if n := len(rc.deliveries()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// A host name that resolves to loopback passes no check without the
// allow-list: the job was stored directly (as if the submission check had
// been passed, or DNS changed since), and the dialer refuses it.
func TestWebhookLoopbackNameRefusedAtDial(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{policy: &webhook.Policy{AllowHTTP: true}})
	rc := newReceiver(t, []string{secretA}, nil)
	url := strings.Replace(rc.URL(), "127.0.0.1", "localhost", 1)
	j := hs.submitWithCallback(url, dates3, time.Minute)
	got := hs.waitWebhook(j.ID)
	if w := got.Webhook; w.Status != job.WebhookFailed || w.Attempts != 1 || w.LastStatusCode != 0 || !strings.Contains(w.LastError, "refused") {
		t.Errorf("webhook state %+v, want failed at once, refused at dial", w)
	}
	if ev := wantWebhookEvent(t, hs.events(j.ID), events.WebhookFailed); !strings.Contains(ev.Error, "refused") {
		t.Errorf("webhook.failed %+v", ev)
	}
	hs.waitWebhookTask(j.ID, asynq.TaskStateArchived)
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("the receiver got %d requests, want none", n)
	}
}

// During a rotation every delivery carries a signature per secret: a
// receiver that still holds the previous secret verifies it, as does one
// with the new secret.
func TestWebhookSecretRotation(t *testing.T) {
	t.Parallel()
	hs, _ := newWebhookHarness(t, whOptions{current: secretB, previous: secretA})
	oldOnly := newReceiver(t, []string{secretA}, nil)
	j := hs.submitWithCallback(oldOnly.URL(), dates3, time.Minute)
	d := oldOnly.next()
	wantVerified(t, d)
	if n := len(strings.Fields(d.Header.Get("webhook-signature"))); n != 2 {
		t.Errorf("webhook-signature %q, want two signatures", d.Header.Get("webhook-signature"))
	}
	for _, s := range []string{secretB, secretA} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(d.Body, d.Header); err != nil {
			t.Errorf("verify with %s…: %v", s[:10], err)
		}
	}
	if w := hs.waitWebhook(j.ID).Webhook; w.Status != job.WebhookDelivered {
		t.Errorf("webhook state %+v", w)
	}
}
