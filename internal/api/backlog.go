package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/backlog"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// maxRetryAfter bounds the Retry-After of an overloaded answer.
const maxRetryAfter = time.Hour

// newBacklog returns the estimator of the user member queue's backlog
// against the providers' in-flight caps, summed (a provider without its
// own cap has LLM_MAX_IN_FLIGHT).
func newBacklog(cfg config.Config, s *Server) *backlog.Estimator {
	capacity := 0
	for _, p := range cfg.LLM.ProviderList() {
		n := p.MaxInFlight
		if n <= 0 {
			n = cfg.LLM.MaxInFlight
		}
		capacity += n
	}
	return backlog.New(backlog.Options{Redis: s.rdb, Queue: tasks.QueueSnapshot, Capacity: capacity, Now: s.now})
}

// overloaded refuses a job whose member calls would wait longer than the
// limit: the lower of MAX_BACKLOG_SECONDS and the time that leaves the
// job's last member a typical call before its aggregation begins.
type overloaded struct {
	wait, limit time.Duration
}

func (o *overloaded) Error() string {
	return fmt.Sprintf("overloaded: the job's calls would wait %s for provider capacity, over the limit of %s", o.wait, o.limit)
}

// retryAfter is how long until the backlog is expected to drop under the
// limit, in whole seconds, at least 1: the backlog drains at the rate its
// expected wait assumes, so the wait falls by one second a second.
func (o *overloaded) retryAfter() int64 {
	d := min(o.wait-o.limit, maxRetryAfter)
	return max(int64(math.Ceil(d.Seconds())), 1)
}

// answerOverloaded answers 503 overloaded with Retry-After.
func answerOverloaded(c *gin.Context, o *overloaded) {
	c.Header("Retry-After", strconv.FormatInt(o.retryAfter(), 10))
	abort(c, http.StatusServiceUnavailable, CodeOverloaded, "",
		"the service is overloaded: a new job's calls would wait about %s for the model providers, over the limit of %s; try again in %d s",
		o.wait.Round(time.Second), o.limit, o.retryAfter())
}

// queueJob is the intake's Backlog hook: it counts the calls the new job
// j queues into this process's view of the backlog and returns their
// expected wait. With MAX_BACKLOG_SECONDS set, a job whose calls would
// wait longer than it, or too long to end by the job's deadline (its
// last member's typical call done before the aggregation's reserve), is
// refused (*overloaded)
// and its quota slots freed (the intake neither stores nor queues it). A
// backlog that cannot be read refuses nothing: the wait is unknown.
func (s *Server) queueJob(ctx context.Context, j *job.Job, calls int) (*time.Duration, func(queued bool), error) {
	if calls == 0 {
		none := time.Duration(0) // the cache answered every member
		return &none, func(bool) {}, nil
	}
	est, err := s.backlog.Take(ctx, calls)
	if err != nil {
		s.log.Warn("read the backlog; the job is accepted without its expected wait", "job_id", j.ID, "err", err)
		return nil, func(bool) {}, nil
	}
	settle := func(queued bool) {
		if queued {
			s.backlog.Queued(calls)
		} else {
			s.backlog.Return(calls)
		}
	}
	if limit := s.cfg.Access.MaxBacklog(); limit > 0 {
		// A job whose last member would start too late to end before its
		// aggregation begins (tasks.AggregateAt) would end partial: it is
		// refused too.
		limit = min(limit, max(tasks.AggregateAt(j).Sub(j.CreatedAt)-est.Typical, 0))
		if est.Wait > limit {
			settle(false)
			s.releaseQuota(ctx, j)
			return nil, nil, &overloaded{wait: est.Wait, limit: limit}
		}
	}
	return &est.Wait, settle, nil
}

// releaseQuota frees the quota slots admitJob took for j, which is not
// stored after all.
func (s *Server) releaseQuota(ctx context.Context, j *job.Job) {
	who, _ := ctx.Value(callerKey{}).(caller)
	if who.admin {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := errors.Join(s.quota.ReleaseRunning(rctx, j.Spec.Owner, j.ID), s.quota.ReleaseStored(rctx, j.Spec.Owner, j.ID))
	if err != nil {
		s.log.Warn("free the quota slots of a refused job", "job_id", j.ID, "err", err)
	}
}

// BacklogView is the backlog of member calls now (GET
// /api/monitoring/stats): the calls waiting or running on the user member
// queue, the providers' capacity (calls at once, cluster-wide), the
// typical call (median member duration of the jobs that finished in the
// last 15 minutes, 10 s when none did), the expected wait of a call
// queued now, and the admission limit (MAX_BACKLOG_SECONDS; 0: off).
type BacklogView struct {
	MemberCalls     int64 `json:"member_calls"`
	Capacity        int   `json:"capacity"`
	TypicalCallMS   int64 `json:"typical_call_ms"`
	ExpectedWaitMS  int64 `json:"expected_wait_ms"`
	MaxBacklogMS    int64 `json:"max_backlog_ms"`
	TypicalFromJobs bool  `json:"typical_from_jobs"`
}

// backlogView reads the backlog; nil when it cannot be read.
func (s *Server) backlogView(ctx context.Context) *BacklogView {
	r, err := s.backlog.Read(ctx)
	if err != nil {
		s.log.Warn("read the backlog", "err", err)
		return nil
	}
	return &BacklogView{
		MemberCalls: r.Calls, Capacity: r.Capacity, TypicalCallMS: r.Typical.Milliseconds(),
		ExpectedWaitMS: r.Wait(1).Milliseconds(), MaxBacklogMS: s.cfg.Access.MaxBacklog().Milliseconds(),
		TypicalFromJobs: r.FromSamples,
	}
}
