package liveness

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

type run struct {
	worker  string
	retried int
}

// A worker that stops renewing its lease (it died) has the task it was
// running moved back to the queue by another worker's reaper, without
// using up a retry; the other worker runs it; the first, if it was alive
// after all, learns it was given up for dead and its run stops.
func TestReaperRequeuesDeadWorkersTask(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	const queue = "q"
	ttl := 200 * time.Millisecond
	dead := New(db.NewClient(t), Options{ID: "dead", TTL: ttl, Renew: ttl / 2})
	alive := New(db.NewClient(t), Options{ID: "alive", TTL: ttl, Renew: ttl / 2})

	runs := make(chan run, 4)
	stopped := make(chan error, 1)
	handler := func(worker string) asynq.HandlerFunc {
		return func(ctx context.Context, t *asynq.Task) error {
			n, _ := asynq.GetRetryCount(ctx)
			runs <- run{worker: worker, retried: n}
			if worker == "dead" {
				<-ctx.Done()
				stopped <- context.Cause(ctx)
			}
			return nil
		}
	}
	serve := func(r *Registry, worker string) *asynq.Server {
		srv := asynq.NewServerFromRedisClient(db.NewClient(t), asynq.Config{
			Concurrency: 1, Queues: map[string]int{queue: 1}, TaskCheckInterval: 20 * time.Millisecond,
			LogLevel: asynq.FatalLevel, ShutdownTimeout: 5 * time.Second,
		})
		mux := asynq.NewServeMux()
		mux.Use(r.Middleware)
		mux.HandleFunc("t", handler(worker))
		if err := srv.Start(mux); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}

	dead.renew(ctx) // its lease, never renewed again
	serve(dead, "dead")
	client := asynq.NewClientFromRedisClient(db.NewClient(t))
	if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID("task-1"), asynq.MaxRetry(3)); err != nil {
		t.Fatal(err)
	}
	if r := <-runs; r.worker != "dead" {
		t.Fatalf("first run on %s", r.worker)
	}
	// The claim is written as the handler starts.
	waitFor(t, "the run's claim", func() bool { return db.Client.HLen(ctx, claimsPrefix+"dead").Val() == 1 })

	serve(alive, "alive")
	// The alive worker has been healthy for a lease's length.
	alive.renew(ctx)
	alive.mu.Lock()
	alive.healthySince = time.Now().Add(-ttl)
	alive.mu.Unlock()
	// The dead worker's lease lapsed (its score is an expiry time).
	if err := db.Client.ZAdd(ctx, workersKey, redis.Z{Score: 1, Member: "dead"}).Err(); err != nil {
		t.Fatal(err)
	}
	alive.reap(ctx)
	second := <-runs
	if second.worker != "alive" || second.retried != 0 {
		t.Fatalf("second run %+v, want on the alive worker with no retry used", second)
	}
	if n, _ := db.Client.ZScore(ctx, workersKey, "dead").Result(); n != 0 {
		t.Fatal("the dead worker is still listed")
	}
	// The "dead" worker renews after all: its run stops.
	dead.renew(ctx)
	if cause := <-stopped; !errors.Is(cause, ErrGivenUp) {
		t.Fatalf("the given-up run stopped with %v, want ErrGivenUp", cause)
	}
}

// Leases that lapsed while Redis was out of reach are not deaths: a
// worker that has not been healthy for a lease's length does not reap.
func TestNoReapingRightAfterAnOutage(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	ttl := 100 * time.Millisecond
	other := New(db.NewClient(t), Options{ID: "other", TTL: ttl})
	me := New(db.NewClient(t), Options{ID: "me", TTL: time.Hour})
	other.renew(ctx)
	if _, err := db.Client.HSet(ctx, claimsPrefix+"other", claimField("q", "x"), 1).Result(); err != nil {
		t.Fatal(err)
	}
	// The other's lease lapsed (during the outage).
	if err := db.Client.ZAdd(ctx, workersKey, redis.Z{Score: 1, Member: "other"}).Err(); err != nil {
		t.Fatal(err)
	}
	if ids, ok := me.renewScan(ctx, true); !ok || len(ids) != 1 || ids[0] != "other" {
		t.Fatalf("expired leases %v (renewed: %v): want the other's", ids, ok)
	}
	me.renew(ctx) // healthy since just now, with a one-hour lease
	me.reap(ctx)
	if n, _ := db.Client.HLen(ctx, claimsPrefix+"other").Result(); n != 1 {
		t.Fatal("a worker that just recovered reaped another")
	}
}

