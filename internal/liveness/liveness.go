// Package liveness gets a dead worker's tasks running again in seconds.
//
// asynq recovers the tasks of a worker that died only when their lease has
// expired (30 s) and its recoverer next looks (every minute): a job whose
// worker was killed waited one to two minutes. Here each worker process
// holds a short liveness lease in Redis (TTL, default 2 s, renewed every
// half second) and records each task it runs as a claim next to it; a reaper
// (any worker, one at a time through a Redis lock) moves the claimed tasks
// of a worker whose lease expired back to their queue's pending list, as
// asynq itself does when a server shuts down, so another worker runs them
// at once. asynq's own recovery stays as the backstop.
//
// A run of a task that was taken over this way may still be alive (a
// worker that stalled past its lease): its writes are fenced by the
// store's claims, and when the worker learns it was given up for dead it
// stops the runs it holds.
//
// All keys share the hash tag {workers}, so that the scripts work on Redis
// Cluster.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Keys.
const (
	workersKey   = "tt:{workers}"
	claimsPrefix = "tt:{workers}:claims:"
	reapedPrefix = "tt:{workers}:reaped:"
	lockKey      = "tt:{workers}:reaper"
)

// Defaults of Options.
const (
	// A lease outlives four renewals: a worker must stall for 1.5 s before
	// it can be taken for dead. The reaper looks every reapEvery renewals
	// (1 s), so a dead worker is found within about 3 s of its last
	// renewal; within about 4 s when it was the reaper itself, whose lock
	// (reaperLockTTL, 3 s) must lapse first.
	DefaultTTL   = 2 * time.Second
	DefaultRenew = 500 * time.Millisecond
	// reapedTTL keeps the mark of a reaped worker long enough for it to
	// notice, if it is alive after all.
	reapedTTL = time.Minute
	// claimsTTL bounds the life of a claims hash whose worker vanished
	// without being reaped (e.g. Redis lost the lease).
	claimsTTL = 24 * time.Hour
)

// ErrGivenUp is the cancellation cause of a task run whose worker was
// given up for dead: another worker runs the task now.
var ErrGivenUp = errors.New("worker given up for dead; its task runs elsewhere")

// Options configure a Registry.
type Options struct {
	// ID names the worker process; empty: a random one.
	ID string
	// TTL is the liveness lease; Renew how often it is renewed. Zero:
	// DefaultTTL, DefaultRenew.
	TTL, Renew time.Duration
	Log        *slog.Logger
	// OnReap is called with the number of tasks each reaping moved back
	// (metrics); may be nil. worker is empty for orphans.
	OnReap func(worker string, tasks int)
	// Queues are the queues whose active tasks the reaper checks for
	// orphans: active in asynq, claimed by no live worker (a dequeue whose
	// reply Redis lost as it went down, a worker that died before its
	// claim was written). Empty: no such check.
	Queues []string
}

// orphanGrace is how long an active task may stay unclaimed before the
// reaper takes it for an orphan: far longer than the moment between
// asynq's dequeue and the claim, or between the claim's release and
// asynq's acknowledgement.
const orphanGraceLeases = 2

// orphanScanEvery is how many reaps pass between two scans for orphans
// (2 s at the defaults). A scan reads every worker's claims and every
// queue's active list; an orphan waits for its grace (two leases) anyway,
// so a scan every lease's length finds it as soon, at a fraction of the
// idle Redis load.
const orphanScanEvery = 2

// reapEvery is how many renewals pass between two reaps (1 s at the
// defaults): a reap costs Redis commands even when no one died, and a
// dead worker's lease lapses only a lease's length (four renewals) after
// its last renewal anyway, so looking every other renewal delays finding
// it by half a second at most.
const reapEvery = 2

// reaperLockTTL is the reaper's lock TTL for a renewal period renew: three
// reaps' length (3 s at the defaults), so that the reaper extends it about
// every reap (Lock goes to Redis once a third of it has passed) and a
// reaper that died is replaced within about that long.
func reaperLockTTL(renew time.Duration) time.Duration { return 3 * reapEvery * renew }

