package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// These tests cross processes: limits and breakers live in Redis and bind
// every worker.

func simControl(t *testing.T, e env) llmsim.Control {
	t.Helper()
	ctl := llmsim.Control{BaseURL: e.stack.SimURL}
	if err := ctl.ResetStats(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ctl
}

func faultNext(t *testing.T, ctl llmsim.Control, model string, kind llmsim.FaultKind, count int) {
	t.Helper()
	rule := llmsim.FaultRule{Model: model, Faults: []llmsim.Fault{{Kind: kind, Rate: 1}}, Count: count}
	if _, err := ctl.SetFaults(context.Background(), rule); err != nil {
		t.Fatal(err)
	}
}

func jobView(t *testing.T, e env, id string) client.JobView {
	t.Helper()
	v, err := e.api.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var twoDates = []client.TimePoint{{Date: "2023-01-01"}, {Date: "2024-05-01"}}

// Two workers share a provider capped at 3 requests in flight: 20 jobs at
// once never put more than 3 requests at the simulator, and all complete,
// each call sent once.
func TestProviderCapAcrossWorkers(t *testing.T) {
	t.Parallel()
	e := startStack(t, 2, nil, map[string]string{"LLM_MAX_IN_FLIGHT": "3"})
	ctl := simControl(t, e)
	const jobs = 20
	var wg sync.WaitGroup
	ids := make([]string, jobs)
	for i := range jobs {
		wg.Go(func() {
			// Questions of their own: identical ones would share a job.
			ids[i] = submit(t, e, client.SubmitRequest{Question: fmt.Sprintf("What are the best AI models? (%d)", i), TimePoints: twoDates, Complexity: "brief"})
		})
	}
	wg.Wait()
	statuses := make([]string, jobs)
	for i, id := range ids {
		wg.Go(func() {
			if id != "" {
				statuses[i] = terminalStatus(t, collect(t, e, id))
			}
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != "completed" {
			t.Errorf("job %d ended %q, want completed", i, s)
		}
	}
	st, err := ctl.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.PeakInFlight > 3 || st.Total.PeakInFlight < 2 {
		t.Errorf("the simulator saw up to %d requests at once; want the cap, 3", st.Total.PeakInFlight)
	}
	// 2 snapshots, the key changes and the narrative per job, none retried.
	if st.Total.Requests != jobs*4 {
		t.Errorf("the simulator got %d requests, want %d", st.Total.Requests, jobs*4)
	}
	for _, id := range ids {
		for _, s := range jobView(t, e, id).Snapshots {
			if s.Attempts != 1 || s.LLMAttempts != 1 {
				t.Errorf("job %s snapshot %d: %d deliveries claimed it, %d requests; want 1 and 1 (waiting for capacity claims nothing)",
					id, s.Index, s.Attempts, s.LLMAttempts)
			}
		}
	}
}

// The breaker of a failing model opens through one worker and holds the
// other back without a request: its work waits, as for capacity, instead of
// failing, and goes back to the queue without using up a retry. After its
// open time one trial request closes the breaker again, and the work that
// waited completes.
func TestBreakerSharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	const openFor = 5 * time.Second
	// No retry of a failed snapshot (the api enqueues with this budget),
	// one request per call.
	e := startStack(t, 1, map[string]string{"SNAPSHOT_MAX_RETRY": "0"}, map[string]string{
		"LLM_BREAKER_FAILURES": "2", "LLM_BREAKER_OPEN_FOR": openFor.String(), "LLM_MAX_ATTEMPTS": "1", "SNAPSHOT_MAX_RETRY": "0",
	})
	ctl := simControl(t, e)
	requests := func() int64 {
		st, err := ctl.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st.Models[modelSnapshot].Requests
	}
	faultNext(t, ctl, modelSnapshot, llmsim.FaultUnavailable, 0)

	// Worker 1: two failures open the breaker.
	a := submit(t, e, client.SubmitRequest{Question: "Which model is best?", TimePoints: twoDates})
	if got := terminalStatus(t, collect(t, e, a)); got != "failed" {
		t.Fatalf("job A ended %s, want failed", got)
	}
	for _, s := range jobView(t, e, a).Snapshots {
		if !strings.Contains(s.Error, "503") {
			t.Errorf("job A snapshot %d error %q, want the provider's 503", s.Index, s.Error)
		}
	}
	if n := requests(); n != 2 {
		t.Fatalf("%d requests opened the breaker, want 2", n)
	}
	openedAt := time.Now()

	// Worker 2 replaces worker 1. Job B's snapshots find the breaker open:
	// they wait and send nothing, while the provider recovers.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.stack.StartWorker(ctx); err != nil {
		t.Fatal(err)
	}
	e.stack.WorkerList()[0].Stop()
	b := submit(t, e, client.SubmitRequest{Question: "Which model is best?", TimePoints: twoDates})
	if _, err := ctl.ClearFaults(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := terminalStatus(t, collect(t, e, b)); got != "completed" {
		t.Fatalf("job B ended %s, want completed once the breaker let it through: %v", got, jobView(t, e, b).Errors)
	}
	if d := time.Since(openedAt); d < openFor {
		t.Fatalf("job B ended %s after the breaker opened, before its open time %s: it did not wait", d, openFor)
	}
	for _, s := range jobView(t, e, b).Snapshots {
		if s.LLMAttempts != 1 {
			t.Errorf("job B snapshot %d sent %d requests, want 1: nothing while the breaker was open", s.Index, s.LLMAttempts)
		}
	}
	// Another question, after the breaker closed.
	d := submit(t, e, client.SubmitRequest{Question: "Which model is best now?"})
	if got := terminalStatus(t, collect(t, e, d)); got != "completed" {
		t.Fatalf("job D ended %s, want completed: %v", got, jobView(t, e, d).Errors)
	}
	if n := requests(); n != 2+2+4 {
		t.Errorf("%d requests in all, want 8 (2 failures, job B's 2 with the trial, 4 snapshots)", n)
	}
}

// A provider that throttles: the real worker honours the 429's Retry-After
// and completes, the extra requests visible on the snapshots.
func TestThrottledProviderIsRetried(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, nil, nil)
	ctl := simControl(t, e)
	faultNext(t, ctl, modelSnapshot, llmsim.FaultRateLimit, 2)
	start := time.Now()
	id := submit(t, e, client.SubmitRequest{Question: "What are the best AI models?"})
	evs := collect(t, e, id)
	checkOrder(t, evs, 4)
	if got := terminalStatus(t, evs); got != "completed" {
		t.Fatalf("status %s, want completed", got)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("the job took %s; the simulator's 1s Retry-After was not honoured", d)
	}
	total := 0
	for _, s := range jobView(t, e, id).Snapshots {
		if s.Attempts != 1 {
			t.Errorf("snapshot %d took %d deliveries, want 1 (retried inside the task)", s.Index, s.Attempts)
		}
		total += s.LLMAttempts
	}
	st, err := ctl.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Models[modelSnapshot].Requests; n != 6 || total != 6 || st.Models[modelSnapshot].Faults.RateLimit != 2 {
		t.Errorf("%d snapshot requests (%d recorded, %d throttled); want 6, 6, 2", n, total, st.Models[modelSnapshot].Faults.RateLimit)
	}
}
