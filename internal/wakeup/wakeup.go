// Package wakeup lets a worker's idle queue servers wait for work instead of
// polling Redis for it.
//
// asynq has no blocking dequeue: a queue server with a free slot runs its
// dequeue script, and when the queue is empty sleeps about
// TASK_CHECK_INTERVAL and runs it again. A short interval keeps the pickup
// fast and costs hundreds of Redis commands a second per idle worker (three
// per poll: the script, EXISTS, RPOPLPUSH, for each of the worker's queue
// servers); a long one slows every hop of every job.
//
// Here every Redis client of the service announces, on one Pub/Sub channel,
// the queues into which a task has just become pending (Announcer: asynq's
// enqueue, its forwarder's move of scheduled and retried tasks, the
// inspector's run-now, the liveness reaper's requeue, a stopping server's
// hand-back: every script that names a queue's pending list), and a worker
// turns each empty dequeue into a wait for the queue's next announcement
// (Waiter): on one, the dequeue runs again at once and returns what it
// finds; without one, it returns empty after the idle wait and asynq polls
// again. Hooks on the go-redis client do both, since asynq's scripts run
// inside asynq, through the client it is given.
//
// An announcement that is lost (a Pub/Sub reconnection) costs at most the
// idle wait: the hub wakes every waiter when it subscribes again, and the
// idle wait bounds the rest. Nothing depends on an announcement for
// correctness, only for speed.
package wakeup

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channel carries the announcements; each message is a queue name.
const Channel = "tt:wake"

// asynq's key layout: asynq:{<queue>}:pending, and :paused beside it.
const (
	keyPrefix  = "asynq:{"
	pendingEnd = "}:pending"
	pausedEnd  = "}:paused"
)

// scriptKeys returns the keys of an EVAL or EVALSHA command, as the
// command holds them (no copy: every script the service runs passes
// here), and false for any other command.
func scriptKeys(cmd redis.Cmder) ([]any, bool) {
	switch cmd.Name() {
	case "evalsha", "eval", "evalsha_ro", "eval_ro":
	default:
		return nil, false
	}
	args := cmd.Args()
	if len(args) < 3 {
		return nil, false
	}
	var n int
	switch v := args[2].(type) {
	case int:
		n = v
	case int64:
		n = int(v)
	default:
		return nil, false
	}
	if n < 0 || 3+n > len(args) {
		return nil, false
	}
	return args[3 : 3+n], true
}

// pendingQueue returns the queue whose pending list key is.
func pendingQueue(key any) (string, bool) {
	k, ok := key.(string)
	if !ok || !strings.HasPrefix(k, keyPrefix) || !strings.HasSuffix(k, pendingEnd) {
		return "", false
	}
	q := k[len(keyPrefix) : len(k)-len(pendingEnd)]
	return q, q != ""
}

// dequeueQueue returns the queue of asynq's dequeue script call, whose
// keys are the queue's pending, paused, active and lease keys.
func dequeueQueue(keys []any) (string, bool) {
	if len(keys) != 4 {
		return "", false
	}
	q, ok := pendingQueue(keys[0])
	return q, ok && keys[1] == keyPrefix+q+pausedEnd
}

// classify says what a command means for the queues: the queue a dequeue
// polls, or the queues a script may have made tasks pending in.
func classify(cmd redis.Cmder) (dequeue string, filled []string) {
	keys, ok := scriptKeys(cmd)
	if !ok {
		return "", nil
	}
	if q, ok := dequeueQueue(keys); ok {
		return q, nil
	}
	for _, k := range keys {
		if q, ok := pendingQueue(k); ok {
			filled = append(filled, q)
		}
	}
	return "", filled
}

// passThrough is the part of a go-redis hook that leaves dialing and
// pipelines alone: asynq's scripts run one command at a time.
type passThrough struct{}

func (passThrough) DialHook(next redis.DialHook) redis.DialHook { return next }

func (passThrough) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// moved reports whether a script that names a pending list reported a
// change: asynq's scripts answer a count (0: nothing moved, a conflict);
// any other answer is taken as a change, since a spurious announcement
// only costs a dequeue.
func moved(cmd redis.Cmder) bool {
	c, ok := cmd.(*redis.Cmd)
	if !ok {
		return true
	}
	if n, ok := c.Val().(int64); ok {
		return n > 0
	}
	return true
}