// A worker whose lease Redis lost (restarted empty) records its running
// tasks again.
func TestLostLeaseRecordsClaimsAgain(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	r := New(db.NewClient(t), Options{ID: "w"})
	r.renew(ctx)
	r.mu.Lock()
	r.claims[claimField("q", "t1")] = func(error) {}
	r.mu.Unlock()
	if err := db.Client.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r.renew(ctx)
	if ok, _ := db.Client.HExists(ctx, claimsPrefix+"w", claimField("q", "t1")).Result(); !ok {
		t.Fatal("claim not recorded again after Redis lost it")
	}
}

// A task that is active in asynq but claimed by no live worker (its
// dequeue's reply was lost as Redis went down) goes back to its queue
// after the grace; a claimed one stays.
func TestOrphanedActiveTaskGoesBack(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	const queue = "q"
	ttl := 50 * time.Millisecond
	r := New(db.NewClient(t), Options{ID: "reaper", TTL: ttl, Queues: []string{queue}})
	other := New(db.NewClient(t), Options{ID: "other", TTL: time.Hour})
	other.renew(ctx)
	p := "asynq:{" + queue + "}:"
	for _, id := range []string{"orphan", "claimed"} {
		if err := db.Client.LPush(ctx, p+"active", id).Err(); err != nil {
			t.Fatal(err)
		}
		if err := db.Client.HSet(ctx, p+"t:"+id, "state", "active").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Client.HSet(ctx, claimsPrefix+"other", claimField(queue, "claimed"), 1).Err(); err != nil {
		t.Fatal(err)
	}
	r.reapOrphans(ctx) // first sight: within its grace
	if n, _ := db.Client.LLen(ctx, p+"pending").Result(); n != 0 {
		t.Fatal("an unclaimed task moved before its grace")
	}
	r.mu.Lock()
	r.unclaimed[claimField(queue, "orphan")] = time.Now().Add(-orphanGraceLeases * ttl)
	r.mu.Unlock()
	r.reapOrphans(ctx)
	pending, _ := db.Client.LRange(ctx, p+"pending", 0, -1).Result()
	active, _ := db.Client.LRange(ctx, p+"active", 0, -1).Result()
	if len(pending) != 1 || pending[0] != "orphan" || len(active) != 1 || active[0] != "claimed" {
		t.Fatalf("pending %v, active %v: want the orphan pending, the claimed task active", pending, active)
	}
	if st, _ := db.Client.HGet(ctx, p+"t:orphan", "state").Result(); st != "pending" {
		t.Fatalf("orphan state %q, want pending", st)
	}
}

// countScripts is a go-redis hook that counts the scripts sent (the
// lock's trips to Redis) and fails them while fail is on.
type countScripts struct {
	sent atomic.Int32
	fail atomic.Bool
}

func (c *countScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *countScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *countScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "evalsha" && cmd.Name() != "eval" {
			return next(ctx, cmd)
		}
		c.sent.Add(1)
		if c.fail.Load() {
			cmd.SetErr(errors.New("CLUSTERDOWN The cluster is down"))
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

// One holder at a time; the holder extends its lock, going to Redis only
// once a third of the TTL has passed since its last extension was sent;
// a refusal or a failure forgets the hold; a lapsed or released lock is
// taken by another.
func TestLock(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	// The locks' clock is the test's; Redis's expiry is real, and far.
	const ttl = time.Minute
	start := time.Now()
	clock := start
	locks := map[string]*Lock{}
	hooks := map[string]*countScripts{}
	for _, holder := range []string{"a", "b"} {
		rdb := db.NewClient(t)
		hooks[holder] = &countScripts{}
		rdb.AddHook(hooks[holder])
		locks[holder] = NewLock(rdb, "lock", holder, ttl)
		locks[holder].now = func() time.Time { return clock }
	}
	for _, step := range []struct {
		name   string
		at     time.Duration // since the start, on the locks' clock
		holder string
		before func() // runs before the step
		want   bool
		sent   bool // the step went to Redis
	}{
		{name: "free lock taken", at: 0, holder: "a", want: true, sent: true},
		{name: "held by another", at: 0, holder: "b", want: false, sent: true},
		{name: "held, from memory", at: ttl/3 - time.Millisecond, holder: "a", want: true},
		{name: "extended after a third of ttl", at: ttl / 3, holder: "a", want: true, sent: true},
		{name: "extension remembered", at: ttl/3 + ttl/3 - time.Millisecond, holder: "a", want: true},
		{name: "still held by a", at: ttl, holder: "b", want: false, sent: true},
		{name: "failure forgets the hold", at: ttl + ttl/3, holder: "a", before: func() { hooks["a"].fail.Store(true) }, want: false, sent: true},
		{name: "asks again after a failure", at: ttl + ttl/3, holder: "a", before: func() { hooks["a"].fail.Store(false) }, want: true, sent: true},
		{name: "lapsed lock taken by another", at: ttl + ttl/3, holder: "b", before: func() {
			if err := db.Client.Del(ctx, "lock").Err(); err != nil {
				t.Fatal(err)
			}
		}, want: true, sent: true},
		{name: "refusal forgets the hold", at: 2*ttl - time.Millisecond, holder: "a", want: false, sent: true},
		{name: "asks again after a refusal", at: 2*ttl - time.Millisecond, holder: "a", want: false, sent: true},
		{name: "released lock taken by another", at: 2 * ttl, holder: "a", before: func() { locks["b"].Release(ctx) }, want: true, sent: true},
		{name: "release by another leaves the lock", at: 2*ttl + ttl/3, holder: "a", before: func() {
			locks["b"].Release(ctx)
			if v, err := db.Client.Get(ctx, "lock").Result(); v != "a" {
				t.Fatalf("lock %q (%v) after another's release, want a's", v, err)
			}
		}, want: true, sent: true},
	} {
		if step.before != nil {
			step.before()
		}
		clock = start.Add(step.at)
		n := hooks[step.holder].sent.Load()
		got := locks[step.holder].Held(ctx)
		if sent := hooks[step.holder].sent.Load() != n; got != step.want || sent != step.sent {
			t.Fatalf("%s: Held by %s = %v (went to Redis: %v), want %v (%v)", step.name, step.holder, got, sent, step.want, step.sent)
		}
	}
}

// failHDel is a go-redis hook that fails HDEL while on: Redis out of reach
// for the claim's release only.
type failHDel struct{ on atomic.Bool }

func (f *failHDel) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failHDel) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (f *failHDel) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.on.Load() && cmd.Name() == "hdel" {
			cmd.SetErr(errors.New("CLUSTERDOWN The cluster is down"))
			return cmd.Err()
		}
		return next(ctx, cmd)
	}
}

