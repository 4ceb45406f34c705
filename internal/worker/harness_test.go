package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The model names of each step; the fake tells the steps apart by them.
const (
	snapModel    = "fake-snapshot"
	extractModel = "fake-extract"
	narrModel    = "fake-narrative"
)

// ---------------------------------------------------------------------------
// The fake model.

// kind is the step a model call belongs to.
type kind string

const (
	kindSnapshot   kind = "snapshot"
	kindKeyChanges kind = "key_changes"
	kindNarrative  kind = "narrative"
)

// call is what the fake saw of one model call.
type call struct {
	Kind   kind
	Method string // "Stream" or "Complete"
	Model  string
	JSON   bool
	// Date is the date a snapshot prompt names (in its system message).
	Date string
	// Dates are the snapshots' dates an aggregation prompt carries.
	Dates []string
	// N counts the calls of this kind and date so far, from 1.
	N int
	// User is the request's user message.
	User string
	// Active counts the other calls in progress when this one began.
	Active int
}

// answer scripts one call: the pieces are streamed through onText (or
// joined for Complete), then Err, if any, is returned. Block makes the call
// wait for its context to end instead.
type answer struct {
	Pieces []string
	Err    error
	Block  bool
}

// release tells that a blocked call saw its context end, and why.
type release struct {
	Call  call
	Cause error
	At    time.Time
}

// fakeModel is a worker.Model scripted per test. It is safe for concurrent
// use.
type fakeModel struct {
	// script answers a call; nil (or a nil answer) means defaultAnswer.
	script func(call) *answer

	mu     sync.Mutex
	calls  []call
	active int

	blocked  chan call    // a blocking call started
	released chan release // a blocking call's context ended
}

var _ worker.Model = (*fakeModel)(nil)

func newFakeModel(script func(call) *answer) *fakeModel {
	return &fakeModel{script: script, blocked: make(chan call, 64), released: make(chan release, 64)}
}

var (
	anyDate    = regexp.MustCompile(`\d{4}-\d{2}-\d{2}`)
	promptDate = regexp.MustCompile(`\((\d{4}-\d{2}-\d{2})\) ===`)
)

func (f *fakeModel) begin(method string, r llm.Request) (call, answer) {
	c := call{Method: method, Model: r.Model, JSON: r.JSON, User: r.User}
	switch r.Model {
	case snapModel:
		c.Kind = kindSnapshot
		c.Date = anyDate.FindString(r.System)
	case extractModel:
		c.Kind = kindKeyChanges
	case narrModel:
		c.Kind = kindNarrative
	default:
		c.Kind = kind("unknown model " + r.Model)
	}
	if c.Kind != kindSnapshot {
		for _, m := range promptDate.FindAllStringSubmatch(r.User, -1) {
			c.Dates = append(c.Dates, m[1])
		}
	}
	f.mu.Lock()
	for _, prev := range f.calls {
		if prev.Kind == c.Kind && prev.Date == c.Date {
			c.N++
		}
	}
	c.N++
	c.Active = f.active
	f.active++
	f.calls = append(f.calls, c)
	f.mu.Unlock()

	var a *answer
	if f.script != nil {
		a = f.script(c)
	}
	if a == nil {
		d := defaultAnswer(c)
		a = &d
	}
	return c, *a
}

// end tells that a call returned.
func (f *fakeModel) end() {
	f.mu.Lock()
	f.active--
	f.mu.Unlock()
}

func (f *fakeModel) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	c, a := f.begin("Stream", r)
	defer f.end()
	if a.Block {
		return llm.Response{}, f.block(ctx, c)
	}
	var b strings.Builder
	for _, p := range a.Pieces {
		if err := ctx.Err(); err != nil {
			return llm.Response{Text: b.String()}, err
		}
		b.WriteString(p)
		if err := onText(p); err != nil {
			return llm.Response{Text: b.String()}, err
		}
	}
	if a.Err != nil {
		return llm.Response{Text: b.String()}, a.Err
	}
	return llm.Response{Text: b.String(), Model: r.Model}, nil
}

func (f *fakeModel) Complete(ctx context.Context, r llm.Request) (llm.Response, error) {
	c, a := f.begin("Complete", r)
	defer f.end()
	if a.Block {
		return llm.Response{}, f.block(ctx, c)
	}
	if a.Err != nil {
		return llm.Response{}, a.Err
	}
	return llm.Response{Text: strings.Join(a.Pieces, ""), Model: r.Model}, nil
}

