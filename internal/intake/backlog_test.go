package intake_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// backlogHook is an intake's Backlog hook that records what it is asked
// and answers wait, or refuses with refuse.
type backlogHook struct {
	mu     sync.Mutex
	calls  []int
	wait   *time.Duration
	refuse error
	// settled records the settle calls: whether the job's calls were
	// queued.
	settled []bool
}

func (h *backlogHook) ask(_ context.Context, _ *job.Job, calls int) (*time.Duration, func(bool), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, calls)
	if h.refuse != nil {
		return nil, nil, h.refuse
	}
	return h.wait, func(queued bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.settled = append(h.settled, queued)
	}, nil
}

func (h *backlogHook) asked() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.calls...)
}

// withBacklog is newFixture with the Backlog hook h.
func withBacklog(t *testing.T, h *backlogHook) fixture {
	t.Helper()
	f := newFixture(t)
	f.in = intake.New(intake.Options{
		Store: f.store, Enqueuer: tasks.NewEnqueuer(asynq.NewClientFromRedisClient(f.db.Client), 3, time.Minute),
		Inspector: f.insp, Cache: f.cache, Inflight: cache.NewInflight(f.db.Client),
		Kinds: kinds.Registry(), Env: env, Deadline: time.Minute, Backlog: h.ask,
	})
	return f
}

// acceptedWaitOf returns the expected_wait_ms of a job's job.accepted.
func acceptedWaitOf(t *testing.T, f fixture, id string) *int64 {
	t.Helper()
	evs, err := f.store.Events(t.Context(), id, "")
	if err != nil || len(evs) == 0 || evs[0].Type != events.JobAccepted {
		t.Fatalf("events %v %v", evs, err)
	}
	var d events.AcceptedData
	if err := json.Unmarshal(evs[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.ExpectedWaitMS
}

// The Backlog hook is asked about each new job of a caller's, with the
// member calls it queues, and its wait is the job's job.accepted's; a job
// served from the caches is not asked about.
func TestSubmitAsksTheBacklog(t *testing.T) {
	t.Parallel()
	wait := 1500 * time.Millisecond
	for _, tt := range []struct {
		name      string
		cached    []int
		aggregate bool
		wait      *time.Duration
		wantAsked []int
		wantMS    *int64
	}{
		{"nothing cached", nil, false, &wait, []int{2}, ptr(int64(1500))},
		{"one snapshot cached", []int{0}, false, &wait, []int{1}, ptr(int64(1500))},
		{"every snapshot cached", []int{0, 1}, false, &wait, []int{0}, ptr(int64(1500))},
		{"wait unknown", nil, false, nil, []int{2}, nil},
		{"everything cached: not asked", []int{0, 1}, true, &wait, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := &backlogHook{wait: tt.wait}
			f := withBacklog(t, h)
			s := spec("What are the best AI models?")
			snaps := f.cacheSnapshots(t, s, env, tt.cached...)
			if tt.aggregate {
				f.cacheAggregate(t, s, env, snaps)
			}
			out, err := f.in.Submit(t.Context(), s)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.asked(); !slices.Equal(got, tt.wantAsked) {
				t.Fatalf("asked about %v calls, want %v", got, tt.wantAsked)
			}
			h.mu.Lock()
			settled := slices.Clone(h.settled)
			h.mu.Unlock()
			if want := slices.Repeat([]bool{true}, len(tt.wantAsked)); !slices.Equal(settled, want) {
				t.Fatalf("settled %v, want %v (queued)", settled, want)
			}
			got := acceptedWaitOf(t, f, out.Job.ID)
			if (got == nil) != (tt.wantMS == nil) || (got != nil && *got != *tt.wantMS) {
				t.Fatalf("expected_wait_ms %v, want %v", deref(got), deref(tt.wantMS))
			}
		})
	}
}

// A request that joins a job in flight, and a warming job, queue no call
// of a caller's: the hook is not asked.
func TestJoinAndWarmSkipTheBacklog(t *testing.T) {
	t.Parallel()
	h := &backlogHook{}
	f := withBacklog(t, h)
	s := spec("What are the best AI models?")
	if _, err := f.in.Submit(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	out, err := f.in.Submit(t.Context(), s)
	if err != nil || !out.Joined {
		t.Fatalf("second request: joined %v, %v", out.Joined, err)
	}
	if _, err := f.in.Warm(t.Context(), spec("Which models are open?")); err != nil {
		t.Fatal(err)
	}
	if got := h.asked(); !slices.Equal(got, []int{2}) {
		t.Fatalf("asked about %v calls, want only the first job's 2", got)
	}
}

// A refusal is returned as is: nothing is queued or stored, and the
// request's fingerprint is free, so the next identical request starts a
// job of its own instead of joining a job that does not exist.
func TestBacklogRefusal(t *testing.T) {
	t.Parallel()
	errFull := errors.New("overloaded")
	h := &backlogHook{refuse: errFull}
	f := withBacklog(t, h)
	s := spec("What are the best AI models?")
	if _, err := f.in.Submit(t.Context(), s); !errors.Is(err, errFull) {
		t.Fatalf("error %v, want the hook's", err)
	}
	for _, q := range []string{tasks.QueueSnapshot, tasks.QueueAggregate} {
		if info, err := f.insp.GetQueueInfo(q); err == nil && info.Size != 0 {
			t.Fatalf("queue %s holds %d tasks", q, info.Size)
		}
	}
	if ids, _ := f.db.Client.Keys(t.Context(), store.JobKey("*")).Result(); len(ids) != 0 {
		t.Fatalf("jobs stored: %v", ids)
	}
	h.mu.Lock()
	h.refuse = nil
	h.mu.Unlock()
	out, err := f.in.Submit(t.Context(), s)
	if err != nil || out.Joined {
		t.Fatalf("after the refusal: joined %v, %v", out.Joined, err)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
