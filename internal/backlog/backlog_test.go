package backlog_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/backlog"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func newEstimator(rdb redis.UniversalClient, capacity int, c *testclock.Clock) *backlog.Estimator {
	return backlog.New(backlog.Options{Redis: rdb, Queue: tasks.QueueSnapshot, Capacity: capacity, Now: c.Now})
}

func TestWait(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		calls    int64
		capacity int
		n        int
		want     time.Duration
	}{
		{"empty", 0, 4, 1, 0},
		{"a free slot for each call", 1, 4, 3, 0},
		{"one call beyond the capacity", 4, 4, 1, 250 * time.Millisecond},
		{"n 0 is one call", 4, 4, 0, 250 * time.Millisecond},
		{"the last of a job's calls", 10, 4, 6, 3 * time.Second},
		{"capacity 0 counts as 1", 2, 0, 1, 2 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := backlog.Reading{Calls: tt.calls, Capacity: tt.capacity, Typical: time.Second}
			if got := r.Wait(tt.n); got != tt.want {
				t.Fatalf("Wait(%d) of %d calls at capacity %d = %s, want %s", tt.n, tt.calls, tt.capacity, got, tt.want)
			}
		})
	}
}

// enqueue puts n member tasks on the snapshot queue, with opts.
func enqueue(t *testing.T, c *asynq.Client, prefix string, n int, opts ...asynq.Option) {
	t.Helper()
	for i := range n {
		o := append([]asynq.Option{asynq.Queue(tasks.QueueSnapshot), asynq.TaskID(prefix + strconv.Itoa(i))}, opts...)
		if _, err := c.Enqueue(asynq.NewTask(tasks.TypeMember, []byte(prefix)), o...); err != nil {
			t.Fatal(err)
		}
	}
}

// The backlog counts the member queue's tasks in every state but done:
// pending, active (running), retry (handed back) and scheduled, as asynq
// itself counts them.
func TestReadCountsTheQueue(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	c := testclock.New(time.Now())
	e := newEstimator(db.Client, 2, c)
	ctx := t.Context()

	r, err := e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls != 0 || r.Capacity != 2 || r.Typical != backlog.DefaultCall || r.FromSamples {
		t.Fatalf("empty queue: %+v", r)
	}

	cl := asynq.NewClientFromRedisClient(db.NewClient(t))
	// Two tasks run and block, one fails into retry.
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(db.NewClient(t), asynq.Config{
		Concurrency: 3, Queues: map[string]int{tasks.QueueSnapshot: 1},
		TaskCheckInterval: time.Millisecond, LogLevel: asynq.FatalLevel, ShutdownTimeout: 5 * time.Second,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeMember, func(ctx context.Context, task *asynq.Task) error {
		if string(task.Payload()) == "fail" {
			return errors.New("no capacity")
		}
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	t.Cleanup(func() { close(release) })
	enqueue(t, cl, "run", 2)
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the tasks did not start")
		}
	}
	enqueue(t, cl, "fail", 1, asynq.MaxRetry(5))
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	waitFor(t, "the failed task in retry", func() bool {
		info, err := insp.GetQueueInfo(tasks.QueueSnapshot)
		return err == nil && info.Retry == 1
	})
	// The server runs no more: its three workers are taken or the
	// queue's remaining tasks are not due.
	srv.Stop()
	enqueue(t, cl, "pending", 5)
	enqueue(t, cl, "later", 3, asynq.ProcessIn(time.Hour))

	c.Advance(time.Second) // the first reading is too old now
	r, err = e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := insp.GetQueueInfo(tasks.QueueSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(info.Pending + info.Active + info.Retry + info.Scheduled)
	if want != 2+1+5+3 || r.Calls != want {
		t.Fatalf("backlog %d, asynq counts %+v (want 11)", r.Calls, info)
	}
	// 11 calls at capacity 2: one more waits for 10 of them to end.
	if w := r.Wait(1); w != 5*backlog.DefaultCall {
		t.Fatalf("wait %s, want %s", w, 5*backlog.DefaultCall)
	}
}

// waitFor polls cond until it holds; nothing signals a task's move to
// retry.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		tick := time.NewTimer(5 * time.Millisecond)
		<-tick.C
	}
}

