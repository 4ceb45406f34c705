package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/quota"
)

// refusal is a quota's no: the request is answered 429 with the decision's
// headers.
type refusal struct{ d quota.Decision }

func (r *refusal) Error() string { return "quota reached: " + r.d.Limit }

// limitMessages say, per limit, what was reached and what to do.
var limitMessages = map[string]string{
	quota.LimitSubmissions:  "too many submissions: at most %d a minute for this API key",
	quota.LimitRunning:      "too many jobs running at once: at most %d for this API key; wait for one to end or cancel one",
	quota.LimitStored:       "too many jobs kept: at most %d for this API key within the retention; they expire with time",
	quota.LimitStoredGlobal: "the service keeps as many jobs as it can (%d); try again later",
	quota.LimitTokens:       "the API key's token budget for today (%d tokens) is used up; it renews at midnight UTC",
	quota.LimitSSE:          "too many event streams open: at most %d for this API key",
	quota.LimitSSEProcess:   "this server has as many event streams open as it serves (%d); try again shortly",
}

// tooMany answers 429 for the refusal d.
func tooMany(c *gin.Context, d quota.Decision) {
	d.SetHeaders(c.Writer.Header())
	msg, ok := limitMessages[d.Limit]
	if !ok || msg == "" {
		msg = "limit %d reached"
	}
	c.AbortWithStatusJSON(http.StatusTooManyRequests, ErrorBody{Error: ErrorDetail{
		Code: CodeQuotaExceeded, Limit: d.Limit, Message: fmt.Sprintf(msg, d.Quota),
	}})
}

// quotaFailed answers a quota check that could not be made (Redis).
func (s *Server) quotaFailed(c *gin.Context, err error) {
	s.log.Error("check quota", "err", err)
	abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not check the API key's quotas; try again")
}

// admitSubmission applies the per-minute and the daily token quotas to a
// submission; false means the request is answered.
func (s *Server) admitSubmission(c *gin.Context, who caller) bool {
	if who.admin {
		return true
	}
	ctx := c.Request.Context()
	d, err := s.quota.AllowSubmission(ctx, who.owner, who.limits.SubmissionsPerMinute)
	if err != nil {
		s.quotaFailed(c, err)
		return false
	}
	if !d.Allowed {
		tooMany(c, d)
		return false
	}
	d.SetHeaders(c.Writer.Header())
	td, err := s.quota.CheckTokens(ctx, who.owner, who.limits.TokensPerDay)
	if err != nil {
		s.quotaFailed(c, err)
		return false
	}
	if !td.Allowed {
		tooMany(c, td)
		return false
	}
	return true
}

// admitJob is the intake's Admit hook: the job counts towards its owner's
// stored jobs (and the global cap) for its lifetime, and, when it runs,
// towards the jobs running at once until it ends.
func (s *Server) admitJob(ctx context.Context, j *job.Job, runs bool) error {
	who, _ := ctx.Value(callerKey{}).(caller)
	if who.admin {
		return nil
	}
	until := j.Deadline.Add(s.cfg.JobRetention)
	d, err := s.quota.AdmitStored(ctx, j.Spec.Owner, j.ID, who.limits.StoredJobs, s.cfg.Access.MaxStoredJobs, until)
	if err != nil {
		return err
	}
	if !d.Allowed {
		return &refusal{d}
	}
	if !runs {
		return nil
	}
	d, err = s.quota.AdmitRunning(ctx, j.Spec.Owner, j.ID, who.limits.RunningJobs, j.Deadline, s.store.Settled)
	if err == nil && d.Allowed {
		return nil
	}
	// Not admitted: the job is not stored either.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if rerr := s.quota.ReleaseStored(rctx, j.Spec.Owner, j.ID); rerr != nil {
		s.log.Warn("free a stored-jobs slot", "err", rerr)
	}
	if err != nil {
		return err
	}
	return &refusal{d}
}

// submitFailed answers an intake error: a quota's refusal, an overloaded
// service (queueJob), or trouble.
func (s *Server) submitFailed(c *gin.Context, err error) {
	var r *refusal
	if errors.As(err, &r) {
		tooMany(c, r.d)
		return
	}
	var o *overloaded
	if errors.As(err, &o) {
		answerOverloaded(c, o)
		return
	}
	s.log.Error("accept job", "err", err)
	abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "the job could not be queued; try again")
}

// UsageView is the answer of GET /api/usage: the caller's limits and how
// much of each it uses. A limit of 0 means unlimited.
type UsageView struct {
	Key    KeyView    `json:"key"`
	Limits LimitsView `json:"limits"`
	Usage  UsageNow   `json:"usage"`
}

// KeyView names the caller.
type KeyView struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// LimitsView are a caller's limits.
type LimitsView struct {
	SubmissionsPerMinute int   `json:"submissions_per_minute"`
	RunningJobs          int   `json:"running_jobs"`
	StoredJobs           int   `json:"stored_jobs"`
	TokensPerDay         int64 `json:"tokens_per_day"`
	SSEConnections       int   `json:"sse_connections"`
}

// UsageNow is what a caller uses now.
type UsageNow struct {
	// SubmissionsAvailable is how many submissions may be made at once now.
	SubmissionsAvailable int64 `json:"submissions_available"`
	RunningJobs          int64 `json:"running_jobs"`
	StoredJobs           int64 `json:"stored_jobs"`
	TokensToday          int64 `json:"tokens_today"`
	// SSEConnections counts the caller's streams open on this api replica.
	SSEConnections int `json:"sse_connections"`
}

func (s *Server) usage(c *gin.Context) {
	who := callerOf(c)
	u, err := s.quota.Usage(c.Request.Context(), who.owner, who.limits.SubmissionsPerMinute)
	if err != nil {
		s.quotaFailed(c, err)
		return
	}
	l := who.limits
	subs := u.SubmissionsRemaining
	if l.SubmissionsPerMinute <= 0 {
		subs = math.MaxInt32
	}
	c.JSON(http.StatusOK, UsageView{
		Key: KeyView{ID: who.owner, Name: who.name},
		Limits: LimitsView{
			SubmissionsPerMinute: l.SubmissionsPerMinute, RunningJobs: l.RunningJobs, StoredJobs: l.StoredJobs,
			TokensPerDay: l.TokensPerDay, SSEConnections: l.SSEConnections,
		},
		Usage: UsageNow{
			SubmissionsAvailable: subs, RunningJobs: u.RunningJobs, StoredJobs: u.StoredJobs,
			TokensToday: u.TokensToday, SSEConnections: s.conns.Of(who.owner),
		},
	})
}
