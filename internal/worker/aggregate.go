package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// HandleAggregate ends a job: it runs either when the last snapshot finished
// (promoted) or at the job's deadline. It closes the job to snapshot work,
// withdraws unfinished snapshots, runs the key-changes extraction and the
// narrative concurrently, and records the terminal state. It is idempotent:
// on a job that has ended it does nothing.
func (h *Handlers) HandleAggregate(ctx context.Context, t *asynq.Task) error {
	var p tasks.AggregatePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode aggregate payload: %v: %w", err, asynq.SkipRetry)
	}
	ctx, span := tasks.StartSpan(ctx, t, "aggregate", p.JobID)
	defer span.End()
	log := h.log.With("job_id", p.JobID, "stage", "aggregate").With(tracing.LogAttrs(ctx)...)
	work, stop := h.stopWhenClosed(ctx, p.JobID, true)
	defer stop()
	ended, err := h.aggregate(work, p.JobID)
	defer func() { endSpan(span, err) }()
	if err == nil || stopQuietly(err) || errors.Is(context.Cause(work), errJobClosed) {
		// The job ended, by this run or before it (then BeginAggregate
		// said ErrClosed): its webhook goes on the queue. This task is the
		// safety net of every path that ends a job (it stays scheduled at
		// the deadline until then): when queuing fails, asynq runs it
		// again, and the next run finds the job ended and queues again.
		if werr := h.queueWebhook(ctx, p.JobID, ended); werr != nil {
			log.Warn("could not queue the webhook; the aggregation task will try again", "err", werr)
			return werr
		}
		return nil
	}
	if errors.Is(err, llm.ErrNoCapacity) {
		log.Debug("no provider capacity; aggregation handed back", "reason", err)
		return err
	}
	if tasks.LastAttempt(ctx) {
		// No job may be left without an end.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ferr := h.store.Finish(fctx, p.JobID, job.StatusFailed, "aggregation failed: "+err.Error(), nil)
		var ended *job.Job
		if ferr == nil {
			ended = h.jobEnded(fctx, p.JobID)
		}
		log.Error("aggregation failed for good; job failed", "err", err, "finish_err", ferr)
		if werr := h.queueWebhook(ctx, p.JobID, ended); werr != nil {
			// The spare delivery finds the job ended and queues again.
			log.Warn("could not queue the webhook; the aggregation task will try again", "err", werr)
			return werr
		}
		return nil
	}
	log.Warn("aggregation failed; will retry", "err", err)
	return err
}