// A claim whose removal failed as its run ended (a failover under way) is
// removed by the next renewal once Redis answers, so that the reaper can
// take the task for an orphan if asynq could not acknowledge it either; a
// task the worker runs again meanwhile keeps its claim.
func TestClaimReleasedAfterAFailedRemoval(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	rdb := db.NewClient(t)
	hook := &failHDel{}
	rdb.AddHook(hook)
	r := New(rdb, Options{ID: "w"})
	r.renew(ctx)
	ended := make(chan string, 2)
	srv := asynq.NewServerFromRedisClient(db.NewClient(t), asynq.Config{
		Concurrency: 1, Queues: map[string]int{"q": 1}, TaskCheckInterval: 20 * time.Millisecond,
		LogLevel: asynq.FatalLevel, ShutdownTimeout: 5 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.Use(func(next asynq.Handler) asynq.Handler { // outermost: after the claim's release
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := next.ProcessTask(ctx, t)
			id, _ := asynq.GetTaskID(ctx)
			ended <- id
			return err
		})
	})
	mux.Use(r.Middleware)
	mux.HandleFunc("t", func(context.Context, *asynq.Task) error { return nil })
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	client := asynq.NewClientFromRedisClient(db.NewClient(t))
	run := func(queue, id string) {
		t.Helper()
		if _, err := client.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
		if got := <-ended; got != id {
			t.Fatalf("ran %s, want %s", got, id)
		}
	}
	hook.on.Store(true)
	run("q", "ended")
	run("q", "again")
	// Both claims were written (as their handlers started) and their
	// removals failed.
	waitFor(t, "two claims left by the failed removals", func() bool { return db.Client.HLen(ctx, claimsPrefix+"w").Val() == 2 })
	// "again" runs once more on this worker when Redis is back.
	r.mu.Lock()
	r.claims[claimField("q", "again")] = func(error) {}
	r.mu.Unlock()
	hook.on.Store(false)
	r.renew(ctx)
	if ok, _ := db.Client.HExists(ctx, claimsPrefix+"w", claimField("q", "ended")).Result(); ok {
		t.Fatal("the ended run's claim is still recorded after a renewal with Redis back")
	}
	if ok, _ := db.Client.HExists(ctx, claimsPrefix+"w", claimField("q", "again")).Result(); !ok {
		t.Fatal("the claim of a task running again was removed")
	}
}

// At the defaults, the reaper looks every second and holds its lock for
// 3 s, so that it extends the lock about once a reap.
func TestReaperCadence(t *testing.T) {
	if got := reapEvery * DefaultRenew; got != time.Second {
		t.Fatalf("reaps every %s, want 1s", got)
	}
	if got := reaperLockTTL(DefaultRenew); got != 3*time.Second {
		t.Fatalf("reaper lock TTL %s, want 3s", got)
	}
}

// waitFor polls cond until it holds; a minute without is a failure. For
// what the code under test writes from a goroutine of its own (a run's
// claim), with nothing to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
		<-tick.C
	}
}
