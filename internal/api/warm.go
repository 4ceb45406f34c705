package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// WarmRequest is the body of POST /api/cache/warm: questions to warm now,
// as time-travel jobs with the time points, model and complexity of a
// time-travel submission (all optional, the defaults alike).
type WarmRequest struct {
	Questions  []string                    `json:"questions"`
	TimePoints []timetravel.TimePointInput `json:"time_points"`
	Model      string                      `json:"model"`
	Complexity string                      `json:"complexity"`
}

// WarmResult says what warming one question does.
type WarmResult struct {
	Question string `json:"question"`
	// Outcome is queued (a warming job computes what the caches lack),
	// joined (the question is being warmed already) or cached (nothing to
	// do).
	Outcome string `json:"outcome"`
	// JobID and Links name the warming job; none when cached.
	JobID string `json:"job_id,omitempty"`
	Links *Links `json:"links,omitempty"`
}

// WarmAccepted is the answer to POST /api/cache/warm, one result per
// question in the request's order.
type WarmAccepted struct {
	Results []WarmResult `json:"results"`
}

// Outcomes of warming a question.
const (
	WarmQueued = "queued"
	WarmJoined = "joined"
	WarmCached = "cached"
)

// warmCache warms the cache for a list of questions now. Every question is
// checked before any is warmed: one bad question refuses the request.
func (s *Server) warmCache(c *gin.Context) {
	if s.intake.Cache() == nil {
		abort(c, http.StatusConflict, CodeCacheDisabled, "", "caching is off on this server (CACHE_ENABLED=false): there is nothing to warm")
		return
	}
	var req WarmRequest
	if !decodeJSON(c, &req) {
		return
	}
	switch {
	case req.Questions == nil:
		abort(c, http.StatusBadRequest, CodeInvalidField, "questions", "questions is required: a list of 1 to %d questions", config.MaxWarmQuestions)
		return
	case len(req.Questions) == 0 || len(req.Questions) > config.MaxWarmQuestions:
		abort(c, http.StatusBadRequest, CodeInvalidField, "questions", "questions must hold 1 to %d questions, got %d", config.MaxWarmQuestions, len(req.Questions))
		return
	}
	now := s.now()
	specs := make([]job.Spec, len(req.Questions))
	for i, q := range req.Questions {
		sub := timetravel.Submission{Question: &q, TimePoints: req.TimePoints, Model: req.Model, Complexity: req.Complexity}
		spec, ferr := sub.Validate(now)
		if ferr != nil {
			field, msg := ferr.Field, ferr.Message
			if field == "question" {
				field = fmt.Sprintf("questions[%d]", i)
				msg = field + strings.TrimPrefix(msg, "question")
			}
			abort(c, http.StatusBadRequest, CodeInvalidField, field, "%s", msg)
			return
		}
		specs[i] = spec
	}
	res := WarmAccepted{Results: make([]WarmResult, len(specs))}
	for i, spec := range specs {
		out, err := s.intake.Warm(c.Request.Context(), spec)
		if err != nil {
			s.log.Error("warm question", "question", spec.Question, "err", err)
			abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "question %d could not be queued for warming (the %d before it were); try again", i, i)
			return
		}
		r := WarmResult{Question: spec.Question, Outcome: WarmQueued}
		switch {
		case out.Cached:
			r.Outcome = WarmCached
		case out.Joined:
			r.Outcome = WarmJoined
		}
		if !out.Cached {
			l := s.links(callerOf(c), out.Job.ID)
			r.JobID, r.Links = out.Job.ID, &l
		}
		res.Results[i] = r
	}
	c.JSON(http.StatusAccepted, res)
}