// Within MaxAge one reading serves, and the calls counted since are added
// to it: each Take sees the calls of the Takes before it, a Return gives
// them back, and a new reading counts what the queue holds instead, plus
// the calls counted and not queued yet.
func TestTakeSeesItsOwnGrowth(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	c := testclock.New(time.Now())
	e := newEstimator(db.Client, 4, c)
	ctx := t.Context()
	cl := asynq.NewClientFromRedisClient(db.NewClient(t))
	enqueue(t, cl, "a", 3)

	first, err := e.Take(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// 3 + 2 calls: the last one is one beyond the 4 slots.
	if first.Calls != 3 || first.Wait != backlog.DefaultCall/4 {
		t.Fatalf("first take: calls %d wait %s", first.Calls, first.Wait)
	}
	second, err := e.Take(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if second.Calls != 5 || second.Wait != 3*backlog.DefaultCall/4 {
		t.Fatalf("second take: calls %d wait %s", second.Calls, second.Wait)
	}
	e.Return(2)
	if r, _ := e.Read(ctx); r.Calls != 5 {
		t.Fatalf("after Return: %d calls, want 5", r.Calls)
	}
	// The first take's calls are queued now (the api says so with Queued
	// once its enqueue returned); the next reading counts them in the
	// queue, not twice.
	enqueue(t, cl, "b", 2)
	e.Queued(2)
	c.Advance(time.Second)
	if r, _ := e.Read(ctx); r.Calls != 5 {
		t.Fatalf("new reading: %d calls, want 5", r.Calls)
	}
	// Calls counted but not queued yet when the queue is read (a burst's
	// jobs take turns to queue theirs) count too.
	if _, err := e.Take(ctx, 2); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	if r, _ := e.Read(ctx); r.Calls != 7 {
		t.Fatalf("reading with 2 calls not queued yet: %d calls, want 7", r.Calls)
	}
}

// A burst of concurrent submissions costs Redis one reading, and each sees
// the calls of those counted before it: their backlogs are all different.
func TestBurstSharesOneReading(t *testing.T) {
	t.Parallel()
	rdb := redistest.Own(t)
	c := testclock.New(time.Now())
	e := newEstimator(rdb, 8, c)
	const burst = 500
	seen := make([]int64, burst)
	total, by := redistest.CommandsOf(t, rdb, func() {
		var wg sync.WaitGroup
		for i := range burst {
			wg.Go(func() {
				est, err := e.Take(t.Context(), 1)
				if err != nil {
					t.Error(err)
					return
				}
				seen[i] = est.Calls
			})
		}
		wg.Wait()
	})
	// One pipeline of the queue (2 LLEN, 2 ZCARD) and one LRANGE of the
	// finished jobs.
	if total != 5 || by["llen"] != 2 || by["zcard"] != 2 || by["lrange"] != 1 {
		t.Fatalf("%d commands for a burst of %d: %v", total, burst, by)
	}
	got := map[int64]bool{}
	for _, n := range seen {
		got[n] = true
	}
	if len(got) != burst {
		t.Fatalf("%d different backlogs among %d takes", len(got), burst)
	}
	if r, _ := e.Read(t.Context()); r.Calls != burst {
		t.Fatalf("after the burst: %d calls, want %d", r.Calls, burst)
	}
}

// The typical call is the median member duration of the jobs that
// finished within the window; it is read again after TypicalMaxAge.
func TestTypicalCall(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	c := testclock.New(time.Now())
	e := newEstimator(db.Client, 1, c)
	ctx := t.Context()
	m := monitoring.New(db.Client)
	now := c.Now()
	for _, s := range []monitoring.Sample{
		{JobID: "old", At: now.Add(-time.Hour).UnixMilli(), Members: []int64{90000}},
		{JobID: "a", At: now.UnixMilli(), Members: []int64{100, 300}},
		{JobID: "b", At: now.UnixMilli(), Noun: "answer", Members: []int64{200, 400}},
	} {
		if err := m.Record(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Typical != 250*time.Millisecond || !r.FromSamples {
		t.Fatalf("typical %s (from samples %v), want 250ms", r.Typical, r.FromSamples)
	}
	if err := m.Record(ctx, monitoring.Sample{JobID: "c", At: now.UnixMilli(), Members: []int64{5000, 5000, 5000, 5000, 5000}}); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	if r, _ := e.Read(ctx); r.Typical != 250*time.Millisecond {
		t.Fatalf("read again within TypicalMaxAge: %s", r.Typical)
	}
	c.Advance(backlog.DefaultTypicalMaxAge)
	if r, _ := e.Read(ctx); r.Typical != 5*time.Second {
		t.Fatalf("read again after TypicalMaxAge: %s, want 5s", r.Typical)
	}
}

// A Redis that cannot be read is an error, and counts nothing.
func TestReadError(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	rdb := db.NewClient(t)
	e := newEstimator(rdb, 1, testclock.New(time.Now()))
	_ = rdb.Close()
	if _, err := e.Take(t.Context(), 3); err == nil {
		t.Fatal("no error from a closed client")
	}
	e2 := newEstimator(db.Client, 1, testclock.New(time.Now()))
	if r, err := e2.Read(t.Context()); err != nil || r.Calls != 0 {
		t.Fatalf("%+v %v", r, err)
	}
}
