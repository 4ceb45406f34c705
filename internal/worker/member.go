package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/pause"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// HandleMember makes one member call of a job, of any kind: everything it
// needs is in its payload (the request, the cache key). It streams the
// model's text onto the job's events (<noun>.delta), records the outcome
// once whatever the number of deliveries, and starts the aggregation when
// it finished the last member. It returns an error only when asynq should
// retry the task.
func (h *Handlers) HandleMember(ctx context.Context, t *asynq.Task) error {
	var p tasks.MemberPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode member payload: %v: %w", err, asynq.SkipRetry)
	}
	noun := h.nounOfKind(p.Kind)
	// The span is named by the kind's noun ("snapshot"), as its events.
	ctx, span := tasks.StartSpan(ctx, t, string(noun), p.JobID)
	span.SetAttributes(attribute.Int(string(noun)+".index", p.Index), attribute.String(string(noun)+".label", p.Label))
	defer span.End()
	log := h.log.With("job_id", p.JobID, string(noun), p.Index, "label", p.Label).With(tracing.LogAttrs(ctx)...)
	work, stop := h.stopWhenClosed(ctx, p.JobID, false)
	defer stop()
	err := h.member(work, p, noun, log)
	// A job not written yet reads as closed to the watch (a missing job
	// is how an expired one looks): its hand-back must stand.
	if err != nil && !errors.Is(err, errJobNotWritten) && errors.Is(context.Cause(work), errJobClosed) {
		log.Info(string(noun) + " stopped: job closed while it ran")
		return nil
	}
	endSpan(span, err)
	return err
}

// defaultNoun names the members of a kind the registry does not know (in
// logs only: such a job's events are named by the store).
const defaultNoun job.Noun = "member"

// nounOfKind is what the kind named kind calls its members.
func (h *Handlers) nounOfKind(kind string) job.Noun {
	if h.kinds == nil {
		return defaultNoun
	}
	k, err := h.kinds.Of(job.Spec{Kind: kind})
	if err != nil {
		return defaultNoun
	}
	return k.Noun()
}

// nounOf is what j's kind calls its members.
func (h *Handlers) nounOf(j *job.Job) job.Noun {
	if j.Noun != "" {
		return j.Noun
	}
	return h.nounOfKind(j.Spec.Kind)
}

// endSpan marks a task's span failed when its run returns an error (a
// retry or a hand-back).
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}

