package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// HandleAggregate ends a job of any kind: it runs either when the last
// member finished (promoted) or ahead of the job's deadline
// (tasks.AggregateAt). It closes the job to member work, withdraws
// unfinished members, runs the parts of the aggregation its kind declares
// over the completed members (concurrently when provider capacity allows),
// and records the terminal state, all by the job's deadline: at the
// deadline its calls are cancelled and the job ends with what it has
// (endOverdue). A re-run (a redelivery, or a worker that died) announces
// itself and reuses the parts an earlier attempt finished. It is
// idempotent: on a job that has ended it only makes sure the webhook is
// queued.
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
		if werr := h.life.QueueWebhook(ctx, p.JobID, ended); werr != nil {
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
			ended = h.life.Ended(fctx, p.JobID)
		}
		log.Error("aggregation failed for good; job failed", "err", err, "finish_err", ferr)
		if werr := h.life.QueueWebhook(ctx, p.JobID, ended); werr != nil {
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

// tally splits a job's members into those that completed and the indexes
// of those that have no outcome yet (failed ones are in neither).
func tally(members []job.Member) (completed []job.Member, unfinished []int) {
	for _, m := range members {
		switch m.Status {
		case job.MemberCompleted:
			completed = append(completed, m)
		case job.MemberFailed:
		default:
			unfinished = append(unfinished, m.Index)
		}
	}
	return completed, unfinished
}

// newResult is j's result before any part: the time its aggregation
// began.
func newResult(j *job.Job) *job.Result {
	r := &job.Result{}
	if j.Result != nil {
		r.StartedAt = j.Result.StartedAt
	}
	return r
}

// partsOf returns the parts of the aggregation of j over completed, as its
// kind declares them.
func (h *Handlers) partsOf(j *job.Job, completed []job.Member) (jobkind.Kind, []jobkind.Part, error) {
	if h.kinds == nil {
		return nil, nil, errors.New("no job kinds registered")
	}
	kind, err := h.kinds.Of(j.Spec)
	if err != nil {
		return nil, nil, err
	}
	parts, err := kind.Parts(j.Spec, h.env, completed)
	if err != nil {
		return nil, nil, fmt.Errorf("parts of the %s aggregation: %w", kind.Name(), err)
	}
	return kind, parts, nil
}

// restoreParts puts in res the parts an earlier attempt finished (records,
// job.Part JSON by name) among parts, and reports which, by name.
func restoreParts(res *job.Result, parts []jobkind.Part, records map[string][]byte) map[string]bool {
	done := map[string]bool{}
	for _, p := range parts {
		raw, ok := records[p.Name]
		if !ok {
			continue
		}
		var rec job.Part
		if json.Unmarshal(raw, &rec) != nil {
			continue
		}
		rec.Name = p.Name
		res.Set(rec)
		done[p.Name] = true
	}
	return done
}

// order puts res's parts in the kind's order (parts); others go last.
func order(res *job.Result, parts []jobkind.Part) {
	rank := func(name string) int {
		i := slices.IndexFunc(parts, func(p jobkind.Part) bool { return p.Name == name })
		if i < 0 {
			return len(parts)
		}
		return i
	}
	slices.SortStableFunc(res.Parts, func(a, b job.Part) int { return rank(a.Name) - rank(b.Name) })
}

// outcome is the status and message of a job whose members are members,
// done of which completed, and whose result is res.
func outcome(noun job.Noun, members []job.Member, res *job.Result, done int) (job.Status, string) {
	status, msg := job.StatusCompleted, ""
	if missing := len(members) - done; missing > 0 {
		status = job.StatusPartial
		msg = missingMessage(noun, members)
	}
	if res.Failed() {
		status = job.StatusPartial
		if msg == "" {
			msg = "part of the aggregation failed"
		}
	}
	return status, msg
}

// unfinishedAtDeadline is the error of a part the deadline cut.
const unfinishedAtDeadline = "unfinished at the deadline"

// endOverdue ends a job whose deadline has passed with what it has: the
// members that completed and the aggregation parts that finished (a part
// that needs no call takes its fixed value; the others that did not finish
// fail, unfinished at the deadline); partial (or failed, with no member
// completed) unless all of it is there. It is how the deadline watchdog
// and an aggregation that ran out of time end a job, and safe to call for
// a job that has ended (it then only makes sure the watchdog forgets it).
// It returns the job as it ended when this call ended it.
func (h *Handlers) endOverdue(ctx context.Context, jobID string) (*job.Job, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	j, records, err := h.store.GetWithParts(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, h.store.ForgetDeadline(ctx, jobID)
	}
	if err != nil {
		return nil, err
	}
	if j.Status.Terminal() {
		return nil, h.store.ForgetDeadline(ctx, jobID)
	}
	noun := h.nounOf(j)
	completed, unfinished := tally(j.Members)
	done := len(completed)
	res := newResult(j)
	var parts []jobkind.Part
	if done > 0 {
		if _, parts, err = h.partsOf(j, completed); err != nil {
			// The parts are unknown: the job ends with its members only.
			h.log.Error("job ends at its deadline without its aggregation", "job_id", jobID, "err", err)
		}
	}
	restored := restoreParts(res, parts, records)
	status, msg := outcome(noun, j.Members, res, done)
	switch {
	case done == 0:
		status, msg = job.StatusFailed, fmt.Sprintf("deadline passed with no %s completed", noun)
		res = nil
	case len(restored) < len(parts):
		status = job.StatusPartial
		if msg == "" {
			msg = "deadline passed during the aggregation"
		} else {
			msg = "deadline passed: " + msg
		}
		for _, p := range parts {
			if restored[p.Name] {
				continue
			}
			if p.Fixed != nil {
				if rec, err := fixedPart(p); err == nil {
					res.Set(rec)
					continue
				}
			}
			res.Set(job.Part{Name: p.Name, Error: unfinishedAtDeadline})
		}
		order(res, parts)
	}
	if err := h.store.Finish(ctx, jobID, status, msg, res); err != nil {
		if errors.Is(err, store.ErrClosed) {
			return nil, nil
		}
		return nil, err
	}
	h.log.Warn("job ended at its deadline", "job_id", jobID, "status", status, noun.Plural(), done, "of", len(j.Members))
	if len(unfinished) > 0 {
		if err := tasks.Withdraw(h.insp, tasks.LaneOf(j.Spec.Warm), jobID, unfinished, false); err != nil {
			h.log.Warn("withdraw "+string(noun)+" tasks", "job_id", jobID, "err", err)
		}
	}
	return h.life.Ended(ctx, jobID), nil
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
	noun := h.nounOf(j)
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
	// its part for good, like any model failure.
	ctx = gateway.WithOwner(ctx, j.Spec.Owner)
	// A job whose members are done goes before every job still waiting
	// for its members in the provider's line: started jobs finish first.
	// (A warming job's aggregation waits behind the work people wait for.)
	if !j.Spec.Warm {
		ctx = limit.WithOrder(ctx, limit.Order{Due: j.Deadline, Urgent: true})
	}

	done, unfinished := tally(j.Members)
	if len(unfinished) > 0 {
		log.Warn("aggregation began with "+noun.Plural()+" unfinished; withdrawing them", "unfinished", len(unfinished))
		if err := tasks.Withdraw(h.insp, tasks.LaneOf(j.Spec.Warm), jobID, unfinished, false); err != nil {
			log.Warn("withdraw "+string(noun)+" tasks", "err", err)
		}
	}
	if len(done) == 0 {
		msg := fmt.Sprintf("all %s failed", noun.Plural())
		if len(unfinished) > 0 {
			msg = fmt.Sprintf("no %s completed by the deadline (%d failed, %d unfinished)", noun, len(j.Members)-len(unfinished), len(unfinished))
		}
		if err := h.store.FinishAggregate(ctx, jobID, owner, job.StatusFailed, msg, j.Result); err != nil {
			return nil, err
		}
		return h.life.Ended(ctx, jobID), nil
	}

	kind, parts, err := h.partsOf(j, done)
	if err != nil {
		// No retry would change that: the job fails at once.
		log.Error("aggregation impossible; job failed", "err", err)
		if err := h.store.FinishAggregate(ctx, jobID, owner, job.StatusFailed, "aggregation failed: "+err.Error(), j.Result); err != nil {
			return nil, err
		}
		return h.life.Ended(ctx, jobID), nil
	}
	res := newResult(j)
	restored := restoreParts(res, parts, begun.Parts)
	key := ""
	if h.caching.Cache != nil {
		key = kind.ResultKey(j.Spec, h.env, done)
	}
	if len(restored) == 0 && h.readsResultCache(j, done) {
		if hit := h.cachedResult(ctx, key, log); hit != nil && hasParts(hit, parts) {
			if err := h.serveCachedResult(ctx, j, owner, parts, hit, res); err != nil {
				return nil, err
			}
			if err := h.store.FinishAggregate(ctx, jobID, owner, job.StatusCompleted, "", res); err != nil {
				return nil, err
			}
			log.Info("job finished from the result cache", noun.Plural(), len(done))
			return h.life.Ended(ctx, jobID), nil
		}
	}
	var todo []jobkind.Part
	for _, p := range parts {
		if !restored[p.Name] {
			todo = append(todo, p)
		}
	}
	if err := h.runParts(ctx, j.ID, owner, todo, res, log); err != nil {
		if errors.Is(context.Cause(ctx), errPastDeadline) {
			return nil, errPastDeadline
		}
		return nil, err
	}
	order(res, parts)
	status, msg := outcome(noun, j.Members, res, len(done))
	// Cached before the job ends: an identical request that sees it ended
	// finds its result.
	h.keepResult(ctx, kind, j, key, done, res, log)
	if err := h.store.FinishAggregate(ctx, jobID, owner, status, msg, res); err != nil {
		return nil, err
	}
	log.Info("job finished", "status", status, noun.Plural(), len(done), "of", len(j.Members))
	return h.life.Ended(ctx, jobID), nil
}

// Capacity waits of the aggregation.
const (
	// secondCallWait bounds the wait for the capacity of each call after
	// the first before it runs after the others instead.
	secondCallWait = 200 * time.Millisecond
	// sequentialCallWait bounds the capacity wait of each call that runs
	// after the others.
	sequentialCallWait = 30 * time.Second
)

// runParts runs the parts todo of the job and puts their outcomes in res.
// A part with a fixed value is emitted with it, without a call. The calls
// run side by side as far as provider capacity allows, taken before
// anything is written: the first call waits for it as any call does (and
// without it, or with every breaker open, the aggregation goes back to the
// queue without using up a retry; it is bounded by the job's deadline),
// each other one only briefly (secondCallWait); those that got none run
// after the others, one at a time, each waiting longer
// (sequentialCallWait) while it holds only this aggregation's worker slot.
// Model failures are recorded on their parts; store errors and the end of
// ctx are returned.
func (h *Handlers) runParts(ctx context.Context, jobID, owner string, todo []jobkind.Part, res *job.Result, log *slog.Logger) error {
	var calls []jobkind.Part
	for _, p := range todo {
		if p.Fixed == nil {
			calls = append(calls, p)
			continue
		}
		rec, err := fixedPart(p)
		if err != nil {
			rec = job.Part{Name: p.Name, Error: err.Error()}
		}
		if err := h.store.EmitPart(ctx, jobID, owner, rec, false); err != nil {
			return err
		}
		res.Set(rec)
	}
	type run struct {
		part jobkind.Part
		ctx  context.Context
	}
	var now, later []run
	for k, p := range calls {
		wait := ctx
		if k > 0 {
			wait = llm.WithCapacityWait(ctx, secondCallWait)
		}
		callCtx, release, err := h.admit(wait, p.Request)
		defer release()
		switch {
		case k > 0 && errors.Is(err, llm.ErrNoCapacity):
			// The calls before it hold the capacity there is: it follows
			// them.
			later = append(later, run{p, llm.WithCapacityWait(ctx, sequentialCallWait)})
		case err != nil:
			return fmt.Errorf("aggregation of job %s: %w", jobID, err)
		default:
			now = append(now, run{p, callCtx})
		}
	}
	if len(later) > 0 {
		log.Debug("provider capacity for fewer calls than parts: the rest follow one at a time",
			"side_by_side", len(now), "after", len(later))
	}
	recs := make([]job.Part, len(now))
	errs := make([]error, len(now))
	var wg sync.WaitGroup
	for i, r := range now {
		wg.Go(func() { recs[i], errs[i] = h.runPart(llm.WithLogger(r.ctx, log), jobID, owner, r.part) })
	}
	wg.Wait()
	for i, rec := range recs {
		if errs[i] == nil {
			res.Set(rec)
		}
	}
	err := errors.Join(errs...)
	for _, r := range later {
		if err != nil {
			break
		}
		var rec job.Part
		if rec, err = h.runPart(llm.WithLogger(r.ctx, log), jobID, owner, r.part); err == nil {
			res.Set(rec)
		}
	}
	return err
}

// fixedPart is the record of a part with a fixed value.
func fixedPart(p jobkind.Part) (job.Part, error) {
	v, err := json.Marshal(p.Fixed)
	if err != nil {
		return job.Part{}, fmt.Errorf("encode the value of part %s: %w", p.Name, err)
	}
	return job.Part{Name: p.Name, Value: v}, nil
}

// runPart makes the call of one part and emits its terminal event, once
// per job, and returns its record. A failed or unacceptable answer is
// recorded on the part (its Error), not returned: only store errors and
// the end of ctx (the job's deadline, its end) are.
func (h *Handlers) runPart(ctx context.Context, jobID, owner string, p jobkind.Part) (job.Part, error) {
	if p.Stream {
		return h.streamPart(ctx, jobID, owner, p)
	}
	return h.structuredPart(ctx, jobID, owner, p)
}

// structuredPart asks for a structured part's answer (not streamed) and
// makes its value with the part's Parse, through the request's validator,
// so that an unacceptable answer is retried once by the gateway.
func (h *Handlers) structuredPart(ctx context.Context, jobID, owner string, p jobkind.Part) (job.Part, error) {
	start := time.Now()
	req := p.Request
	var (
		mu     sync.Mutex
		value  any
		parsed bool
	)
	if p.Parse != nil {
		req.Validate = func(text string) error {
			v, err := p.Parse(text)
			if err != nil {
				return err
			}
			mu.Lock()
			value, parsed = v, true
			mu.Unlock()
			return nil
		}
	}
	resp, err := h.llm.Complete(ctx, req)
	rec := job.Part{Name: p.Name, Model: resp.Requested, LLMAttempts: resp.Attempts, MS: max(time.Since(start).Milliseconds(), 1)}
	mu.Lock()
	v, ok := value, parsed
	mu.Unlock()
	if err == nil && !ok {
		// A model without a validator step (tests' fakes): parse here.
		v, err = parseAnswer(p, resp.Text)
	}
	var raw []byte
	if err == nil {
		raw, err = json.Marshal(v)
	}
	if err != nil {
		if ctx.Err() != nil || redisx.Unavailable(err) {
			return rec, errors.Join(err, context.Cause(ctx))
		}
		rec.Error = err.Error()
		return rec, h.store.EmitPart(ctx, jobID, owner, rec, false)
	}
	rec.Value = raw
	return rec, h.store.EmitPart(ctx, jobID, owner, rec, false)
}

// parseAnswer is the value of a structured part's answer: what its Parse
// makes of it, or, without one, the answer itself (as JSON when it is).
func parseAnswer(p jobkind.Part, text string) (any, error) {
	if p.Parse != nil {
		return p.Parse(text)
	}
	if json.Valid([]byte(text)) {
		return json.RawMessage(text), nil
	}
	return text, nil
}

// streamPart streams a part's text onto the job's events (<part>.delta)
// and emits its terminal event.
func (h *Handlers) streamPart(ctx context.Context, jobID, owner string, p jobkind.Part) (job.Part, error) {
	start := time.Now()
	seq := 0
	b := newBatcher(h.batching, func(text string) error {
		seq++
		return h.store.AppendPartText(ctx, jobID, owner, p.Name, seq, text)
	})
	defer b.close()
	resp, err := h.llm.Stream(ctx, p.Request, b.add)
	if err == nil {
		err = b.flush()
	}
	rec := job.Part{Name: p.Name, Model: resp.Requested, LLMAttempts: resp.Attempts, MS: max(time.Since(start).Milliseconds(), 1)}
	if stopQuietly(err) {
		return rec, err
	}
	if err != nil && (ctx.Err() != nil || redisx.Unavailable(err)) {
		return rec, errors.Join(err, context.Cause(ctx))
	}
	if err != nil {
		rec.Error = err.Error()
	} else {
		rec.Text = resp.Text
	}
	return rec, h.store.EmitPart(ctx, jobID, owner, rec, false)
}

// missingMessage says which members a partial job lacks and why, e.g.
// "2 of 4 snapshots missing: March 2023 failed; May 2024 unfinished at the
// deadline".
func missingMessage(noun job.Noun, members []job.Member) string {
	var parts []string
	for _, m := range members {
		switch m.Status {
		case job.MemberCompleted:
		case job.MemberFailed:
			parts = append(parts, m.Label+" failed")
		default:
			parts = append(parts, m.Label+" unfinished at the deadline")
		}
	}
	return fmt.Sprintf("%d of %d %s missing: %s", len(parts), len(members), noun.Plural(), strings.Join(parts, "; "))
}
