package wakeup

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestClassify(t *testing.T) {
	ctx := context.Background()
	evalsha := func(keys ...string) redis.Cmder {
		args := []any{"evalsha", "0123", len(keys)}
		for _, k := range keys {
			args = append(args, k)
		}
		return redis.NewCmd(ctx, append(args, "argv1", 2)...)
	}
	tests := []struct {
		name    string
		cmd     redis.Cmder
		dequeue string
		filled  []string
	}{
		{"dequeue", evalsha("asynq:{snapshot}:pending", "asynq:{snapshot}:paused", "asynq:{snapshot}:active", "asynq:{snapshot}:lease"), "snapshot", nil},
		{"enqueue", evalsha("asynq:{snapshot}:t:abc", "asynq:{snapshot}:pending"), "", []string{"snapshot"}},
		{"forward", evalsha("asynq:{aggregate}:scheduled", "asynq:{aggregate}:pending"), "", []string{"aggregate"}},
		{"requeue", evalsha("asynq:{q}:active", "asynq:{q}:lease", "asynq:{q}:pending", "asynq:{q}:t:x"), "", []string{"q"}},
		{"schedule names no pending list", evalsha("asynq:{q}:t:x", "asynq:{q}:scheduled"), "", nil},
		{"a script of ours", evalsha("tt:{job}:h", "tt:{job}:events"), "", nil},
		{"four keys, not asynq's dequeue", evalsha("asynq:{q}:pending", "asynq:{q}:active", "asynq:{q}:lease", "asynq:{q}:t:x"), "", []string{"q"}},
		{"an empty queue name", evalsha("asynq:{}:pending"), "", nil},
		{"eval", redis.NewCmd(ctx, "eval", "return 1", 1, "asynq:{w}:pending"), "", []string{"w"}},
		{"not a script", redis.NewCmd(ctx, "lpush", "asynq:{q}:pending", "x"), "", nil},
		{"numkeys past the arguments", redis.NewCmd(ctx, "evalsha", "0123", 3, "asynq:{q}:pending"), "", nil},
		{"numkeys not a number", redis.NewCmd(ctx, "evalsha", "0123", "1", "asynq:{q}:pending"), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dq, filled := classify(tt.cmd)
			if dq != tt.dequeue || len(filled) != len(tt.filled) {
				t.Fatalf("classify = %q, %v; want %q, %v", dq, filled, tt.dequeue, tt.filled)
			}
			for i := range filled {
				if filled[i] != tt.filled[i] {
					t.Fatalf("filled %v, want %v", filled, tt.filled)
				}
			}
		})
	}
}

// pickupGuard bounds the wait for a task the server should run within
// milliseconds; the tests fail by it only when the mechanism is broken.
const pickupGuard = 20 * time.Second

// probe watches asynq's dequeues of one server: how many times each of
// its dequeue calls ran the script, and when a run found the queue empty.
// A call that returns a task after more than one run waited in between:
// it was woken, not polled.
type probe struct {
	// emptied receives the number of the call of each run that found the
	// queue empty (dropped when full: the test reads it as it goes).
	emptied chan int32
	// call numbers asynq's dequeue calls; runs counts the script's runs
	// in the current one. Calls are sequential (one processor loop per
	// server).
	call, runs atomic.Int32
	// found receives, for each call that returned a task, its number and
	// runs.
	found chan [2]int32
}

func newProbe() *probe {
	return &probe{emptied: make(chan int32, 64), found: make(chan [2]int32, 8)}
}

// idleAfter returns once a dequeue call numbered after call has found the
// queue empty: the server is waiting (or polling) on an empty queue.
func (p *probe) idleAfter(call int32) {
	for n := range p.emptied {
		if n > call {
			return
		}
	}
}

// outer sees asynq's calls; inner, each run of the script.
func (p *probe) outer() redis.Hook { return probeHook{p: p, outer: true} }
func (p *probe) inner() redis.Hook { return probeHook{p: p} }

type probeHook struct {
	passThrough
	p     *probe
	outer bool
}

func (h probeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if q, _ := classify(cmd); q == "" {
			return next(ctx, cmd)
		}
		if h.outer {
			n := h.p.call.Add(1)
			h.p.runs.Store(0)
			err := next(ctx, cmd)
			if err == nil {
				h.p.found <- [2]int32{n, h.p.runs.Load()}
			}
			return err
		}
		h.p.runs.Add(1)
		err := next(ctx, cmd)
		if errors.Is(err, redis.Nil) {
			select {
			case h.p.emptied <- h.p.call.Load():
			default:
			}
		}
		return err
	}
}

// waitingServer starts, on a client of db whose dequeues wait for
// announcements for up to idle (and which announces its own moves), an
// asynq server of queue that otherwise polls every millisecond, and
// returns its probe and the ids of the tasks it runs. The Waiter stops
// before the server shuts down, as in the worker: a server whose dequeue
// sits in a wait cannot stop.
func waitingServer(t *testing.T, db redistest.DB, idle time.Duration, queue string, delayedCheck time.Duration) (*probe, <-chan string) {
	t.Helper()
	rdb := db.NewClient(t)
	hub := events.NewHub(rdb, Channel, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hub.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	w := NewWaiter(hub, idle)
	p := newProbe()
	rdb.AddHook(p.outer()) // the first hook added is the outermost
	rdb.AddHook(announcing(t, rdb).Hook())
	rdb.AddHook(w.Hook())
	rdb.AddHook(p.inner())

	ran := make(chan string, 8)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{queue: 1},
		TaskCheckInterval: time.Millisecond, DelayedTaskCheckInterval: delayedCheck,
		LogLevel: asynq.FatalLevel, ShutdownTimeout: time.Second,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		ran <- id
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Stop()
		srv.Shutdown()
	})
	return p, ran
}

