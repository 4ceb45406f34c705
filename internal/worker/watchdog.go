package worker

import (
	"context"
	"time"

	"github.com/timetravel-ai/timetravel/internal/liveness"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// The deadline watchdog ends jobs that are past their deadline, whatever
// stage they are in and whichever worker held them: an aggregation whose
// worker died, a job whose tasks were lost with Redis's data. It is the
// guarantee that no job stays non-terminal past its deadline by more than
// about a second (watchdogMaxSleep, for a job created while the watchdog
// sleeps; a job it has seen is ended at its deadline), a few seconds when
// the watchdog's worker dies (another worker takes over once the watchdog
// lock, watchdogLockTTL, lapses).
const (
	// watchdogMaxSleep is the longest the watchdog sleeps between two
	// looks: the delay of a job whose deadline is earlier than any the
	// watchdog saw at its last look (it was created meanwhile). It costs
	// one read of the deadlines a second at idle.
	watchdogMaxSleep = time.Second
	// watchdogMinSleep keeps the watchdog from spinning (a deadline a
	// fraction of a millisecond away, a full batch of overdue jobs).
	watchdogMinSleep = 5 * time.Millisecond
	// watchdogRetry is the soonest the watchdog looks again after a job
	// it could not end: it stays first in the set, and looking at once
	// would hammer a Redis in trouble.
	watchdogRetry = 250 * time.Millisecond
	// watchdogLockKey makes one worker at a time the watchdog.
	watchdogLockKey = "tt:watchdog"
	// watchdogLockTTL is how long the watchdog lock outlives its holder's
	// last extension; the holder extends it about every second (Lock goes
	// to Redis once a third of it has passed).
	watchdogLockTTL = 3 * time.Second
	// watchdogBatch bounds the jobs one look reads and ends.
	watchdogBatch = 100
)

// WatchDeadlines runs the deadline watchdog until ctx ends: the worker that
// holds the watchdog lock (id names it) reads the earliest deadlines, ends
// the jobs past theirs with what they have (endOverdue), queues their
// webhooks, and sleeps until the earliest deadline left, watchdogMaxSleep
// at most. Jobs whose end fails stay in the set and are tried again on a
// later look. A watchdog that stops gives the lock up, so that another
// worker takes over at its next look.
func (h *Handlers) WatchDeadlines(ctx context.Context, id string) {
	h.watchDeadlines(ctx, id, nil)
}

// watchDeadlines is WatchDeadlines; looked, when set, is called after each
// look with the sleep that follows it (tests).
func (h *Handlers) watchDeadlines(ctx context.Context, id string, looked func(time.Duration)) {
	lock := liveness.NewLock(h.store.Redis(), watchdogLockKey, id, watchdogLockTTL)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		lock.Release(rctx)
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := h.watchOnce(ctx, lock)
		if looked != nil {
			looked(wait)
		}
		t.Reset(wait)
	}
}

// watchOnce is one look of the watchdog; it returns how long to sleep
// until the next.
func (h *Handlers) watchOnce(ctx context.Context, lock *liveness.Lock) time.Duration {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if !lock.Held(lctx) {
		return watchdogMaxSleep
	}
	deadlines, err := h.store.EarliestDeadlines(lctx, watchdogBatch)
	if err != nil {
		h.log.Warn("watchdog: could not read the deadlines", "err", err)
		return watchdogMaxSleep
	}
	now := time.Now()
	failed := false
	for _, d := range deadlines {
		if d.At.After(now) {
			break // earliest first: the rest are not due either
		}
		ended, err := h.endOverdue(ctx, d.JobID)
		if err != nil {
			h.log.Warn("watchdog: could not end an overdue job", "job_id", d.JobID, "err", err)
			failed = true
			continue
		}
		if ended == nil {
			continue // ended before, or gone
		}
		if err := h.life.QueueWebhook(ctx, d.JobID, ended); err != nil {
			// The job's aggregation task queues it when it next runs.
			h.log.Warn("watchdog: could not queue the webhook", "job_id", d.JobID, "err", err)
		}
	}
	return watchdogSleep(deadlines, watchdogBatch, now, time.Now(), failed)
}

// watchdogSleep is how long the watchdog sleeps after a look at
// deadlines (earliest first, limit at most) that began at lookedAt and
// ended at now: until the earliest deadline not yet due at lookedAt, or
// watchdogMaxSleep when none is, or when the batch was full and due (more
// may be due behind it), watchdogMinSleep; never less than watchdogRetry
// after a job it could not end.
func watchdogSleep(deadlines []store.Deadline, limit int, lookedAt, now time.Time, failed bool) time.Duration {
	wait := watchdogMaxSleep
	switch i := firstNotDue(deadlines, lookedAt); {
	case i < len(deadlines):
		wait = min(wait, deadlines[i].At.Sub(now))
	case len(deadlines) >= limit:
		wait = 0
	}
	if failed {
		wait = max(wait, watchdogRetry)
	}
	return max(wait, watchdogMinSleep)
}

// firstNotDue is the index of the first deadline after t (len when none).
func firstNotDue(deadlines []store.Deadline, t time.Time) int {
	for i, d := range deadlines {
		if d.At.After(t) {
			return i
		}
	}
	return len(deadlines)
}
