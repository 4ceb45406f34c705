package worker_test

import (
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

// Models of the simulator in these tests.
const (
	simSnap     = "sim-snap"
	simExtract  = "sim-extract"
	simNarr     = "sim-narr"
	simFallback = "sim-b"
)

// simOptions tune a harness whose handlers call the simulator through the
// real gateway, with the worker's real asynq servers.
type simOptions struct {
	maxRetry            int // of snapshot tasks; -1 means 0
	snapshotConcurrency int // default 4
	mutate              func(*config.LLM)
}

type simHarness struct {
	*harness
	sim *llmsim.Server
}

func newSimHarness(t *testing.T, o simOptions) *simHarness {
	t.Helper()
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sim := llmsim.New(llmsim.Config{
		TTFT: 10 * time.Millisecond,
		Latency: map[string]time.Duration{
			simSnap: 150 * time.Millisecond, simExtract: 50 * time.Millisecond,
			simNarr: 50 * time.Millisecond, simFallback: 100 * time.Millisecond,
		},
		RetryAfter: 300 * time.Millisecond,
	})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // first: ends hanging answers

	cfg := config.LLM{
		BaseURL: srv.URL + "/v1", APIType: "openai",
		Timeout: 5 * time.Second, FirstTokenTimeout: 500 * time.Millisecond,
		MaxInFlight: 16, MaxAttempts: 3, RetryMaxWait: 2 * time.Second, CapacityWait: 500 * time.Millisecond,
		BreakerFailures: 100, BreakerOpenFor: time.Second,
		Fallbacks: map[string][]string{},
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	maxRetry := o.maxRetry
	if maxRetry == 0 {
		maxRetry = 3
	} else if maxRetry < 0 {
		maxRetry = 0
	}
	db := redistest.New(t)
	hs := &harness{
		t:     t,
		rdb:   db.Client,
		store: store.New(db.Client, time.Hour),
		insp:  asynq.NewInspectorFromRedisClient(db.Client),
		enq:   tasks.NewEnqueuer(asynq.NewClientFromRedisClient(db.Client), maxRetry, time.Minute),
		model: newFakeModel(nil), // unused: the gateway answers
		dbURL: db.URL,
	}
	hs.hub = runHub(t, db.Client, events.Channel, log)
	closed := runHub(t, db.Client, store.ClosedChannel, log)
	released := runHub(t, db.Client, limit.ReleasedChannel, log)
	policy := llm.Policy{MaxAttempts: cfg.MaxAttempts, Base: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxWait: cfg.RetryMaxWait}
	gw := gateway.New(cfg, gateway.Options{Redis: db.Client, Wake: released, Log: log, Policy: &policy})
	hs.kinds = kinds.Registry()
	hs.env = jobkind.Env{Model: simSnap, Extraction: simExtract, Narrative: simNarr}
	hs.h = worker.NewHandlers(hs.store, gw, hs.insp, closed, hs.kinds, hs.env, log)
	conc := o.snapshotConcurrency
	if conc == 0 {
		conc = 4
	}
	servers, err := worker.StartServers(db.Client, hs.h.Layout(config.Config{SnapshotConcurrency: conc, AggregateConcurrency: 2}),
		worker.ServerOptions{TaskCheckInterval: 10 * time.Millisecond, DelayedTaskCheckInterval: 100 * time.Millisecond,
			ShutdownTimeout: 2 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		t.Cleanup(s.Shutdown)
	}
	return &simHarness{harness: hs, sim: sim}
}

// fault scripts the next count requests of model (0: all of them).
func (s *simHarness) fault(model string, kind llmsim.FaultKind, count int) {
	s.t.Helper()
	if err := s.sim.SetRuntimeFaults(llmsim.FaultRule{Model: model, Faults: []llmsim.Fault{{Kind: kind, Rate: 1}}, Count: count}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *simHarness) requests(model string) int64 { return s.sim.Stats().Models[model].Requests }

// run submits a job of dates3 and returns it once it ended, with its events.
func (s *simHarness) run() (*job.Job, []events.Event) {
	s.t.Helper()
	j := s.submit(dates3, time.Minute)
	evs := s.follow(j.ID, endTimeout)
	return s.job(j.ID), evs
}

func sumLLMAttempts(j *job.Job) int {
	n := 0
	for _, s := range j.Members {
		n += s.LLMAttempts
	}
	return n
}

// wantSnapshotsCompleted checks every snapshot completed after attempts
// deliveries each, answered by model.
func wantSnapshotsCompleted(t *testing.T, j *job.Job, evs []events.Event, model string) {
	t.Helper()
	for _, s := range j.Members {
		if s.Status != job.MemberCompleted || s.Model != model || s.Text == "" || s.LLMAttempts < 1 {
			t.Errorf("snapshot %d = %+v; want completed by %s", s.Index, s, model)
		}
	}
	for i, c := range byIndex(t, evs, timetravel.EventSnapshotCompleted) {
		if len(c) != 1 || c[0].Model != model {
			t.Errorf("snapshot %d: snapshot.completed %+v, want one naming %s", i, c, model)
		}
	}
}

// The provider's transient faults are retried inside the task: the job
// completes, each snapshot in one delivery, and the simulator saw exactly
// one request more per fault.
func TestProviderFaultsAreRetriedInTheTask(t *testing.T) {
	t.Parallel()
	for _, kind := range []llmsim.FaultKind{llmsim.FaultRateLimit, llmsim.FaultServerError, llmsim.FaultUnavailable, llmsim.FaultHang} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			hs := newSimHarness(t, simOptions{})
			hs.fault(simSnap, kind, 2)
			start := time.Now()
			j, evs := hs.run()
			wantEnded(t, evs, j, job.StatusCompleted)
			wantSnapshotsCompleted(t, j, evs, simSnap)
			for _, s := range j.Members {
				if s.Attempts != 1 {
					t.Errorf("snapshot %d took %d deliveries, want 1 (retried inside the task)", s.Index, s.Attempts)
				}
			}
			if got, n := sumLLMAttempts(j), hs.requests(simSnap); got != 5 || n != 5 {
				t.Errorf("llm_attempts add up to %d, the simulator got %d requests; want 5 and 5 (3 snapshots, 2 faults)", got, n)
			}
			if kind == llmsim.FaultRateLimit && time.Since(start) < 300*time.Millisecond {
				t.Errorf("the job took %s: the 300 ms Retry-After was not honoured", time.Since(start))
			}
			hs.waitTasksGone(j.ID, 3, 5*time.Second)
			hs.wantQueueStats(tasks.QueueSnapshot, 3, 0)
		})
	}
}

// A stream that breaks after text reached the client is retried by the
// queue: a new delivery, whose snapshot.started replaces the text.
func TestBrokenStreamIsRetriedByTheQueue(t *testing.T) {
	t.Parallel()
	hs := newSimHarness(t, simOptions{})
	hs.fault(simSnap, llmsim.FaultBreak, 1)
	j, evs := hs.run()
	wantEnded(t, evs, j, job.StatusCompleted)
	wantSnapshotsCompleted(t, j, evs, simSnap)
	retried := 0
	started := byIndex(t, evs, timetravel.EventSnapshotStarted)
	for _, s := range j.Members {
		switch s.Attempts {
		case 1:
		case 2:
			retried++
			if s.LLMAttempts != 2 || len(started[s.Index]) != 2 {
				t.Errorf("retried snapshot %+v: %d started events; want 2 requests and 2 starts", s, len(started[s.Index]))
			}
		default:
			t.Errorf("snapshot %d: %d deliveries", s.Index, s.Attempts)
		}
	}
	if retried != 1 || hs.requests(simSnap) != 4 {
		t.Errorf("%d snapshots retried, %d requests; want 1 and 4", retried, hs.requests(simSnap))
	}
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	hs.wantQueueStats(tasks.QueueSnapshot, 4, 1)
}

// A provider that hangs on every try of a snapshot: the attempts are
// bounded, and the job ends partial with the snapshot's timeout named.
func TestHangingSnapshotEndsPartialWithItsErrorNamed(t *testing.T) {
	t.Parallel()
	// One snapshot at a time, no queue retry, 2 requests per call: the
	// first snapshot's two requests both hang.
	hs := newSimHarness(t, simOptions{maxRetry: -1, snapshotConcurrency: 1, mutate: func(c *config.LLM) { c.MaxAttempts = 2 }})
	hs.fault(simSnap, llmsim.FaultHang, 2)
	j, evs := hs.run()
	wantEnded(t, evs, j, job.StatusPartial)
	var failed []job.Member
	for _, s := range j.Members {
		if s.Status == job.MemberFailed {
			failed = append(failed, s)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("failed snapshots %+v, want 1", failed)
	}
	f := failed[0]
	if !strings.Contains(f.Error, "timed out") || !strings.Contains(f.Error, "no first token within 500ms") ||
		!strings.Contains(f.Error, simSnap+" (2 attempts)") || f.LLMAttempts != 2 {
		t.Errorf("failed snapshot %+v; want its timeout and its 2 attempts named", f)
	}
	if !strings.Contains(j.Error, f.Label+" failed") || !slices.Contains(j.View().Errors, "snapshot "+f.Label+": "+f.Error) {
		t.Errorf("job error %q, view errors %q: the failed snapshot is not named", j.Error, j.View().Errors)
	}
	if n := hs.requests(simSnap); n != 4 {
		t.Errorf("%d requests, want 4 (2 hung, then 1 per other snapshot)", n)
	}
}

// A malformed key-changes answer is not retried: the job ends partial and
// says the key changes failed.
func TestMalformedKeyChangesEndPartial(t *testing.T) {
	t.Parallel()
	hs := newSimHarness(t, simOptions{})
	hs.fault(simExtract, llmsim.FaultBadJSON, 0)
	j, evs := hs.run()
	wantEnded(t, evs, j, job.StatusPartial)
	agg := aggOf(t, j)
	if agg == nil || agg.KeyChangesError == "" || len(agg.KeyChanges) != 0 || agg.Narrative == "" {
		t.Fatalf("aggregate %+v; want a key-changes error, a narrative", agg)
	}
	if !slices.ContainsFunc(j.View().Errors, func(e string) bool { return strings.HasPrefix(e, "key changes: ") }) {
		t.Errorf("view errors %q do not name the key changes", j.View().Errors)
	}
	if n := len(ofType(evs, timetravel.EventKeyChangesFailed)); n != 1 {
		t.Errorf("%d key_changes.failed events, want 1", n)
	}
	pt, _ := partTiming(j.Timings(), timetravel.PartKeyChanges)
	if n := hs.requests(simExtract); n != 1 || agg.KeyChangesLLMAttempts != 1 || pt.LLMAttempts != 1 {
		t.Errorf("%d extraction requests, %d recorded; want 1", n, agg.KeyChangesLLMAttempts)
	}
}

// A model that always fails: each call spends its attempts, then its
// fallback answers, and the snapshots and their events name the fallback.
func TestFailingModelFallsBack(t *testing.T) {
	t.Parallel()
	hs := newSimHarness(t, simOptions{mutate: func(c *config.LLM) {
		c.Fallbacks = map[string][]string{simSnap: {simFallback}, simNarr: {simFallback}}
	}})
	hs.fault(simSnap, llmsim.FaultUnavailable, 0)
	hs.fault(simNarr, llmsim.FaultServerError, 0)
	j, evs := hs.run()
	wantEnded(t, evs, j, job.StatusCompleted)
	wantSnapshotsCompleted(t, j, evs, simFallback)
	for _, s := range j.Members {
		if s.LLMAttempts != 4 || s.Attempts != 1 {
			t.Errorf("snapshot %d: %d requests in %d deliveries; want 3 to %s and 1 to %s, in 1", s.Index, s.LLMAttempts, s.Attempts, simSnap, simFallback)
		}
	}
	if a, b := hs.requests(simSnap), hs.requests(simFallback); a != 9 || b != 4 {
		t.Errorf("requests: %s %d, %s %d; want 9 (3 per snapshot) and 4 (3 snapshots, the narrative)", simSnap, a, simFallback, b)
	}
	if agg := aggOf(t, j); agg.NarrativeModel != simFallback || agg.NarrativeLLMAttempts != 4 || agg.Narrative == "" {
		t.Errorf("narrative by %q after %d requests; want %s after 4", agg.NarrativeModel, agg.NarrativeLLMAttempts, simFallback)
	}
}

// Without provider capacity a task goes back to the queue before it claims
// its snapshot, and without using up a retry: with one request in flight
// allowed, every snapshot still completes in one delivery, and the
// simulator never sees two requests at once.
func TestNoCapacityHandsBackWithoutUsingRetries(t *testing.T) {
	t.Parallel()
	hs := newSimHarness(t, simOptions{maxRetry: -1, mutate: func(c *config.LLM) {
		c.MaxInFlight = 1
		c.CapacityWait = 50 * time.Millisecond
	}})
	j, evs := hs.run()
	wantEnded(t, evs, j, job.StatusCompleted)
	wantSnapshotsCompleted(t, j, evs, simSnap)
	for _, s := range j.Members {
		if s.Attempts != 1 || s.LLMAttempts != 1 {
			t.Errorf("snapshot %d: %d deliveries claimed it, %d requests; want 1 and 1", s.Index, s.Attempts, s.LLMAttempts)
		}
	}
	if st := hs.sim.Stats().Total; st.PeakInFlight != 1 {
		t.Errorf("the simulator saw %d requests at once, want 1", st.PeakInFlight)
	}
	// Hand-backs are not failures: asynq counted none.
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	if _, failed := hs.queueStats(tasks.QueueSnapshot); failed != 0 {
		t.Errorf("%d snapshot runs counted as failed, want 0", failed)
	}
	if n := len(ofType(evs, timetravel.EventSnapshotStarted)); n != 3 {
		t.Errorf("%d snapshot.started events, want 3: a hand-back claims nothing", n)
	}
}