// Registry is one worker process's lease and claims, and its share of the
// reaping. It is safe for concurrent use.
type Registry struct {
	rdb redis.UniversalClient
	o   Options

	mu     sync.Mutex
	claims map[string]context.CancelCauseFunc // claim field -> its run
	// healthySince is when renewals last started succeeding in a row; zero
	// while they fail. A reaper only judges others after a lease's length
	// of health, so that leases that lapsed during a Redis outage (when no
	// one could renew) are not taken for deaths.
	healthySince time.Time
	// unclaimed: active tasks seen without a claim, and since when (this
	// process's reaper's view).
	unclaimed map[string]time.Time
	// reaps counts this process's reaps (orphanScanEvery).
	reaps int
	// lock makes one worker at a time the reaper.
	lock *Lock
	// unreleased: claims of ended runs whose removal from Redis failed
	// (Redis out of reach, a failover). Left there, such a claim would keep
	// the reaper off a task asynq could not acknowledge either (it stays
	// active) until asynq's own recovery, one to two minutes later; renew
	// removes them once Redis answers.
	unreleased map[string]bool
}

// New returns the Registry of one worker process on rdb.
func New(rdb redis.UniversalClient, o Options) *Registry {
	if o.ID == "" {
		o.ID = uuid.NewString()
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Renew <= 0 {
		o.Renew = DefaultRenew
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		rdb: rdb, o: o, claims: map[string]context.CancelCauseFunc{}, unclaimed: map[string]time.Time{}, unreleased: map[string]bool{},
		lock: NewLock(rdb, lockKey, o.ID, reaperLockTTL(o.Renew)),
	}
}

// ID returns the worker's id.
func (r *Registry) ID() string { return r.o.ID }

func claimField(queue, taskID string) string { return queue + "\x00" + taskID }

// Middleware records each task run as a claim of this worker for as long
// as its handler runs (written as the handler starts, removed after it
// returns), and stops the run (context cause ErrGivenUp) if the
// worker is given up for dead meanwhile. A claim that cannot be written
// (Redis trouble) does not stop the run: asynq's recovery remains.
func (r *Registry) Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, ok1 := asynq.GetTaskID(ctx)
		queue, ok2 := asynq.GetQueueName(ctx)
		if !ok1 || !ok2 {
			return next.ProcessTask(ctx, t)
		}
		field := claimField(queue, id)
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		r.mu.Lock()
		r.claims[field] = cancel
		r.mu.Unlock()
		// The claim is written while the handler starts, not before: a
		// round trip less on every task's path. A worker that dies before
		// the write lands leaves an active task without a claim, which the
		// orphan scan moves back (Options.Queues), as it does for a worker
		// that died between asynq's dequeue and the claim.
		claimed := make(chan struct{})
		go func() {
			defer close(claimed)
			wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer wcancel()
			if err := r.rdb.HSet(wctx, claimsPrefix+r.o.ID, field, time.Now().UnixMilli()).Err(); err != nil {
				r.o.Log.Warn("could not record the task's claim; asynq's recovery covers it", "task_id", id, "err", err)
			}
		}()
		defer func() {
			<-claimed // the release must not overtake the claim
			r.mu.Lock()
			delete(r.claims, field)
			r.mu.Unlock()
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer dcancel()
			if err := r.rdb.HDel(dctx, claimsPrefix+r.o.ID, field).Err(); err != nil {
				r.mu.Lock()
				r.unreleased[field] = true
				r.mu.Unlock()
			}
		}()
		err := next.ProcessTask(ctx, t)
		if errors.Is(context.Cause(ctx), ErrGivenUp) {
			// Another worker runs it now; whatever asynq does with this
			// run's end, the store's fencing makes it count once.
			return nil
		}
		return err
	})
}