func (h *Handlers) member(ctx context.Context, p tasks.MemberPayload, noun job.Noun, log *slog.Logger) error {
	req := p.Request.LLM()
	model := req.Model
	if hit := h.cachedMember(ctx, p, noun, log); hit != nil {
		return h.serveCachedMember(ctx, p, noun, hit, log)
	}
	// Capacity first: without it the task goes back to the queue having
	// recorded nothing, and without using up a retry. The provider's line
	// serves the job with the earliest deadline first, which keeps a
	// job's members together and jobs in the order they came.
	callCtx, release, admitErr := h.admit(limit.WithOrder(ctx, memberOrder(p)), req)
	defer release()
	switch {
	case handedBack(admitErr):
		// No capacity, every breaker open after waiting as for capacity,
		// or Redis out of reach: back to the queue without using up a
		// retry. The job's deadline bounds the waiting: its aggregation
		// withdraws the task.
		log.Debug(string(noun)+" handed back", "reason", admitErr)
		return fmt.Errorf("%s %d of job %s: %w", noun, p.Index, p.JobID, admitErr)
	case admitErr != nil:
		return fmt.Errorf("%s %d of job %s: admit: %w", noun, p.Index, p.JobID, admitErr)
	}

	owner := uuid.NewString()
	attempt, fan, err := h.startMember(ctx, p, owner, model)
	switch {
	case errors.Is(err, store.ErrMemberDone):
		// A duplicate or a retry after the outcome was recorded: make sure
		// the fan-in happened, in case the earlier delivery died before it.
		log.Info(string(noun) + " already done; duplicate delivery ignored")
		if fan.Last() {
			return h.promote(p)
		}
		return nil
	case notWrittenYet(err, p):
		return fmt.Errorf("%s %d of job %s: %w", noun, p.Index, p.JobID, errJobNotWritten)
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrNotFound):
		log.Info("job takes no more "+string(noun)+" work", "reason", err)
		return nil
	case err != nil:
		return err
	}
	log = log.With("attempt", attempt, "model", model)
	log.Debug(string(noun) + " started")
	// The job's owner pays for the call from its token budget.
	callCtx = gateway.WithOwner(callCtx, p.Owner)

	seq := 0
	b := newBatcher(h.batching, func(text string) error {
		seq++
		return h.store.AppendMemberText(ctx, p.JobID, p.Index, owner, seq, text)
	})
	defer b.close()
	start := time.Now()
	resp, callErr := h.llm.Stream(llm.WithLogger(callCtx, log), req, b.add)
	if callErr == nil {
		callErr = b.flush()
	}
	if stopQuietly(callErr) {
		log.Info(string(noun)+" stopped: job closed or attempt superseded", "reason", callErr)
		return nil
	}
	if redisx.Unavailable(callErr) {
		// Redis stayed out of reach for the whole run: not the model's
		// failure. The task goes back without using up a retry, and its
		// next delivery takes the member over.
		return fmt.Errorf("%s %d of job %s: %w", noun, p.Index, p.JobID, callErr)
	}
	if callErr != nil && errors.Is(ctx.Err(), context.Canceled) {
		// The job closed (HandleMember tells) or the worker is stopping
		// (asynq hands the task back).
		return fmt.Errorf("%s %d of job %s interrupted: %w", noun, p.Index, p.JobID, context.Cause(ctx))
	}
	// Past the task's own timeout the outcome is still recorded, with a
	// context of its own, so that a last attempt counts towards fan-in.
	wctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
	}

	out := store.MemberOutcome{Text: resp.Text, Model: resp.Requested, LLMAttempts: resp.Attempts}
	if callErr != nil {
		// No capacity for a retry inside the call: handed back like a
		// lack of capacity at the start, which uses up no retry.
		handBack := handedBack(callErr)
		// A spent token budget stays spent until midnight: the member
		// fails for good.
		retry := !errors.Is(callErr, gateway.ErrBudgetExhausted) && (handBack || (llm.Retryable(callErr) && !tasks.LastAttempt(ctx)))
		out = store.MemberOutcome{
			Err: callErr, Retry: retry,
			Model: resp.Requested, LLMAttempts: resp.Attempts,
		}
		log.Warn(string(noun)+" call failed", "err", callErr, "retry", out.Retry, "llm_attempts", resp.Attempts)
	}
	if callErr == nil {
		// Cached before the outcome is recorded: once a job has ended,
		// every answer it was made of is in the cache.
		h.keepMember(wctx, p, resp.Requested, resp.Text, log)
	}
	fan, err = h.store.FinishMember(wctx, p.JobID, p.Index, owner, out)
	switch {
	case errors.Is(err, store.ErrMemberDone):
		// Recorded already (by this call, whose reply was lost, or a
		// duplicate): the fan-in may still be this one's to finish.
		if fan.Last() {
			return h.promote(p)
		}
		return nil
	case stopQuietly(err):
		return nil
	case err != nil:
		return err
	}
	if out.Retry {
		return fmt.Errorf("%s %d of job %s: %w", noun, p.Index, p.JobID, callErr)
	}
	log.Info(string(noun)+" done", "ok", callErr == nil, "ms", time.Since(start).Milliseconds(),
		"first_token_ms", resp.FirstToken.Milliseconds(), "answered_by", resp.Requested, "llm_attempts", resp.Attempts,
		"done", fan.Done, "of", fan.Total)
	if fan.Last() {
		return h.promote(p)
	}
	return nil
}

// memberOrder places a member's capacity wait in its provider's line: by
// its job's deadline, later by the job's wait for its turn to queue
// (tasks.MemberPayload.LineMS). Warming jobs' members name none, so they
// wait behind the work people wait for.
func memberOrder(p tasks.MemberPayload) limit.Order {
	switch {
	case p.Warm:
		return limit.Order{}
	case p.LineMS > 0:
		return limit.Order{Due: time.UnixMilli(p.LineMS)}
	case p.DeadlineMS > 0:
		return limit.Order{Due: time.UnixMilli(p.DeadlineMS)}
	}
	return limit.Order{}
}

