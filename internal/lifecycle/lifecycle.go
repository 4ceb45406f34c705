// Package lifecycle owns the end of a job of any kind: the effects that
// follow once a job has ended (its in-flight entry released, its timings on
// the metrics and in the monitoring samples, its webhook queued) and the
// cancel of a job by its caller. The api (cancel), the worker (the
// aggregation, the deadline watchdog, a failed aggregation) and the intake
// (a job served whole from the caches) all go through it, so that every
// path ends a job alike. Submission stays with package intake.
//
// Who ends a job is decided by the store's end scripts (store.Finish,
// store.FinishAggregate): exactly one caller's end succeeds, and only that
// caller calls Ended. Queuing the webhook is safe to repeat (its task has a
// fixed id), so that every path that finds a job ended may call
// QueueWebhook.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Options wire a Lifecycle. Only Store is required.
type Options struct {
	Store *store.Store
	// Webhooks puts webhook deliveries on the webhook queue; nil: a job
	// with a callback URL ends without its webhook queued, which is logged
	// as an error (a process wired without it must not end such jobs).
	Webhooks *tasks.Enqueuer
	// WebhookRetries is the retry budget of a delivery; 0 means
	// webhook.MaxRetries.
	WebhookRetries int
	// Inspector withdraws the tasks of a canceled job that have not
	// started; nil leaves them to run and find the job closed.
	Inspector tasks.Inspector
	// Inflight is the deduplication registry: an ended job's entry is
	// released so that identical requests start a job of their own. It is
	// released whenever the job holds one, whether or not this process
	// deduplicates; nil skips it.
	Inflight *cache.Inflight
	// Log receives the logs; nil discards them.
	Log *slog.Logger
}

// Lifecycle is safe for concurrent use.
type Lifecycle struct {
	o       Options
	samples *monitoring.Store
}

// New returns the Lifecycle of o.
func New(o Options) *Lifecycle {
	if o.Store == nil {
		panic("lifecycle.New: Options.Store is required")
	}
	if o.WebhookRetries <= 0 {
		o.WebhookRetries = webhook.MaxRetries
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Lifecycle{o: o, samples: monitoring.New(o.Store.Redis())}
}

// endTimeout bounds the effects of an end: they run with a context of
// their own, since the caller's may be the cancelled one of work that
// stopped because the job ended, or of a client that went away.
const endTimeout = 5 * time.Second

// Ended runs the effects of the end of jobID that happen once per job.
// Call it exactly when the caller's own store call ended the job (the
// store's end scripts let one caller do so): it releases the job's
// in-flight entry and, for a job people wait for, records its duration and
// stage durations on the metrics and its sample for the monitoring
// endpoints. A warming job gets neither: it has no client, and its
// timings would only blur those of the jobs people wait for. It does not
// queue the webhook (QueueWebhook, which may be repeated, does). It reads
// the job once and returns it, or nil when that read failed; failures are
// only logged, as the job has ended whatever they are.
func (l *Lifecycle) Ended(ctx context.Context, jobID string) *job.Job {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	j, err := l.o.Store.Get(ctx, jobID)
	if err != nil {
		l.o.Log.Warn("read the ended job for its end", "job_id", jobID, "err", err)
		return nil
	}
	l.releaseInflight(ctx, j)
	if j.Spec.Warm {
		return j
	}
	s := monitoring.FromJob(j)
	s.Observe()
	if err := l.samples.Record(ctx, s); err != nil {
		l.o.Log.Warn("record the job's timings", "job_id", jobID, "err", err)
	}
	return j
}

// releaseInflight frees the ended job's in-flight entry, if it holds one.
func (l *Lifecycle) releaseInflight(ctx context.Context, j *job.Job) {
	if l.o.Inflight == nil || j.Fingerprint == "" {
		return
	}
	if err := l.o.Inflight.Release(ctx, j.Fingerprint, j.ID); err != nil {
		l.o.Log.Warn("release the job's in-flight entry", "job_id", j.ID, "err", err)
	}
}

// QueueWebhook puts the delivery of an ended job's webhook on the queue and
// marks it pending, when the job has a callback URL and its delivery has
// no outcome yet; j is the job as read, or nil to read it. Every path that
// ends a job, or finds it ended, may call it: the delivery's fixed task id
// makes repeats harmless. A job that is gone or has not ended is no error.
func (l *Lifecycle) QueueWebhook(ctx context.Context, jobID string, j *job.Job) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	if j == nil {
		var err error
		j, err = l.o.Store.Get(ctx, jobID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	if !j.Status.Terminal() || j.Spec.CallbackURL == "" || (j.Webhook != nil && j.Webhook.Status.Final()) {
		return nil
	}
	if l.o.Webhooks == nil {
		l.o.Log.Error("job has a callback URL but this process cannot queue webhooks", "job_id", jobID)
		return nil
	}
	if err := l.o.Webhooks.EnqueueWebhook(ctx, jobID, l.o.WebhookRetries); err != nil {
		return err
	}
	if err := l.o.Store.WebhookQueued(ctx, jobID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// ErrEnded is wrapped by Cancel's error when the job ended, or the caller
// had let go of it, before it could be canceled: nothing changed.
var ErrEnded = errors.New("the job ended before it could be canceled")

// Cancel cancels the caller's job h. A job shared with other callers (they
// joined it) goes on for them: only the caller's part ends, and Cancel
// reports false. The last caller to cancel cancels the work (true): the
// job ends canceled, with the effects of its end (Ended), its webhook
// queued, and its tasks that have not started withdrawn. The aggregation
// task, scheduled at the deadline, queues the webhook of a job it finds
// ended: it is withdrawn only once the webhook is queued. Once the job is
// closed, the steps after it run even when ctx ends (a client that went
// away). Its error wraps ErrEnded when the job ended before; any other is
// the store's trouble, and the job may not be canceled.
func (l *Lifecycle) Cancel(ctx context.Context, h store.Head) (bool, error) {
	last, err := l.o.Store.Detach(ctx, h.Work, h.ID)
	switch {
	case errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrDetached) || errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("cancel job %s: %w: %w", h.ID, ErrEnded, err)
	case err != nil:
		return false, fmt.Errorf("cancel job %s: %w", h.ID, err)
	}
	if !last {
		l.o.Log.Info("caller left a shared job; it goes on for the others", "job_id", h.ID, "work", h.Work)
		return false, nil
	}
	err = l.o.Store.Finish(ctx, h.Work, job.StatusCanceled, job.CanceledByClient, nil)
	switch {
	case errors.Is(err, store.ErrClosed):
		return false, fmt.Errorf("cancel job %s: %w: %w", h.Work, ErrEnded, err)
	case err != nil:
		return false, fmt.Errorf("cancel job %s: %w", h.Work, err)
	}
	// The job is closed: whatever still runs stops at its next write.
	// Withdrawing its tasks only saves the work.
	j := l.Ended(ctx, h.Work)
	if j == nil {
		return true, nil
	}
	queued := true
	if err := l.QueueWebhook(ctx, j.ID, j); err != nil {
		queued = false
		l.o.Log.Warn("could not queue the webhook of the canceled job; its aggregation task will", "job_id", j.ID, "err", err)
	}
	if l.o.Inspector != nil {
		if err := tasks.Withdraw(l.o.Inspector, tasks.LaneOf(j.Spec.Warm), j.ID, indexes(len(j.Members)), queued); err != nil {
			l.o.Log.Warn("withdraw tasks of canceled job", "job_id", j.ID, "err", err)
		}
	}
	l.o.Log.Info("job canceled", "job_id", j.ID)
	return true, nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
