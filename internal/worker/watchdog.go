package worker

import (
	"context"
	"time"

	"github.com/timetravel-ai/timetravel/internal/liveness"
)

// The deadline watchdog ends jobs that are past their deadline, whatever
// stage they are in and whichever worker held them: an aggregation whose
// worker died, a job whose tasks were lost with Redis's data. It is the
// guarantee that no job stays non-terminal past its deadline by more than
// about a second.
const (
	// watchdogTick is how often the watchdog looks for overdue jobs.
	watchdogTick = 250 * time.Millisecond
	// watchdogLockKey makes one worker at a time the watchdog.
	watchdogLockKey = "tt:watchdog"
	// watchdogBatch bounds the jobs one look ends.
	watchdogBatch = 100
)

// WatchDeadlines runs the deadline watchdog until ctx ends: every
// watchdogTick, the worker that holds the watchdog lock (id names it) ends
// the jobs past their deadline with what they have (endOverdue) and queues
// their webhooks. Jobs whose end fails stay in the set and are tried again
// on the next look.
func (h *Handlers) WatchDeadlines(ctx context.Context, id string) {
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.watchOnce(ctx, id)
	}
}

// watchOnce is one look of the watchdog.
func (h *Handlers) watchOnce(ctx context.Context, id string) {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if !liveness.Hold(lctx, h.store.Redis(), watchdogLockKey, id, 4*watchdogTick) {
		return
	}
	ids, err := h.store.Overdue(lctx, time.Now(), watchdogBatch)
	if err != nil || len(ids) == 0 {
		return
	}
	for _, jobID := range ids {
		ended, err := h.endOverdue(ctx, jobID)
		if err != nil {
			h.log.Warn("watchdog: could not end an overdue job", "job_id", jobID, "err", err)
			continue
		}
		if ended == nil {
			continue // ended before, or gone
		}
		if err := h.life.QueueWebhook(ctx, jobID, ended); err != nil {
			// The job's aggregation task queues it when it next runs.
			h.log.Warn("watchdog: could not queue the webhook", "job_id", jobID, "err", err)
		}
	}
}
