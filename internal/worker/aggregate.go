package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// HandleAggregate ends a job: it runs either when the last snapshot finished
// (promoted) or ahead of the job's deadline (tasks.AggregateAt). It closes
// the job to snapshot work, withdraws unfinished snapshots, runs the
// key-changes extraction and the narrative concurrently, and records the
// terminal state, all by the job's deadline: at the deadline its calls are
// cancelled and the job ends with what it has (endOverdue). A re-run (a
// redelivery, or a worker that died) announces itself and reuses the parts
// an earlier attempt finished. It is idempotent: on a job that has ended it
// only makes sure the webhook is queued.
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
	if errors.Is(err, errPastDeadline) {
		// The deadline came first: the job ends now with what it has.
		ended, err = h.endOverdue(ctx, p.JobID)
		if err != nil {
			log.Warn("could not end the job at its deadline; the watchdog will", "err", err)
			return err
		}
	}
	if err == nil || stopQuietly(err) || errors.Is(context.Cause(work), errJobClosed) {
		// The job ended, by this run or before it (then BeginAggregate
		// said ErrClosed): its webhook goes on the queue. This task is a
		// safety net of every path that ends a job: when queuing fails,
		// asynq runs it again, and the next run finds the job ended and
		// queues again.
		if werr := h.queueWebhook(ctx, p.JobID, ended); werr != nil {
			log.Warn("could not queue the webhook; the aggregation task will try again", "err", werr)
			return werr
		}
		return nil
	}
	if handedBack(err) {
		log.Debug("aggregation handed back", "reason", err)
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

// requestSlack is the time the gateway keeps between a request's end and
// its context's deadline (gateway's deadline margin).
const requestSlack = 2 * time.Second

// errPastDeadline: the job's deadline came before its aggregation ended.
var errPastDeadline = errors.New("the job's deadline passed")

// handedBack tells the errors after which a task goes back to its queue
// without using up a retry (isFailure): no provider capacity, every
// breaker open, Redis out of reach, a job not written yet.
func handedBack(err error) bool {
	return errors.Is(err, llm.ErrNoCapacity) || errors.Is(err, llm.ErrCircuitOpen) || redisx.Unavailable(err) ||
		errors.Is(err, errJobNotWritten)
}

// Aggregation parts: the terminal event of each is appended once per job,
// with its record, which a later attempt reuses.
const (
	partKeyChanges = "key_changes"
	partNarrative  = "narrative"
)

// keyChangesRecord and narrativeRecord are the parts' records.
type keyChangesRecord struct {
	KeyChanges []job.KeyChange `json:"key_changes"`
	Error      string          `json:"error,omitempty"`
	Model      string          `json:"model,omitempty"`
	Attempts   int             `json:"attempts,omitempty"`
	MS         int64           `json:"ms,omitempty"`
}

type narrativeRecord struct {
	Text     string `json:"text,omitempty"`
	Error    string `json:"error,omitempty"`
	Model    string `json:"model,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	MS       int64  `json:"ms,omitempty"`
}

// restoreParts fills agg with the parts an earlier attempt finished and
// reports which.
func restoreParts(agg *job.Aggregate, parts map[string][]byte) (kc, narr bool) {
	var k keyChangesRecord
	if raw, ok := parts[partKeyChanges]; ok && json.Unmarshal(raw, &k) == nil {
		kc = true
		agg.KeyChanges, agg.KeyChangesError = k.KeyChanges, k.Error
		if agg.KeyChanges == nil {
			agg.KeyChanges = []job.KeyChange{}
		}
		agg.KeyChangesModel, agg.KeyChangesLLMAttempts, agg.KeyChangesMS = k.Model, k.Attempts, k.MS
	}
	var n narrativeRecord
	if raw, ok := parts[partNarrative]; ok && json.Unmarshal(raw, &n) == nil {
		narr = true
		agg.Narrative, agg.NarrativeError = n.Text, n.Error
		agg.NarrativeModel, agg.NarrativeLLMAttempts, agg.NarrativeMS = n.Model, n.Attempts, n.MS
	}
	return kc, narr
}

// tally splits a job's snapshots into those that completed and the indexes
// of those that have no outcome yet (failed ones are in neither).
func tally(snaps []job.Snapshot) (completed []job.Snapshot, unfinished []int) {
	for _, s := range snaps {
		switch s.Status {
		case job.SnapshotCompleted:
			completed = append(completed, s)
		case job.SnapshotFailed:
		default:
			unfinished = append(unfinished, s.Index)
		}
	}
	return completed, unfinished
}

// newAggregate is j's aggregate before any part: no key changes yet, and
// the time its aggregation began.
func newAggregate(j *job.Job) *job.Aggregate {
	agg := &job.Aggregate{KeyChanges: []job.KeyChange{}}
	if j.Aggregate != nil {
		agg.StartedAt = j.Aggregate.StartedAt
	}
	return agg
}

// outcome is the status and message of a job that ends with the given
// snapshots and aggregate.
func outcome(snaps []job.Snapshot, agg *job.Aggregate, done int) (job.Status, string) {
	status, msg := job.StatusCompleted, ""
	if missing := len(snaps) - done; missing > 0 {
		status = job.StatusPartial
		msg = missingMessage(snaps)
	}
	if agg != nil && (agg.KeyChangesError != "" || agg.NarrativeError != "") {
		status = job.StatusPartial
		if msg == "" {
			msg = "part of the aggregation failed"
		}
	}
	return status, msg
}

// endOverdue ends a job whose deadline has passed with what it has: the
// snapshots that completed and the aggregation parts that finished;
// partial (or failed, with no snapshot) unless all of it is there. It is
// how the deadline watchdog and an aggregation that ran out of time end a
// job, and safe to call for a job that has ended (it then only makes sure
// the watchdog forgets it). It returns the job as it ended when this call
// ended it.
func (h *Handlers) endOverdue(ctx context.Context, jobID string) (*job.Job, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	j, parts, err := h.store.GetWithParts(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, h.store.ForgetDeadline(ctx, jobID)
	}
	if err != nil {
		return nil, err
	}
	if j.Status.Terminal() {
		return nil, h.store.ForgetDeadline(ctx, jobID)
	}
	completed, unfinished := tally(j.Snapshots)
	done := len(completed)
	agg := newAggregate(j)
	kc, narr := restoreParts(agg, parts)
	status, msg := outcome(j.Snapshots, agg, done)
	switch {
	case done == 0:
		status, msg = job.StatusFailed, "deadline passed with no snapshot completed"
		agg = nil
	case !kc || !narr:
		status = job.StatusPartial
		if msg == "" {
			msg = "deadline passed during the aggregation"
		} else {
			msg = "deadline passed: " + msg
		}
		if !kc && done >= 2 {
			agg.KeyChangesError = "unfinished at the deadline"
		}
		if !narr {
			agg.NarrativeError = "unfinished at the deadline"
		}
	}
	if err := h.store.Finish(ctx, jobID, status, msg, agg); err != nil {
		if errors.Is(err, store.ErrClosed) {
			return nil, nil
		}
		return nil, err
	}
	h.log.Warn("job ended at its deadline", "job_id", jobID, "status", status, "snapshots", done, "of", len(j.Snapshots))
	if len(unfinished) > 0 {
		if err := tasks.Withdraw(h.insp, tasks.LaneOf(j.Spec.Warm), jobID, unfinished, false); err != nil {
			h.log.Warn("withdraw snapshot tasks", "job_id", jobID, "err", err)
		}
	}
	return h.jobEnded(ctx, jobID), nil
}

// aggregate runs the aggregation of jobID and returns the job as it ended,
// when this run ended it (nil otherwise, or when that read failed).
func (h *Handlers) aggregate(ctx context.Context, jobID string) (*job.Job, error) {
	owner := uuid.NewString()
	begun, err := h.store.BeginAggregate(ctx, jobID, owner)
	if err != nil {
		return nil, err
	}
	j := begun.Job
	log := h.log.With("job_id", jobID, "stage", "aggregate", "attempt", begun.Attempt).With(tracing.LogAttrs(ctx)...)
	if begun.Attempt > 1 {
		log.Warn("aggregation runs again", "parts_done", len(begun.Parts))
	}
	if !time.Now().Before(j.Deadline) {
		return nil, errPastDeadline
	}
	// Nothing of the aggregation outlives the job's deadline. The context
	// ends requestSlack after it because the gateway cuts requests that
	// much before their context's deadline: so they run to the deadline
	// itself, where the watchdog ends the job whatever this run does.
	ctx, cancel := context.WithDeadlineCause(ctx, j.Deadline.Add(requestSlack), errPastDeadline)
	defer cancel()
	// The job's owner pays for its calls; a call its budget refuses fails
	// its part for good (keyChanges, narrative), like any model failure.
	ctx = gateway.WithOwner(ctx, j.Spec.Owner)

	done, unfinished := tally(j.Snapshots)
	if len(unfinished) > 0 {
		log.Warn("aggregation began with snapshots unfinished; withdrawing them", "unfinished", len(unfinished))
		if err := tasks.Withdraw(h.insp, tasks.LaneOf(j.Spec.Warm), jobID, unfinished, false); err != nil {
			log.Warn("withdraw snapshot tasks", "err", err)
		}
	}
	if len(done) == 0 {
		msg := "all snapshots failed"
		if len(unfinished) > 0 {
			msg = fmt.Sprintf("no snapshot completed by the deadline (%d failed, %d unfinished)", len(j.Snapshots)-len(unfinished), len(unfinished))
		}
		if err := h.store.FinishAggregate(ctx, jobID, owner, job.StatusFailed, msg, j.Aggregate); err != nil {
			return nil, err
		}
		return h.jobEnded(ctx, jobID), nil
	}

	agg := newAggregate(j)
	kcDone, narrDone := restoreParts(agg, begun.Parts)
	if !kcDone && !narrDone {
		if hit := h.cachedAggregate(ctx, j, done, log); hit != nil {
			if err := h.serveCachedAggregate(ctx, j, owner, done, hit, agg); err != nil {
				return nil, err
			}
			if err := h.store.FinishAggregate(ctx, jobID, owner, job.StatusCompleted, "", agg); err != nil {
				return nil, err
			}
			log.Info("job finished from the result cache", "snapshots", len(done))
			return h.jobEnded(ctx, jobID), nil
		}
	}
	if err := h.runParts(ctx, j, owner, done, agg, !kcDone, !narrDone, log); err != nil {
		if errors.Is(context.Cause(ctx), errPastDeadline) {
			return nil, errPastDeadline
		}
		return nil, err
	}
	status, msg := outcome(j.Snapshots, agg, len(done))
	// Cached before the job ends: an identical request that sees it ended
	// finds its result.
	h.keepAggregate(ctx, j, done, agg, log)
	if err := h.store.FinishAggregate(ctx, jobID, owner, status, msg, agg); err != nil {
		return nil, err
	}
	log.Info("job finished", "status", status, "snapshots", len(done), "of", len(j.Snapshots))
	return h.jobEnded(ctx, jobID), nil
}

// runParts runs the key changes (withKC) and the narrative (withNarr) of
// the job, side by side when both get provider capacity at once, else one
// after the other. Capacity is taken before anything is written: without
// it, or with every breaker open, the aggregation goes back to the queue
// without using up a retry (it is bounded by the job's deadline).
func (h *Handlers) runParts(ctx context.Context, j *job.Job, owner string, done []job.Snapshot, agg *job.Aggregate, withKC, withNarr bool, log *slog.Logger) error {
	if len(done) < 2 && withKC {
		// One snapshot has no transition: nothing to ask.
		if err := h.emitKeyChanges(ctx, j.ID, owner, agg, nil); err != nil {
			return err
		}
		withKC = false
	}
	kcReq := h.keyChangesRequest(j, done)
	narrReq := h.narrativeRequest(j, done)
	kcCtx, narrCtx := ctx, ctx
	sequential := false
	if withKC {
		var release func()
		var err error
		kcCtx, release, err = h.admit(ctx, kcReq)
		defer release()
		if err != nil {
			return fmt.Errorf("aggregation of job %s: %w", j.ID, err)
		}
	}
	if withNarr {
		wait := ctx
		if withKC {
			wait = llm.WithCapacityWait(ctx, secondCallWait)
		}
		var release func()
		var err error
		narrCtx, release, err = h.admit(wait, narrReq)
		defer release()
		switch {
		case withKC && errors.Is(err, llm.ErrNoCapacity):
			// The key changes hold a slot: the narrative follows them, and
			// may wait longer, holding only this aggregation's worker slot.
			sequential, narrCtx = true, llm.WithCapacityWait(ctx, sequentialCallWait)
		case err != nil:
			return fmt.Errorf("aggregation of job %s: %w", j.ID, err)
		}
	}
	kcCtx, narrCtx = llm.WithLogger(kcCtx, log), llm.WithLogger(narrCtx, log)
	var (
		wg      sync.WaitGroup
		kcErr   error
		narrErr error
	)
	switch {
	case sequential:
		log.Debug("provider capacity for one call: key changes, then narrative")
		kcErr = h.keyChanges(kcCtx, j, owner, done, kcReq, agg)
		if kcErr == nil {
			narrErr = h.narrative(narrCtx, j, owner, narrReq, agg)
		}
	default:
		if withKC {
			wg.Go(func() { kcErr = h.keyChanges(kcCtx, j, owner, done, kcReq, agg) })
		}
		if withNarr {
			wg.Go(func() { narrErr = h.narrative(narrCtx, j, owner, narrReq, agg) })
		}
		wg.Wait()
	}
	return errors.Join(kcErr, narrErr)
}

// Capacity waits of the aggregation.
const (
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

// keyChanges fills agg's key changes and emits their event, once per job.
// A failed or malformed answer (retried once by the gateway through the
// request's validator) is recorded on agg, not returned: only store errors
// and the end of ctx (the job's deadline, its end) are.
func (h *Handlers) keyChanges(ctx context.Context, j *job.Job, owner string, done []job.Snapshot, req llm.Request, agg *job.Aggregate) error {
	start := time.Now()
	var kcs []job.KeyChange
	req.Validate = func(text string) error {
		var err error
		kcs, err = timetravel.ParseKeyChanges(text, done)
		return err
	}
	resp, err := h.llm.Complete(ctx, req)
	agg.KeyChangesModel, agg.KeyChangesLLMAttempts = resp.Requested, resp.Attempts
	agg.KeyChangesMS = max(time.Since(start).Milliseconds(), 1)
	if err == nil && kcs == nil {
		// A model without a validator step (tests' fakes): parse here.
		kcs, err = timetravel.ParseKeyChanges(resp.Text, done)
	}
	if err != nil {
		if ctx.Err() != nil || redisx.Unavailable(err) {
			return errors.Join(err, context.Cause(ctx))
		}
		agg.KeyChanges = []job.KeyChange{}
		agg.KeyChangesError = err.Error()
		return h.emitKeyChanges(ctx, j.ID, owner, agg, err)
	}
	agg.KeyChanges = kcs
	return h.emitKeyChanges(ctx, j.ID, owner, agg, nil)
}

// emitKeyChanges appends the key changes' terminal event with its record.
func (h *Handlers) emitKeyChanges(ctx context.Context, jobID, owner string, agg *job.Aggregate, failure error) error {
	rec, _ := json.Marshal(keyChangesRecord{KeyChanges: agg.KeyChanges, Error: agg.KeyChangesError,
		Model: agg.KeyChangesModel, Attempts: agg.KeyChangesLLMAttempts, MS: agg.KeyChangesMS})
	if failure != nil {
		return h.store.EmitAggregatePart(ctx, jobID, owner, partKeyChanges, events.KeyChangesFailed, events.ErrorData{Error: failure.Error()}, rec)
	}
	return h.store.EmitAggregatePart(ctx, jobID, owner, partKeyChanges, events.KeyChangesCompleted, events.KeyChangesData{KeyChanges: agg.KeyChanges, Cached: agg.Cached}, rec)
}

// narrative streams the evolution narrative onto the job's events and fills
// agg, and emits its terminal event once per job. Model failures are
// recorded on agg; store errors and the end of ctx are returned.
func (h *Handlers) narrative(ctx context.Context, j *job.Job, owner string, req llm.Request, agg *job.Aggregate) error {
	start := time.Now()
	seq := 0
	b := newBatcher(func(text string) error {
		seq++
		return h.store.AppendNarrativeText(ctx, j.ID, owner, seq, text)
	})
	resp, err := h.llm.Stream(ctx, req, b.add)
	if err == nil {
		err = b.flush()
	}
	agg.NarrativeModel, agg.NarrativeLLMAttempts = resp.Requested, resp.Attempts
	agg.NarrativeMS = max(time.Since(start).Milliseconds(), 1)
	if stopQuietly(err) {
		return err
	}
	if err != nil && (ctx.Err() != nil || redisx.Unavailable(err)) {
		return errors.Join(err, context.Cause(ctx))
	}
	if err != nil {
		agg.NarrativeError = err.Error()
	} else {
		agg.Narrative = resp.Text
	}
	rec, _ := json.Marshal(narrativeRecord{Text: agg.Narrative, Error: agg.NarrativeError,
		Model: agg.NarrativeModel, Attempts: agg.NarrativeLLMAttempts, MS: agg.NarrativeMS})
	if err != nil {
		return h.store.EmitAggregatePart(ctx, j.ID, owner, partNarrative, events.NarrativeFailed, events.ErrorData{Error: err.Error()}, rec)
	}
	return h.store.EmitAggregatePart(ctx, j.ID, owner, partNarrative, events.NarrativeCompleted, events.NarrativeData{Text: resp.Text}, rec)
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