// aggregate runs the aggregation of jobID and returns the job as it ended,
// when this run ended it (nil otherwise, or when that read failed).
func (h *Handlers) aggregate(ctx context.Context, jobID string) (*job.Job, error) {
	owner := uuid.NewString()
	j, err := h.store.BeginAggregate(ctx, jobID, owner)
	if err != nil {
		return nil, err
	}
	log := h.log.With("job_id", jobID, "stage", "aggregate").With(tracing.LogAttrs(ctx)...)

	var unfinished []int
	var done []job.Snapshot
	failed := 0
	for _, s := range j.Snapshots {
		switch s.Status {
		case job.SnapshotCompleted:
			done = append(done, s)
		case job.SnapshotFailed:
			failed++
		default:
			unfinished = append(unfinished, s.Index)
		}
	}
	if len(unfinished) > 0 {
		log.Warn("deadline passed with snapshots unfinished; withdrawing them", "unfinished", len(unfinished))
		if err := tasks.Withdraw(h.insp, tasks.LaneOf(j.Spec.Warm), jobID, unfinished, false); err != nil {
			log.Warn("withdraw snapshot tasks", "err", err)
		}
	}
	if len(done) == 0 {
		msg := "all snapshots failed"
		if len(unfinished) > 0 {
			msg = fmt.Sprintf("deadline passed with no snapshot completed (%d failed, %d unfinished)", failed, len(unfinished))
		}
		if err := h.store.Finish(ctx, jobID, job.StatusFailed, msg, j.Aggregate); err != nil {
			return nil, err
		}
		return h.jobEnded(ctx, jobID), nil
	}

	agg := &job.Aggregate{KeyChanges: []job.KeyChange{}}
	if j.Aggregate != nil {
		agg.StartedAt = j.Aggregate.StartedAt
	}
	if hit := h.cachedAggregate(ctx, j, done, log); hit != nil {
		if err := h.serveCachedAggregate(ctx, j, owner, done, hit, agg); err != nil {
			return nil, err
		}
		if err := h.store.Finish(ctx, jobID, job.StatusCompleted, "", agg); err != nil {
			return nil, err
		}
		log.Info("job finished from the result cache", "snapshots", len(done))
		return h.jobEnded(ctx, jobID), nil
	}
	// Capacity before anything is written: without it the aggregation goes
	// back to the queue, without using up a retry, unless the deadline
	// passed long ago (then the calls fail and say so). The two calls run
	// side by side when both get capacity at once, else one after the other.
	kcReq := h.keyChangesRequest(j, done)
	narrReq := h.narrativeRequest(j, done)
	overdue := time.Now().After(j.Deadline.Add(aggregateGrace))
	// A lack of capacity goes back to the queue (until overdue), and so
	// does trouble with the limits' store; an open breaker is the call's
	// failure.
	handBack := func(err error) bool {
		return (errors.Is(err, llm.ErrNoCapacity) && !overdue) ||
			(err != nil && !errors.Is(err, llm.ErrNoCapacity) && !errors.Is(err, llm.ErrCircuitOpen))
	}
	kcCtx, narrCtx := ctx, ctx
	var kcPre, narrPre error
	sequential := false
	if len(done) >= 2 {
		var release func()
		kcCtx, release, kcPre = h.admit(ctx, kcReq)
		defer release()
		if handBack(kcPre) {
			return nil, fmt.Errorf("aggregation of job %s: %w", jobID, kcPre)
		}
		narrCtx, release, narrPre = h.admit(llm.WithCapacityWait(ctx, secondCallWait), narrReq)
		defer release()
		if errors.Is(narrPre, llm.ErrNoCapacity) && kcPre == nil {
			// The key changes hold a slot: the narrative follows them, and
			// may wait longer, holding only this aggregation's worker slot.
			sequential, narrPre, narrCtx = true, nil, llm.WithCapacityWait(ctx, sequentialCallWait)
		} else if handBack(narrPre) {
			return nil, fmt.Errorf("aggregation of job %s: %w", jobID, narrPre)
		}
	} else {
		var release func()
		narrCtx, release, narrPre = h.admit(ctx, narrReq)
		defer release()
		if handBack(narrPre) {
			return nil, fmt.Errorf("aggregation of job %s: %w", jobID, narrPre)
		}
	}
	kcCtx, narrCtx = llm.WithLogger(kcCtx, log), llm.WithLogger(narrCtx, log)
	var (
		wg      sync.WaitGroup
		kcErr   error
		narrErr error
	)
	if sequential {
		log.Debug("provider capacity for one call: key changes, then narrative")
		kcErr = h.keyChanges(kcCtx, j, owner, done, kcReq, kcPre, agg)
		if kcErr == nil {
			narrErr = h.narrative(narrCtx, j, owner, done, narrReq, narrPre, agg)
		}
	} else {
		wg.Go(func() { kcErr = h.keyChanges(kcCtx, j, owner, done, kcReq, kcPre, agg) })
		wg.Go(func() { narrErr = h.narrative(narrCtx, j, owner, done, narrReq, narrPre, agg) })
		wg.Wait()
	}
	if err := errors.Join(kcErr, narrErr); err != nil {
		return nil, err
	}

	status, msg := job.StatusCompleted, ""
	if missing := len(j.Snapshots) - len(done); missing > 0 {
		status = job.StatusPartial
		msg = missingMessage(j.Snapshots)
	}
	if agg.KeyChangesError != "" || agg.NarrativeError != "" {
		status = job.StatusPartial
		if msg == "" {
			msg = "part of the aggregation failed"
		}
	}
	// Cached before the job ends: an identical request that sees it ended
	// finds its result.
	h.keepAggregate(ctx, j, done, agg, log)
	if err := h.store.Finish(ctx, jobID, status, msg, agg); err != nil {
		return nil, err
	}
	log.Info("job finished", "status", status, "snapshots", len(done), "of", len(j.Snapshots))
	return h.jobEnded(ctx, jobID), nil
}

// Capacity waits of the aggregation.
const (
	// aggregateGrace is how long past the job's deadline an aggregation may
	// still go back to the queue for lack of provider capacity.
	aggregateGrace = 2 * time.Minute
	// secondCallWait bounds the wait for the second call's capacity before
	// the two calls run one after the other instead.
	secondCallWait = 200 * time.Millisecond
	// sequentialCallWait bounds the capacity wait of the narrative that
	// follows the key changes.
	sequentialCallWait = 30 * time.Second
)

func (h *Handlers) keyChangesRequest(j *job.Job, done []job.Snapshot) llm.Request {
	req := llmRequest(h.models.Extraction, timetravel.KeyChanges(j.Spec.Question, done))
	req.JSON = true
	req.Temperature = 0
	return req
}