// errJobNotWritten hands a member task back while its job is not written
// yet: the api queues a job's tasks before it writes the job.
var errJobNotWritten = errors.New("job not written yet")

// Waiting for a job's write. The api queues a job's tasks, then writes the
// job (so that no job exists without its tasks), and a worker woken by the
// enqueue (package wakeup) can start a member within a millisecond, before
// the write lands. A short wait here costs a few Redis calls; a hand-back
// would cost a queue retry (hundreds of milliseconds).
const (
	writtenWaitFirst = time.Millisecond
	writtenWaitMax   = 250 * time.Millisecond
)

// startMember records the start of member p.Index (store.StartMember) and,
// while the job is not written yet, tries again with a doubling pause, for
// up to writtenWaitMax in all; then it returns what the store said.
func (h *Handlers) startMember(ctx context.Context, p tasks.MemberPayload, owner, model string) (int, store.FanIn, error) {
	wait, waited := writtenWaitFirst, time.Duration(0)
	for {
		attempt, fan, err := h.store.StartMember(ctx, p.JobID, p.Index, owner, model)
		if !notWrittenYet(err, p) || waited >= writtenWaitMax {
			return attempt, fan, err
		}
		if pause.For(ctx, wait) != nil {
			return attempt, fan, err
		}
		waited += wait
		wait = min(2*wait, writtenWaitMax-waited)
	}
}

// notWrittenYet reports whether err says the member's job does not exist
// while its deadline has not passed: it is being written (or its writer
// died, and the task ends at the deadline).
func notWrittenYet(err error, p tasks.MemberPayload) bool {
	return errors.Is(err, store.ErrNotFound) && p.DeadlineMS > 0 && time.Now().UnixMilli() < p.DeadlineMS
}

// promote starts the aggregation of the member's job now. An error makes
// asynq retry the member task, whose next delivery promotes again.
func (h *Handlers) promote(p tasks.MemberPayload) error {
	return tasks.Promote(h.insp, tasks.LaneOf(p.Warm), p.JobID)
}

// errJobClosed is the cancellation cause of work whose job closed.
var errJobClosed = errors.New("job closed")

// stopWhenClosed returns a context that is cancelled with errJobClosed as
// soon as the store announces that jobID no longer takes this work: member
// work stops when aggregation begins or the job ends; aggregation work
// (terminalOnly) only when the job ends. stop releases it.
func (h *Handlers) stopWhenClosed(ctx context.Context, jobID string, terminalOnly bool) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if h.closed == nil {
		return ctx, func() { cancel(nil) }
	}
	wake, unwatch := h.closed.Watch(jobID)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-wake:
				// Wakes also come on resubscription: check the status.
				if h.closedTo(jobID, terminalOnly) {
					cancel(errJobClosed)
					return
				}
			}
		}
	}()
	return ctx, func() {
		close(done)
		unwatch()
		cancel(nil)
	}
}

// closedTo reports whether the job has left the member stage (or, with
// terminalOnly, has ended). It reads with a context of its own.
func (h *Handlers) closedTo(jobID string, terminalOnly bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := h.store.Status(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return true
	}
	if err != nil {
		h.log.Warn("read job status", "job_id", jobID, "err", err)
		return false
	}
	if terminalOnly {
		return st.Terminal()
	}
	return st != job.StatusQueued && st != job.StatusRunning
}

// stopQuietly tells the errors after which a task has nothing left to do.
func stopQuietly(err error) bool {
	return errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound)
}

// admit takes provider capacity for r's first request ahead of the call,
// when the model guards capacity (see Admitter); otherwise it does nothing.
func (h *Handlers) admit(ctx context.Context, r llm.Request) (context.Context, func(), error) {
	if a, ok := h.llm.(Admitter); ok {
		return a.Admit(ctx, r)
	}
	return ctx, func() {}, nil
}