// announcing returns an Announcer on rdb, running until the test ends.
func announcing(t *testing.T, rdb redis.UniversalClient) *Announcer {
	t.Helper()
	a := NewAnnouncer(rdb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// expect waits for the server to run task id and, when woken is set,
// checks that the dequeue call that found it had waited (run the script
// more than once). It returns the number of that call.
func expect(t *testing.T, p *probe, ran <-chan string, id string, woken bool, why string) int32 {
	t.Helper()
	select {
	case got := <-ran:
		if got != id {
			t.Fatalf("ran %s, want %s", got, id)
		}
	case <-time.After(pickupGuard):
		t.Fatalf("task %s not run: %s", id, why)
	}
	f := <-p.found
	if woken && f[1] < 2 {
		t.Fatalf("the dequeue that found %s ran the script %d time(s): it polled instead of waiting for the announcement", id, f[1])
	}
	return f[0]
}

// A task enqueued by another process's announcing client wakes the
// server's waiting dequeue, which finds it; so does a second one, after
// the server waited again.
func TestEnqueuedTaskWakesTheWaitingServer(t *testing.T) {
	db := redistest.New(t)
	p, ran := waitingServer(t, db, time.Hour, "q", time.Hour)
	api := db.NewClient(t)
	api.AddHook(announcing(t, api).Hook())
	client := asynq.NewClientFromRedisClient(api)
	var last int32
	for _, id := range []string{"first", "second"} {
		p.idleAfter(last) // the server is idle: a dequeue since the last task found nothing
		if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
		last = expect(t, p, ran, id, true, "the enqueue's announcement did not wake the dequeue")
	}
}

// A task that becomes pending through asynq's forwarder (scheduled, then
// due) is announced by the worker's own client, and wakes its dequeue.
func TestForwardedTaskIsAnnounced(t *testing.T) {
	db := redistest.New(t)
	p, ran := waitingServer(t, db, time.Hour, "q", 50*time.Millisecond)
	p.idleAfter(0)
	client := asynq.NewClientFromRedisClient(db.NewClient(t)) // announces nothing
	if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.TaskID("later"),
		asynq.ProcessIn(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	expect(t, p, ran, "later", true, "the forwarder's move to pending was not announced")
}

// Without any announcement (an enqueuing client without the hook, or a
// lost message), the wait ends after the idle wait and the poll finds the
// task.
func TestIdleWaitBoundsAMissedAnnouncement(t *testing.T) {
	db := redistest.New(t)
	p, ran := waitingServer(t, db, 20*time.Millisecond, "q", time.Hour)
	p.idleAfter(0)
	client := asynq.NewClientFromRedisClient(db.NewClient(t)) // announces nothing
	if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.TaskID("quiet")); err != nil {
		t.Fatal(err)
	}
	expect(t, p, ran, "quiet", false, "the idle wait did not end")
}

// blockingWatcher never signals.
type blockingWatcher struct{}

func (blockingWatcher) Watch(string) (<-chan struct{}, func()) { return nil, func() {} }

// Stop ends a wait under way at once (the dequeue returns empty), and
// later dequeues pass straight through.
func TestStopEndsTheWait(t *testing.T) {
	w := NewWaiter(blockingWatcher{}, time.Hour)
	calls := 0
	next := w.Hook().ProcessHook(func(context.Context, redis.Cmder) error {
		calls++
		return redis.Nil
	})
	dequeue := redis.NewCmd(context.Background(), "evalsha", "0123", 4,
		"asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease", 1, "asynq:{q}:t:")
	done := make(chan error, 1)
	go func() { done <- next(context.Background(), dequeue) }()
	w.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, redis.Nil) {
			t.Fatalf("the ended wait returned %v, want redis.Nil", err)
		}
	case <-time.After(pickupGuard):
		t.Fatal("Stop did not end the wait")
	}
	if err := next(context.Background(), dequeue); !errors.Is(err, redis.Nil) || calls != 2 {
		t.Fatalf("after Stop: %v after %d calls, want redis.Nil after 2", err, calls)
	}
}

// A dequeue that finds a task, or fails, returns at once; so does any
// other command.
func TestNoWaitUnlessEmpty(t *testing.T) {
	w := NewWaiter(blockingWatcher{}, time.Hour)
	boom := errors.New("boom")
	for _, want := range []error{nil, boom} {
		next := w.Hook().ProcessHook(func(context.Context, redis.Cmder) error { return want })
		dequeue := redis.NewCmd(context.Background(), "evalsha", "0123", 4,
			"asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease")
		if err := next(context.Background(), dequeue); !errors.Is(err, want) && err != want {
			t.Fatalf("dequeue returned %v, want %v", err, want)
		}
	}
}

// Marks made while no publish runs are published together, once per
// queue; a mark made after a publish is published again.
func TestAnnouncerCoalesces(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	sub := db.NewClient(t).Subscribe(ctx, Channel)
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	a := NewAnnouncer(db.NewClient(t))
	a.mark([]string{"snapshot"})
	a.mark([]string{"snapshot", "aggregate"})
	a.mark([]string{"snapshot"})
	a.publish(ctx)
	a.publish(ctx) // nothing marked since: nothing published
	a.mark([]string{"snapshot"})
	a.publish(ctx)
	if err := db.Client.Publish(ctx, Channel, "end").Err(); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Payload == "end" {
			break
		}
		got[msg.Payload]++
	}
	if got["snapshot"] != 2 || got["aggregate"] != 1 {
		t.Fatalf("announcements %v, want snapshot twice (before and after the first publish) and aggregate once", got)
	}
}