func (f *fakeModel) block(ctx context.Context, c call) error {
	f.blocked <- c
	<-ctx.Done()
	f.released <- release{Call: c, Cause: context.Cause(ctx), At: time.Now()}
	return ctx.Err()
}

// Calls returns the calls so far, in order.
func (f *fakeModel) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// count tells the calls of kind k (and, when date is not empty, of that
// snapshot date).
func (f *fakeModel) count(k kind, date string) int {
	n := 0
	for _, c := range f.Calls() {
		if c.Kind == k && (date == "" || c.Date == date) {
			n++
		}
	}
	return n
}

// waitBlocked waits for n blocking calls to have started.
func (f *fakeModel) waitBlocked(t *testing.T, n int, timeout time.Duration) []call {
	t.Helper()
	var out []call
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case c := <-f.blocked:
			out = append(out, c)
		case <-timer.C:
			t.Fatalf("%d of %d blocking model calls started within %s; calls: %+v", len(out), n, timeout, f.Calls())
		}
	}
	return out
}

// waitReleased waits for n blocked calls to see their context end.
func (f *fakeModel) waitReleased(t *testing.T, n int, timeout time.Duration) []release {
	t.Helper()
	var out []release
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case r := <-f.released:
			out = append(out, r)
		case <-timer.C:
			t.Fatalf("%d of %d blocked model calls saw their context end within %s", len(out), n, timeout)
		}
	}
	return out
}

// Default answers, also used by the tests' expectations.

func snapshotPieces(date string) []string {
	return []string{"As of ", date, ", the best", " model is M-" + date + "."}
}

func snapshotText(date string) string { return strings.Join(snapshotPieces(date), "") }

var narrativePieces = []string{"At first ", "one model led; ", "later ", "others caught up."}

func narrativeText() string { return strings.Join(narrativePieces, "") }

func changeText(from, to string) string { return "change " + from + " -> " + to }