// Announcer publishes, on Channel, the queues that scripts made tasks
// pending in: its Hook marks them after each such script succeeds, and Run
// publishes the marked queues from a goroutine of its own. A request that
// enqueues never waits for a publish, and the tasks of one job, enqueued
// one after the other, share one or two announcements. Each publish
// follows the marks it covers, so it follows their tasks' enqueues. Add
// the Hook to every client that enqueues or moves tasks (the api's and the
// worker's) and run Run for as long as they do; publishing is
// best-effort: a failure only delays the pickup to the waiters' idle wait.
type Announcer struct {
	rdb   redis.UniversalClient
	kick  chan struct{}
	mu    sync.Mutex
	dirty map[string]struct{}
}

// NewAnnouncer returns an Announcer that publishes on rdb.
func NewAnnouncer(rdb redis.UniversalClient) *Announcer {
	return &Announcer{rdb: rdb, kick: make(chan struct{}, 1), dirty: map[string]struct{}{}}
}

// Hook returns the go-redis hook that marks the queues.
func (a *Announcer) Hook() redis.Hook { return announceHook{a: a} }

func (a *Announcer) mark(queues []string) {
	a.mu.Lock()
	for _, q := range queues {
		a.dirty[q] = struct{}{}
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default: // a publish is already due
	}
}

// Run publishes the marked queues until ctx ends, then once more for
// what is marked by then.
func (a *Announcer) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			a.publish(context.WithoutCancel(ctx))
			return
		case <-a.kick:
			a.publish(ctx)
		}
	}
}

func (a *Announcer) publish(ctx context.Context) {
	a.mu.Lock()
	if len(a.dirty) == 0 {
		a.mu.Unlock()
		return
	}
	queues := make([]string, 0, len(a.dirty))
	for q := range a.dirty {
		queues = append(queues, q)
	}
	clear(a.dirty)
	a.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, q := range queues {
		_ = a.rdb.Publish(pctx, Channel, q).Err()
	}
}

type announceHook struct {
	passThrough
	a *Announcer
}

func (h announceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil {
			return err
		}
		if _, filled := classify(cmd); len(filled) > 0 && moved(cmd) {
			h.a.mark(filled)
		}
		return nil
	}
}

// Watcher signals the announcements for a queue: the events hub on
// Channel (events.Hub.Watch), which also signals every watch when it
// subscribes again.
type Watcher interface {
	Watch(queue string) (<-chan struct{}, func())
}

// Waiter turns a worker's empty dequeues into waits for their queue's
// next announcement. Create it with NewWaiter, add its Hook to the
// client the worker's queue servers use, and Stop it before they shut
// down.
type Waiter struct {
	w    Watcher
	idle time.Duration

	stopOnce sync.Once
	stop     chan struct{}
}

// NewWaiter returns a Waiter that waits on w's signals for at most idle
// per empty dequeue.
func NewWaiter(w Watcher, idle time.Duration) *Waiter {
	return &Waiter{w: w, idle: idle, stop: make(chan struct{})}
}

// Stop ends the waits under way at once and makes the hook pass every
// command through unchanged from then on: a stopping queue server must
// not sit in a wait, and asynq's plain polling is right for its drain.
func (wt *Waiter) Stop() { wt.stopOnce.Do(func() { close(wt.stop) }) }

func (wt *Waiter) stopped() bool {
	select {
	case <-wt.stop:
		return true
	default:
		return false
	}
}

// Hook returns the go-redis hook that makes the waits. A dequeue that
// finds a task, or fails, returns at once; one that finds the queue empty
// waits for the queue's next announcement and then runs again, until it
// finds a task, the idle wait has passed (it then returns empty, as
// asynq expects), ctx ends, or the Waiter stops. The watch starts before
// each dequeue, so that an announcement that comes between the dequeue
// and the wait is not missed.
func (wt *Waiter) Hook() redis.Hook { return waitHook{wt: wt} }

type waitHook struct {
	passThrough
	wt *Waiter
}

func (h waitHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		q, _ := classify(cmd)
		if q == "" || h.wt.stopped() {
			return next(ctx, cmd)
		}
		signal, unwatch := h.wt.w.Watch(q)
		defer unwatch()
		idle := time.NewTimer(h.wt.idle)
		defer idle.Stop()
		for {
			err := next(ctx, cmd)
			if !errors.Is(err, redis.Nil) {
				return err
			}
			select {
			case <-signal:
				// A task may be pending: dequeue again.
			case <-idle.C:
				return err
			case <-h.wt.stop:
				return err
			case <-ctx.Done():
				return err
			}
		}
	}
}