// renewScript: KEYS[1] workers, KEYS[2] the reaped mark of ARGV[1];
// ARGV[1] id, ARGV[2] TTL ms, ARGV[3] "1" to also list the workers whose
// lease expired. Renews the lease on Redis's clock. Returns the outcome:
// 'reaped' when the worker was given up for dead (and clears the mark),
// 'new' when its lease was missing (Redis lost it), else 'ok'; followed,
// when asked, by the ids of the other workers whose lease expired, on
// Redis's clock. The reaper's scan rides on its renewal: it costs one
// command instead of a script of its own and a second read of the clock.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reaped = redis.call('DEL', KEYS[2])
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local out = {'ok'}
if reaped == 1 then out[1] = 'reaped' elseif added == 1 then out[1] = 'new' end
if ARGV[3] == '1' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    if id ~= ARGV[1] then table.insert(out, id) end
  end
end
return out
`)

// requeueScript moves an active task back to its queue's pending list,
// exactly as asynq does for the tasks of a server that shuts down (its
// rdb.Requeue), without counting a retry. KEYS: asynq's active list, lease
// set, pending list and task hash of the queue; ARGV[1] the task id.
// Returns 0 when the task is not active (it ended, or was recovered).
var requeueScript = redis.NewScript(`
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], 'state', 'pending')
return 1
`)

// Run holds the lease and takes part in reaping until ctx ends; then it
// gives the lease up (a worker that stops cleanly hands its tasks back
// through asynq). Run it for the life of the worker's asynq servers, and
// end it after they shut down.
func (r *Registry) Run(ctx context.Context) error {
	tick := time.NewTicker(r.o.Renew)
	defer tick.Stop()
	for n := 0; ; n++ {
		if n%reapEvery == 0 {
			r.reap(ctx) // renews too
		} else {
			r.renew(ctx)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = r.rdb.ZRem(dctx, workersKey, r.o.ID).Err()
			// Another worker becomes the reaper at its next reap rather
			// than once the lock lapses.
			r.lock.Release(dctx)
			return nil
		case <-tick.C:
		}
	}
}

// renew renews the worker's lease.
func (r *Registry) renew(ctx context.Context) { r.renewScan(ctx, false) }

// renewScan renews the worker's lease and, when scan is set, returns the
// other workers whose lease expired; false when the renewal failed.
func (r *Registry) renewScan(ctx context.Context, scan bool) (dead []string, ok bool) {
	rctx, cancel := context.WithTimeout(ctx, r.o.Renew)
	defer cancel()
	flag := "0"
	if scan {
		flag = "1"
	}
	out, err := renewScript.Run(rctx, r.rdb, []string{workersKey, reapedPrefix + r.o.ID}, r.o.ID, r.o.TTL.Milliseconds(), flag).StringSlice()
	if err == nil && len(out) == 0 {
		err = errors.New("empty reply to the renewal")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.healthySince != (time.Time{}) {
			r.o.Log.Warn("could not renew the worker's liveness lease", "worker_id", r.o.ID, "err", err)
		}
		r.healthySince = time.Time{}
		return nil, false
	}
	if r.healthySince.IsZero() {
		r.healthySince = time.Now()
	}
	res, dead := out[0], out[1:]
	switch res {
	case "reaped":
		r.o.Log.Warn("this worker was given up for dead; stopping the tasks it ran", "worker_id", r.o.ID, "tasks", len(r.claims))
		for field, cancel := range r.claims {
			cancel(ErrGivenUp)
			delete(r.claims, field)
		}
	case "new":
		// Redis lost the lease (restarted empty): record the runs again.
		if len(r.claims) > 0 {
			args := make([]any, 0, 2*len(r.claims))
			for field := range r.claims {
				args = append(args, field, time.Now().UnixMilli())
			}
			if err := r.rdb.HSet(rctx, claimsPrefix+r.o.ID, args...).Err(); err != nil {
				r.o.Log.Warn("could not record the task claims again", "err", err)
			}
		}
	}
	r.releaseStale(rctx)
	// Without runs (or claims left to remove) the hash is gone: Redis
	// deletes a hash with its last field, and an idle worker sends nothing.
	if len(r.claims) > 0 || len(r.unreleased) > 0 {
		_ = r.rdb.Expire(rctx, claimsPrefix+r.o.ID, claimsTTL).Err()
	}
	return dead, true
}

// releaseStale removes the claims whose removal failed when their run
// ended, except those of tasks this worker runs again meanwhile. Called
// with r.mu held.
func (r *Registry) releaseStale(ctx context.Context) {
	if len(r.unreleased) == 0 {
		return
	}
	fields := make([]string, 0, len(r.unreleased))
	for f := range r.unreleased {
		if _, running := r.claims[f]; running {
			delete(r.unreleased, f)
			continue
		}
		fields = append(fields, f)
	}
	if len(fields) == 0 {
		return
	}
	if err := r.rdb.HDel(ctx, claimsPrefix+r.o.ID, fields...).Err(); err != nil {
		return // next renewal
	}
	for _, f := range fields {
		delete(r.unreleased, f)
	}
	r.o.Log.Info("released the claims of ended runs that Redis missed", "worker_id", r.o.ID, "claims", len(fields))
}

// reap renews the worker's lease and, if this worker has been healthy for
// a lease's length and holds the reaper's lock, moves the claimed tasks of
// the workers whose lease expired back to their queues.
func (r *Registry) reap(ctx context.Context) {
	r.mu.Lock()
	// Judged on the renewals before this one: should this one fail, the
	// scan is not done either.
	healthy := !r.healthySince.IsZero() && time.Since(r.healthySince) >= r.o.TTL
	r.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 2*r.o.Renew)
	defer cancel()
	scan := healthy && r.lock.Held(rctx)
	dead, ok := r.renewScan(ctx, scan)
	if !scan || !ok {
		return
	}
	for _, id := range dead {
		n, err := r.reapOne(rctx, id)
		if err != nil {
			r.o.Log.Warn("reap a dead worker's tasks", "dead_worker_id", id, "err", err)
			continue
		}
		r.o.Log.Warn("worker's lease expired: its tasks went back to their queues", "dead_worker_id", id, "tasks", n)
		if r.o.OnReap != nil {
			r.o.OnReap(id, n)
		}
	}
	if r.reaps++; r.reaps%orphanScanEvery == 1 {
		r.reapOrphans(rctx)
	}
}

// reapOrphans moves back to pending the active tasks that no live worker
// has claimed for orphanGraceLeases leases.
func (r *Registry) reapOrphans(ctx context.Context) {
	if len(r.o.Queues) == 0 {
		return
	}
	workers, err := r.rdb.ZRange(ctx, workersKey, 0, -1).Result()
	if err != nil {
		return
	}
	claimed := map[string]bool{}
	for _, w := range workers {
		fields, err := r.rdb.HKeys(ctx, claimsPrefix+w).Result()
		if err != nil {
			return // judged on a partial view, a claimed task would look orphaned
		}
		for _, f := range fields {
			claimed[f] = true
		}
	}
	now := time.Now()
	seen := map[string]bool{}
	moved := 0
	for _, q := range r.o.Queues {
		ids, err := r.rdb.LRange(ctx, "asynq:{"+q+"}:active", 0, -1).Result()
		if err != nil {
			return
		}
		for _, id := range ids {
			f := claimField(q, id)
			if claimed[f] {
				continue
			}
			seen[f] = true
			first, ok := r.unclaimed[f]
			if !ok {
				r.unclaimed[f] = now
				continue
			}
			if now.Sub(first) < orphanGraceLeases*r.o.TTL {
				continue
			}
			if ok, err := Requeue(ctx, r.rdb, q, id); err == nil && ok {
				moved++
				r.o.Log.Warn("active task claimed by no live worker: back to its queue", "queue", q, "task_id", id)
			}
			delete(r.unclaimed, f)
		}
	}
	for f := range r.unclaimed {
		if !seen[f] {
			delete(r.unclaimed, f)
		}
	}
	if moved > 0 && r.o.OnReap != nil {
		r.o.OnReap("", moved)
	}
}

func (r *Registry) reapOne(ctx context.Context, id string) (int, error) {
	// Marked first: if the worker is alive after all, it stops these runs.
	if err := r.rdb.Set(ctx, reapedPrefix+id, 1, reapedTTL).Err(); err != nil {
		return 0, err
	}
	claims, err := r.rdb.HKeys(ctx, claimsPrefix+id).Result()
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, field := range claims {
		queue, taskID, ok := strings.Cut(field, "\x00")
		if !ok {
			continue
		}
		n, err := Requeue(ctx, r.rdb, queue, taskID)
		if err != nil {
			return moved, fmt.Errorf("requeue %s: %w", taskID, err)
		}
		if n {
			moved++
		}
	}
	if err := r.rdb.Del(ctx, claimsPrefix+id).Err(); err != nil {
		return moved, err
	}
	return moved, r.rdb.ZRem(ctx, workersKey, id).Err()
}

// Requeue moves task id of queue from asynq's active list back to pending,
// without counting a retry; false when it was not active.
func Requeue(ctx context.Context, rdb redis.UniversalClient, queue, id string) (bool, error) {
	p := "asynq:{" + queue + "}:"
	n, err := requeueScript.Run(ctx, rdb, []string{p + "active", p + "lease", p + "pending", p + "t:" + id}, id).Int()
	return n == 1, err
}

// Lock is a Redis lock that one holder at a time holds for as long as it
// keeps asking for it: a holder that stops asking loses it after ttl, and
// another holder may then take it. It spares Redis the asking most of the
// time: a hold that was taken or extended less than a third of ttl ago is
// still good in Redis for at least two thirds of ttl, so Held answers it
// from memory, and goes to Redis (to take or extend the lock for ttl) only
// once a third of ttl has passed. Should Redis lose the lock (restarted
// empty, failed over before replicating it), another holder may take it
// while this one still answers from memory, for at most a third of ttl.
// A Lock is safe for concurrent use.
type Lock struct {
	rdb         redis.UniversalClient
	key, holder string
	ttl         time.Duration
	now         func() time.Time // tests

	mu sync.Mutex
	// sent is when the last take or extension that Redis granted was sent;
	// zero when the lock is not known held. Taken before sending, so that
	// Redis's expiry of the lock is at least sent + ttl.
	sent time.Time
}

// NewLock returns the lock key on rdb for holder, held ttl at a time.
func NewLock(rdb redis.UniversalClient, key, holder string, ttl time.Duration) *Lock {
	return &Lock{rdb: rdb, key: key, holder: holder, ttl: ttl, now: time.Now}
}

// Held reports whether the holder holds the lock, taking it when it is
// free and extending it for ttl when it is the holder's and a third of ttl
// has passed since the last extension. False when another holder has it or
// Redis is out of reach (the lock is then forgotten locally: the next call
// asks Redis again).
func (l *Lock) Held(ctx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := l.now()
	if !l.sent.IsZero() && start.Sub(l.sent) < l.ttl/3 {
		return true
	}
	res, err := holdScript.Run(ctx, l.rdb, []string{l.key}, l.holder, l.ttl.Milliseconds()).Int()
	if err != nil || res != 1 {
		l.sent = time.Time{}
		return false
	}
	l.sent = start
	return true
}

// Release gives the lock up, if the holder has it, so that another holder
// can take it at once rather than after ttl. Best effort: should it fail,
// the lock lapses after ttl.
func (l *Lock) Release(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = time.Time{}
	_ = releaseScript.Run(ctx, l.rdb, []string{l.key}, l.holder).Err()
}

// holdScript: KEYS[1] the lock; ARGV[1] the holder, ARGV[2] TTL ms.
var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// releaseScript: KEYS[1] the lock; ARGV[1] the holder. Deletes the lock
// when the holder has it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
