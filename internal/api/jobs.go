package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Accepted is the answer to a new job.
type Accepted struct {
	JobID  string     `json:"job_id"`
	Status job.Status `json:"status"`
	Links  Links      `json:"links"`
}

// Links point at a job's resources.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

func (s *Server) submit(c *gin.Context) {
	mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if err != nil || mt != "application/json" {
		abort(c, http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "", "Content-Type must be application/json, got %q", c.GetHeader("Content-Type"))
		return
	}
	var sub job.Submission
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(&sub)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("request body has data after the JSON object")
			var maxErr *http.MaxBytesError
			if errors.As(terr, &maxErr) {
				err = terr
			}
		}
	}
	if err != nil {
		status, detail := decodeError(err)
		c.AbortWithStatusJSON(status, ErrorBody{Error: detail})
		return
	}
	now := s.now()
	spec, ferr := sub.Validate(now)
	if ferr != nil {
		abort(c, http.StatusBadRequest, CodeInvalidField, ferr.Field, "%s", ferr.Message)
		return
	}
	if spec.CallbackURL != "" {
		if !s.webhooksOn {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url cannot be used: webhooks are not configured on this server")
			return
		}
		if err := s.callbacks.ValidateURL(c.Request.Context(), spec.CallbackURL); err != nil {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url: %v", err)
			return
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		abort(c, http.StatusInternalServerError, CodeInternal, "", "could not make a job id")
		return
	}
	j := &job.Job{
		ID: id.String(), Spec: spec, Status: job.StatusQueued,
		CreatedAt: now, Deadline: now.Add(s.cfg.JobDeadline),
	}
	c.Set("job_id", j.ID)
	if err := s.accept(c.Request.Context(), j); err != nil {
		s.log.Error("accept job", "job_id", j.ID, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "the job could not be queued; try again")
		return
	}
	self := "/api/jobs/" + j.ID
	c.Header("Location", self)
	c.JSON(http.StatusAccepted, Accepted{JobID: j.ID, Status: job.StatusQueued, Links: Links{Self: self, Events: self + "/events"}})
}

// accept stores the job and enqueues its tasks. The order is what keeps every
// job ending: the aggregation, scheduled at the deadline, goes first, so that
// a crash after any later step still ends the job at its deadline.
func (s *Server) accept(ctx context.Context, j *job.Job) error {
	if err := s.enq.EnqueueAggregate(ctx, j); err != nil {
		return err
	}
	if _, err := s.store.Create(ctx, j); err != nil {
		return err
	}
	if err := s.enq.EnqueueSnapshots(ctx, j); err != nil {
		// The job exists and the client will not get its id: end it now.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.store.Finish(fctx, j.ID, job.StatusFailed, "could not queue the snapshots", nil)
		_ = tasks.Withdraw(s.insp, j.ID, indexes(len(j.Spec.TimePoints)), true)
		return err
	}
	return nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// jobID reads and checks the :id path parameter; an id that cannot exist is
// answered 404 like an unknown one.
func jobID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "no job %q", clipID(id))
		return "", false
	}
	c.Set("job_id", id)
	return id, true
}

func clipID(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (s *Server) loadJob(c *gin.Context) (*job.Job, bool) {
	id, ok := jobID(c)
	if !ok {
		return nil, false
	}
	j, err := s.store.Get(c.Request.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "no job %q (unknown or expired)", id)
		return nil, false
	}
	if err != nil {
		s.log.Error("read job", "job_id", id, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job; try again")
		return nil, false
	}
	return j, true
}

func (s *Server) getJob(c *gin.Context) {
	j, ok := s.loadJob(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, j.View())
}

func (s *Server) cancelJob(c *gin.Context) {
	j, ok := s.loadJob(c)
	if !ok {
		return
	}
	if j.Status.Terminal() {
		abort(c, http.StatusConflict, CodeJobFinished, "", "job %s has already ended (%s)", j.ID, j.Status)
		return
	}
	err := s.store.Finish(c.Request.Context(), j.ID, job.StatusCanceled, "canceled by the client", nil)
	switch {
	case errors.Is(err, store.ErrClosed):
		abort(c, http.StatusConflict, CodeJobFinished, "", "job %s ended before it could be canceled", j.ID)
		return
	case err != nil:
		s.log.Error("cancel job", "job_id", j.ID, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not cancel the job; try again")
		return
	}
	// The job is closed: whatever still runs stops at its next write. Removing
	// and cancelling its tasks just saves the work, except the aggregation
	// task's: scheduled at the deadline, it queues the webhook of a job it
	// finds ended, so it is withdrawn only once the webhook is queued. The
	// client going away does not stop these steps.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 5*time.Second)
	defer cancel()
	queued := true
	if err := s.queueWebhook(ctx, j); err != nil {
		queued = false
		s.log.Warn("could not queue the webhook of the canceled job; its aggregation task will", "job_id", j.ID, "err", err)
	}
	if err := tasks.Withdraw(s.insp, j.ID, indexes(len(j.Snapshots)), queued); err != nil {
		s.log.Warn("withdraw tasks of canceled job", "job_id", j.ID, "err", err)
	}
	s.log.Info("job canceled", "job_id", j.ID)
	if j, ok = s.loadJob(c); ok {
		// The api ended this job: it records its timings.
		sample := monitoring.FromJob(j)
		sample.Observe()
		if err := monitoring.New(s.rdb).Record(ctx, sample); err != nil {
			s.log.Warn("record the canceled job's timings", "job_id", j.ID, "err", err)
		}
		c.JSON(http.StatusOK, j.View())
	}
}

// queueWebhook puts the delivery of an ended job's webhook on the queue and
// marks it pending; nothing when the job has no callback URL.
func (s *Server) queueWebhook(ctx context.Context, j *job.Job) error {
	if j.Spec.CallbackURL == "" {
		return nil
	}
	if err := s.enq.EnqueueWebhook(ctx, j.ID, webhook.MaxRetries); err != nil {
		return err
	}
	return s.store.WebhookQueued(ctx, j.ID)
}