func (h *Handlers) narrativeRequest(j *job.Job, done []job.Snapshot) llm.Request {
	return llmRequest(h.models.NarrativeModel(j.Spec), timetravel.Narrative(j.Spec.Question, done, j.Spec.Complexity))
}

// keyChanges fills agg's key changes and emits their event. A failed or
// malformed answer is recorded on agg, not returned: only store errors are.
// pre is the admission's error, if any: then no call is made.
func (h *Handlers) keyChanges(ctx context.Context, j *job.Job, owner string, done []job.Snapshot, req llm.Request, pre error, agg *job.Aggregate) error {
	if len(done) < 2 {
		return h.store.EmitAggregate(ctx, j.ID, owner, events.KeyChangesCompleted, events.KeyChangesData{KeyChanges: agg.KeyChanges})
	}
	start := time.Now()
	var resp llm.Response
	err := pre
	if err == nil {
		resp, err = h.llm.Complete(ctx, req)
	}
	agg.KeyChangesModel, agg.KeyChangesLLMAttempts = resp.Requested, resp.Attempts
	if err == nil {
		agg.KeyChanges, err = timetravel.ParseKeyChanges(resp.Text, done)
	}
	agg.KeyChangesMS = max(time.Since(start).Milliseconds(), 1)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		agg.KeyChanges = []job.KeyChange{}
		agg.KeyChangesError = err.Error()
		return h.store.EmitAggregate(ctx, j.ID, owner, events.KeyChangesFailed, events.ErrorData{Error: err.Error()})
	}
	return h.store.EmitAggregate(ctx, j.ID, owner, events.KeyChangesCompleted, events.KeyChangesData{KeyChanges: agg.KeyChanges})
}

// narrative streams the evolution narrative onto the job's events and fills
// agg. Model failures are recorded on agg; store errors are returned. pre is
// the admission's error, if any: then no call is made.
func (h *Handlers) narrative(ctx context.Context, j *job.Job, owner string, done []job.Snapshot, req llm.Request, pre error, agg *job.Aggregate) error {
	start := time.Now()
	b := newBatcher(func(text string) error {
		return h.store.EmitAggregate(ctx, j.ID, owner, events.NarrativeDelta, events.DeltaData{Text: text})
	})
	var resp llm.Response
	err := pre
	if err == nil {
		resp, err = h.llm.Stream(ctx, req, b.add)
	}
	if err == nil {
		err = b.flush()
	}
	agg.NarrativeModel, agg.NarrativeLLMAttempts = resp.Requested, resp.Attempts
	agg.NarrativeMS = max(time.Since(start).Milliseconds(), 1)
	if stopQuietly(err) {
		return err
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		agg.NarrativeError = err.Error()
		return h.store.EmitAggregate(ctx, j.ID, owner, events.NarrativeFailed, events.ErrorData{Error: err.Error()})
	}
	agg.Narrative = resp.Text
	return h.store.EmitAggregate(ctx, j.ID, owner, events.NarrativeCompleted, events.NarrativeData{Text: resp.Text})
}

// missingMessage says which snapshots a partial job lacks and why, e.g.
// "2 of 4 snapshots missing: March 2023 failed; May 2024 unfinished at the
// deadline".
func missingMessage(snaps []job.Snapshot) string {
	var parts []string
	for _, s := range snaps {
		switch s.Status {
		case job.SnapshotCompleted:
		case job.SnapshotFailed:
			parts = append(parts, s.Label+" failed")
		default:
			parts = append(parts, s.Label+" unfinished at the deadline")
		}
	}
	return fmt.Sprintf("%d of %d snapshots missing: %s", len(parts), len(snaps), strings.Join(parts, "; "))
}

// jobEnded records a job that this process ended: its duration and stage
// durations on the metrics, and its sample for the monitoring endpoints, in
// one pipelined write. It reads the job once and returns it (for the
// webhook), or nil when the read failed; failures are only logged.
func (h *Handlers) jobEnded(ctx context.Context, jobID string) *job.Job {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	j, err := h.store.Get(ctx, jobID)
	if err != nil {
		h.log.Warn("read the ended job for its timings", "job_id", jobID, "err", err)
		return nil
	}
	h.releaseInflight(ctx, j)
	if j.Spec.Warm {
		// Warming jobs have no client: their timings would only blur
		// those of the jobs people wait for.
		return j
	}
	s := monitoring.FromJob(j)
	s.Observe()
	if err := monitoring.New(h.store.Redis()).Record(ctx, s); err != nil {
		h.log.Warn("record the job's timings", "job_id", jobID, "err", err)
	}
	return j
}