// keyChangesJSON answers the extraction for the given snapshot dates in the
// documented {"transitions":[...]} form.
func keyChangesJSON(dates []string) string {
	type tr struct {
		From    string   `json:"from"`
		To      string   `json:"to"`
		Changes []string `json:"changes"`
	}
	doc := struct {
		Transitions []tr `json:"transitions"`
	}{Transitions: []tr{}}
	for i := 0; i+1 < len(dates); i++ {
		doc.Transitions = append(doc.Transitions, tr{From: dates[i], To: dates[i+1], Changes: []string{changeText(dates[i], dates[i+1])}})
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

func defaultAnswer(c call) answer {
	switch c.Kind {
	case kindSnapshot:
		return answer{Pieces: snapshotPieces(c.Date)}
	case kindKeyChanges:
		s := keyChangesJSON(c.Dates)
		// Streamed or not, in a few pieces.
		return answer{Pieces: []string{s[:len(s)/2], s[len(s)/2:]}}
	case kindNarrative:
		return answer{Pieces: narrativePieces}
	}
	return answer{Err: fmt.Errorf("fake model: unexpected call %+v", c)}
}

// ---------------------------------------------------------------------------
// The harness: a database of its own, the store, the hubs, the handlers and
// real asynq servers, wired as worker.Run wires them.

type harness struct {
	t     *testing.T
	rdb   *redis.Client
	store *store.Store
	insp  *asynq.Inspector
	enq   *tasks.Enqueuer
	hub   *events.Hub // job events, for following jobs
	h     *worker.Handlers
	model *fakeModel
	// kinds and env are the handlers': the plans of the jobs the harness
	// submits are made with them, as the api makes them.
	kinds *jobkind.Registry
	env   jobkind.Env
	// dbURL is the database's redis:// URL (sim harness), for an api on it.
	dbURL string
	// cache is the handlers' cache (options.cache), else nil.
	cache *cache.Cache
}

type options struct {
	// script answers the model calls (nil: default answers).
	script func(call) *answer
	// maxRetry of snapshot tasks; 0 means 3.
	maxRetry int
	// noServers leaves the asynq servers out, for tests that call the
	// handlers themselves.
	noServers bool
	// webhooks turns on webhooks (queued by a lifecycle on the harness'
	// enqueuer, with webhookRetries) and the webhook queue's server.
	webhooks       *worker.Webhooks
	webhookRetries int
	// kinds replaces the service's kinds (kinds.Registry).
	kinds *jobkind.Registry
	// cache turns on the member and result caches (cache TTLs: cacheTTLs).
	cache bool
	// admit, when set, makes the model guard provider capacity
	// (worker.Admitter): it answers each admission.
	admit func(ctx context.Context, r llm.Request) error
}

// admittingModel is the fake model with an Admit step.
type admittingModel struct {
	*fakeModel
	admit func(ctx context.Context, r llm.Request) error
}

var _ worker.Admitter = admittingModel{}

func (m admittingModel) Admit(ctx context.Context, r llm.Request) (context.Context, func(), error) {
	if err := m.admit(ctx, r); err != nil {
		return ctx, func() {}, err
	}
	return ctx, func() {}, nil
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	db := redistest.New(t)
	if o.maxRetry == 0 {
		o.maxRetry = 3
	}
	hs := &harness{
		t:     t,
		rdb:   db.Client,
		store: store.New(db.Client, time.Hour),
		insp:  asynq.NewInspectorFromRedisClient(db.Client),
		enq:   tasks.NewEnqueuer(asynq.NewClientFromRedisClient(db.Client), o.maxRetry, time.Minute),
		model: newFakeModel(o.script),
		kinds: kinds.Registry(),
		env:   jobkind.Env{Model: snapModel, Extraction: extractModel, Narrative: narrModel},
	}
	hs.hub = runHub(t, db.Client, events.Channel, log)
	closed := runHub(t, db.Client, store.ClosedChannel, log)
	if o.kinds != nil {
		hs.kinds = o.kinds
	}
	var m worker.Model = hs.model
	if o.admit != nil {
		m = admittingModel{hs.model, o.admit}
	}
	hs.h = worker.NewHandlers(hs.store, m, hs.insp, closed, hs.kinds, hs.env, log)
	if o.cache {
		hs.cache = cache.New(db.Client, cacheTTLs)
		hs.h.SetCaching(worker.Caching{Cache: hs.cache})
	}
	if o.webhooks != nil {
		hs.h.SetWebhooks(*o.webhooks)
		hs.h.SetLifecycle(lifecycle.New(lifecycle.Options{
			Store: hs.store, Webhooks: hs.enq, WebhookRetries: o.webhookRetries, Inspector: hs.insp, Log: log,
		}))
	}
	if !o.noServers {
		hs.startServers(log)
		if o.webhooks != nil {
			hs.startWebhookServer(log)
		}
	}
	return hs
}

// startWebhookServer starts the webhook queue's server from the worker's
// own layout line (its retry delay included), with a forwarder that moves
// due retries every 100 ms.
func (hs *harness) startWebhookServer(log *slog.Logger) {
	hs.t.Helper()
	var queues []worker.Queue
	for _, q := range hs.h.Layout(config.Config{SnapshotConcurrency: 1, AggregateConcurrency: 1, Webhook: config.Webhook{Concurrency: 4}}) {
		if q.Name == tasks.QueueWebhook {
			queues = append(queues, q)
		}
	}
	if len(queues) != 1 || queues[0].RetryDelay == nil {
		hs.t.Fatalf("the layout has no webhook queue with a retry delay of its own: %+v", queues)
	}
	servers, err := worker.StartServers(hs.rdb, queues, worker.ServerOptions{
		TaskCheckInterval: 10 * time.Millisecond, DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout: 2 * time.Second, Log: log,
	})
	if err != nil {
		hs.t.Fatal(err)
	}
	for _, s := range servers {
		hs.t.Cleanup(s.Shutdown)
	}
}

func runHub(t *testing.T, rdb *redis.Client, channel string, log *slog.Logger) *events.Hub {
	t.Helper()
	hub := events.NewHub(rdb, channel, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return hub
}

// startServers starts one asynq server per queue, as worker.Run does, with
// short check intervals and a fixed 1 s retry delay. They shut down at the
// end of the test, before the hubs and the database close.
func (hs *harness) startServers(log *slog.Logger) {
	hs.t.Helper()
	for _, q := range []struct {
		queue, taskType string
		concurrency     int
		handler         asynq.HandlerFunc
	}{
		{tasks.QueueSnapshot, tasks.TypeMember, 4, hs.h.HandleMember},
		{tasks.QueueAggregate, tasks.TypeAggregate, 2, hs.h.HandleAggregate},
	} {
		srv := asynq.NewServerFromRedisClient(hs.rdb, asynq.Config{
			Concurrency:              q.concurrency,
			Queues:                   map[string]int{q.queue: 1},
			TaskCheckInterval:        10 * time.Millisecond,
			DelayedTaskCheckInterval: time.Second,
			ShutdownTimeout:          2 * time.Second,
			RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return time.Second },
			Logger:                   asynqLog{log},
			LogLevel:                 asynq.WarnLevel,
		})
		mux := asynq.NewServeMux()
		mux.HandleFunc(q.taskType, q.handler)
		if err := srv.Start(mux); err != nil {
			hs.t.Fatalf("start %s server: %v", q.queue, err)
		}
		hs.t.Cleanup(srv.Shutdown)
	}
}

// newJob returns a time-travel job of the given dates whose deadline is in
// the given time, as the api makes it: its members from the kind's plan
// (their labels and dates do not depend on the models), its job.accepted
// fields from the kind.
func newJob(t *testing.T, dates []string, deadline time.Duration) *job.Job {
	t.Helper()
	p := timetravel.Params{Complexity: timetravel.ComplexityBrief}
	for _, d := range dates {
		day, err := time.Parse(timetravel.DateLayout, d)
		if err != nil {
			t.Fatal(err)
		}
		p.TimePoints = append(p.TimePoints, timetravel.TimePoint{Date: d, Label: timetravel.DefaultLabel(day)})
	}
	return newJobOf(t, timetravel.Kind{}, timetravel.Spec("What are the best AI models?", p), deadline)
}

// newJobOf returns a job of kind for spec whose deadline is in the given
// time, as the api makes it.
func newJobOf(t *testing.T, kind jobkind.Kind, spec job.Spec, deadline time.Duration) *job.Job {
	t.Helper()
	now := time.Now()
	spec.Kind = kind.Name()
	j := &job.Job{
		ID: uuid.Must(uuid.NewV7()).String(), Status: job.StatusQueued, CreatedAt: now, Deadline: now.Add(deadline),
		Spec: spec, Noun: kind.Noun(),
	}
	plan, err := kind.Plan(j.Spec, jobkind.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range plan {
		j.Members = append(j.Members, job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberPending})
	}
	acc, err := kind.Accepted(j.Spec, j.Members)
	if err != nil {
		t.Fatal(err)
	}
	if j.Accepted, err = json.Marshal(acc); err != nil {
		t.Fatal(err)
	}
	return j
}

// dateOf is the date of a time-travel job's member i.
func dateOf(j *job.Job, i int) string { return timetravel.DateOf(j.Members[i]) }

// plan is the plan of j's kind with the handlers' models.
func (hs *harness) plan(j *job.Job) []jobkind.Member {
	hs.t.Helper()
	kind, err := hs.kinds.Of(j.Spec)
	if err != nil {
		hs.t.Fatal(err)
	}
	plan, err := kind.Plan(j.Spec, hs.env)
	if err != nil {
		hs.t.Fatal(err)
	}
	return plan
}

// memberPayload is the payload of member i of j as the api queues it
// (tasks.Enqueuer.EnqueueMembers).
func (hs *harness) memberPayload(j *job.Job, i int) tasks.MemberPayload {
	hs.t.Helper()
	m := hs.plan(j)[i]
	return tasks.MemberPayload{
		JobID: j.ID, Kind: j.Spec.Kind, Index: i, Label: m.Label, Request: tasks.RequestOf(m.Request),
		CacheKey: m.CacheKey, Volatile: m.Volatile,
		NoCacheRead: !j.Spec.ReadsCache(), Warm: j.Spec.Warm, DeadlineMS: j.Deadline.UnixMilli(),
		Owner: j.Spec.Owner,
	}
}

// memberTask is the task of member i of j as the api queues it.
func (hs *harness) memberTask(j *job.Job, i int) *asynq.Task {
	hs.t.Helper()
	p, err := json.Marshal(hs.memberPayload(j, i))
	if err != nil {
		hs.t.Fatal(err)
	}
	return asynq.NewTask(tasks.TypeMember, p)
}

// submit sets up a job exactly as the api's accept does: the aggregation at
// the deadline first, then the job, then its members.
func (hs *harness) submit(dates []string, deadline time.Duration) *job.Job {
	hs.t.Helper()
	return hs.submitJob(newJob(hs.t, dates, deadline))
}

// submitJob is submit for a job made by the test.
func (hs *harness) submitJob(j *job.Job) *job.Job {
	hs.t.Helper()
	ctx := context.Background()
	if err := hs.enq.EnqueueAggregate(ctx, j); err != nil {
		hs.t.Fatal(err)
	}
	if _, err := hs.store.Create(ctx, j); err != nil {
		hs.t.Fatal(err)
	}
	if err := hs.enq.EnqueueMembers(ctx, j, hs.plan(j)); err != nil {
		hs.t.Fatal(err)
	}
	return j
}

// follow returns the job's events up to and including the terminal one,
// following them live; the test fails if the job does not end in time.
func (hs *harness) follow(jobID string, timeout time.Duration) []events.Event {
	hs.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var evs []events.Event
	err := hs.hub.Follow(ctx, jobID, func(e events.Event) error {
		evs = append(evs, e)
		return nil
	}, events.FollowOptions{Heartbeat: 250 * time.Millisecond})
	if err != nil {
		hs.t.Fatalf("job %s did not end within %s (%v); events so far: %v; model calls: %+v",
			jobID, timeout, err, typesOf(evs), hs.model.Calls())
	}
	return evs
}

// events returns all events of the job as stored now.
func (hs *harness) events(jobID string) []events.Event {
	hs.t.Helper()
	evs, err := events.Read(context.Background(), hs.rdb, jobID, "")
	if err != nil {
		hs.t.Fatal(err)
	}
	return evs
}

func (hs *harness) job(jobID string) *job.Job {
	hs.t.Helper()
	j, err := hs.store.Get(context.Background(), jobID)
	if err != nil {
		hs.t.Fatal(err)
	}
	return j
}

// fanIn reads the job's fan-in counter as the store keeps it.
func (hs *harness) fanIn(jobID string) string {
	hs.t.Helper()
	v, err := hs.rdb.HGet(context.Background(), store.JobKey(jobID), "done").Result()
	if err != nil {
		hs.t.Fatal(err)
	}
	return v
}

// waitTasksGone polls, up to a deadline, until none of the job's tasks
// (members 0..n-1 and the aggregation) exists in any asynq state. A task
// seen waiting for a retry or archived fails the test at once: after a job
// ended, nothing of it may be put up for another run.
func (hs *harness) waitTasksGone(jobID string, n int, timeout time.Duration) {
	hs.t.Helper()
	type ref struct{ queue, id string }
	refs := []ref{{tasks.QueueAggregate, tasks.AggregateTaskID(jobID)}}
	for i := range n {
		refs = append(refs, ref{tasks.QueueSnapshot, tasks.MemberTaskID(jobID, i)})
	}
	deadline := time.Now().Add(timeout)
	for _, r := range refs {
		for {
			info, err := hs.insp.GetTaskInfo(r.queue, r.id)
			if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				hs.t.Fatalf("task %s: %v", r.id, err)
			}
			if info.State == asynq.TaskStateRetry || info.State == asynq.TaskStateArchived {
				hs.t.Fatalf("task %s is %s (last error %q); want it gone", r.id, info.State, info.LastErr)
			}
			if time.Now().After(deadline) {
				hs.t.Fatalf("task %s still %s after %s; want it gone", r.id, info.State, timeout)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, bounded by deadline
		}
	}
}

// queueStats returns how many tasks of queue asynq processed and how many of
// those failed (the handler returned an error), in total.
func (hs *harness) queueStats(queue string) (processed, failed int) {
	hs.t.Helper()
	qi, err := hs.insp.GetQueueInfo(queue)
	if err != nil {
		hs.t.Fatalf("queue %s: %v", queue, err)
	}
	return qi.ProcessedTotal, qi.FailedTotal
}

func (hs *harness) wantQueueStats(queue string, processed, failed int) {
	hs.t.Helper()
	if p, f := hs.queueStats(queue); p != processed || f != failed {
		hs.t.Errorf("queue %s: processed %d, failed %d; want %d, %d", queue, p, f, processed, failed)
	}
}

// ---------------------------------------------------------------------------
// Event helpers.

func typesOf(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func ofType(evs []events.Event, typ string) []events.Event {
	var out []events.Event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func decode[T any](t *testing.T, e events.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		t.Fatalf("decode %s %s: %v", e.Type, e.Data, err)
	}
	return v
}

// snapshotEvent is the union of the snapshot events' payloads (the
// member's identity, RefData, with time travel's "date").
type snapshotEvent struct {
	Index   int    `json:"index"`
	Date    string `json:"date"`
	Label   string `json:"label"`
	Attempt int    `json:"attempt"`
	Text    string `json:"text"`
	Model   string `json:"model"`
	Error   string `json:"error"`
}

// byIndex decodes the snapshot events of typ and groups them by index.
func byIndex(t *testing.T, evs []events.Event, typ string) map[int][]snapshotEvent {
	t.Helper()
	out := map[int][]snapshotEvent{}
	for _, e := range ofType(evs, typ) {
		d := decode[snapshotEvent](t, e)
		out[d.Index] = append(out[d.Index], d)
	}
	return out
}

// wantEnded checks the stream's end: exactly one job.completed, last, with
// the given status, matching the stored job.
func wantEnded(t *testing.T, evs []events.Event, j *job.Job, status job.Status) {
	t.Helper()
	done := ofType(evs, events.JobCompleted)
	if len(done) != 1 {
		t.Fatalf("%d job.completed events, want 1; events: %v", len(done), typesOf(evs))
	}
	if !evs[len(evs)-1].Terminal() {
		t.Errorf("last event is %s, want job.completed", evs[len(evs)-1].Type)
	}
	d := decode[events.CompletedData](t, done[0])
	if d.Status != string(status) || d.JobID != j.ID || d.Error != j.Error {
		t.Errorf("job.completed = %+v, want status %s, job %s, error %q", d, status, j.ID, j.Error)
	}
	if j.Status != status {
		t.Errorf("job status %s (error %q), want %s", j.Status, j.Error, status)
	}
	if j.FinishedAt.IsZero() {
		t.Error("job has no finish time")
	}
}

// ---------------------------------------------------------------------------
// The result of a time-travel job.

// aggView is a time-travel job's result as the tests check it: its
// key_changes part decoded, its narrative part's text, and each part's
// error, model and requests.
type aggView struct {
	KeyChanges            []timetravel.KeyChange
	KeyChangesError       string
	KeyChangesModel       string
	KeyChangesLLMAttempts int
	Narrative             string
	NarrativeError        string
	NarrativeModel        string
	NarrativeLLMAttempts  int
	StartedAt             int64
	Cached                bool
}

// aggOf returns j's result as an aggView, nil when j has none.
func aggOf(t *testing.T, j *job.Job) *aggView {
	t.Helper()
	r := j.Result
	if r == nil {
		return nil
	}
	a := &aggView{KeyChanges: []timetravel.KeyChange{}, StartedAt: r.StartedAt, Cached: r.Cached}
	if p := r.Part(timetravel.PartKeyChanges); p != nil {
		if len(p.Value) > 0 {
			if err := json.Unmarshal(p.Value, &a.KeyChanges); err != nil {
				t.Fatalf("decode the key changes %s: %v", p.Value, err)
			}
			if a.KeyChanges == nil {
				a.KeyChanges = []timetravel.KeyChange{}
			}
		}
		a.KeyChangesError, a.KeyChangesModel, a.KeyChangesLLMAttempts = p.Error, p.Model, p.LLMAttempts
	}
	if p := r.Part(timetravel.PartNarrative); p != nil {
		a.Narrative, a.NarrativeError, a.NarrativeModel, a.NarrativeLLMAttempts = p.Text, p.Error, p.Model, p.LLMAttempts
	}
	return a
}

// partTiming returns the timing of the part named name, and whether there
// is one.
func partTiming(tm job.Timings, name string) (job.PartTiming, bool) {
	for _, p := range tm.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return job.PartTiming{}, false
}

// partMS is the duration of the part named name, nil when it has none.
func partMS(tm job.Timings, name string) *int64 {
	if p, ok := partTiming(tm, name); ok && p.MS > 0 {
		return &p.MS
	}
	return nil
}

// ---------------------------------------------------------------------------
// Misc.

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// asynqLog routes asynq's logs into the test's log.
type asynqLog struct{ l *slog.Logger }

func (a asynqLog) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLog) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLog) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLog) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLog) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

func statusErr(code int) error {
	return &llm.StatusError{StatusCode: code, Message: fmt.Sprintf("fake %d", code)}
}
