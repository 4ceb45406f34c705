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

	"github.com/timetravel-ai/timetravel/internal/idempotency"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Accepted is the answer to a submission: the job that answers it.
type Accepted struct {
	JobID  string     `json:"job_id"`
	Status job.Status `json:"status"`
	// Joined is set when the request joined an identical job in flight
	// instead of starting one.
	Joined bool `json:"joined,omitempty"`
	// Cached is set when the whole job was served from the caches: it has
	// ended already, and its event stream holds every event.
	Cached bool `json:"cached,omitempty"`
	// CachedSnapshots counts the snapshots answered from the cache.
	CachedSnapshots int   `json:"cached_snapshots,omitempty"`
	Links           Links `json:"links"`
}

// Links point at a job's resources.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

func links(jobID string) Links {
	self := "/api/jobs/" + jobID
	return Links{Self: self, Events: self + "/events"}
}

// IdempotencyHeader is the request header that makes a submission
// idempotent; IdempotentReplayedHeader marks an answer that repeats an
// earlier request's job.
const (
	IdempotencyHeader        = "Idempotency-Key"
	IdempotentReplayedHeader = "Idempotent-Replayed"
)

// decodeJSON decodes the JSON request body into v, strictly (no unknown
// fields, nothing after the object), and answers the error itself: false
// means the request is answered.
func decodeJSON(c *gin.Context, v any) bool {
	mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if err != nil || mt != "application/json" {
		abort(c, http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "", "Content-Type must be application/json, got %q", c.GetHeader("Content-Type"))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
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
		return false
	}
	return true
}

// validSpec validates a submission and its callback URL; false means the
// request is answered with the problem.
func (s *Server) validSpec(c *gin.Context, sub job.Submission) (job.Spec, bool) {
	spec, ferr := sub.Validate(s.now())
	if ferr != nil {
		abort(c, http.StatusBadRequest, CodeInvalidField, ferr.Field, "%s", ferr.Message)
		return spec, false
	}
	if spec.CallbackURL != "" {
		if !s.webhooksOn {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url cannot be used: webhooks are not configured on this server")
			return spec, false
		}
		if err := s.callbacks.ValidateURL(c.Request.Context(), spec.CallbackURL); err != nil {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url: %v", err)
			return spec, false
		}
	}
	return spec, true
}

func (s *Server) submit(c *gin.Context) {
	var sub job.Submission
	if !decodeJSON(c, &sub) {
		return
	}
	spec, ok := s.validSpec(c, sub)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	_, idem := c.Request.Header[IdempotencyHeader]
	var key, hash string
	if idem {
		key = c.GetHeader(IdempotencyHeader)
		if err := idempotency.CheckKey(key); err != nil {
			abort(c, http.StatusBadRequest, CodeInvalidHeader, IdempotencyHeader, "%v", err)
			return
		}
		var err error
		if hash, err = idempotency.BodyHash(sub); err != nil {
			abort(c, http.StatusInternalServerError, CodeInternal, "", "could not hash the request")
			return
		}
		id, err := s.idem.Wait(ctx, key, hash, idempotencyWait)
		switch {
		case errors.Is(err, idempotency.ErrMismatch):
			abort(c, http.StatusUnprocessableEntity, CodeIdempotencyMismatch, IdempotencyHeader,
				"Idempotency-Key %q was used with a different request body; use a new key for a new request", clipID(key))
			return
		case errors.Is(err, idempotency.ErrInProgress):
			abort(c, http.StatusConflict, CodeIdempotencyInProgress, IdempotencyHeader,
				"a request with Idempotency-Key %q is still in progress; try again shortly", clipID(key))
			return
		case err != nil:
			s.log.Error("idempotency key", "err", err)
			abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "the job could not be queued; try again")
			return
		case id != "":
			s.replay(c, id)
			return
		}
	}
	out, err := s.intake.Submit(ctx, spec)
	if err != nil {
		s.log.Error("accept job", "err", err)
		if idem {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if aerr := s.idem.Abandon(actx, key, hash); aerr != nil {
				s.log.Warn("free idempotency key", "err", aerr)
			}
			cancel()
		}
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "the job could not be queued; try again")
		return
	}
	j := out.Job
	c.Set("job_id", j.ID)
	if idem {
		if err := s.idem.Complete(ctx, key, hash, j.ID); err != nil {
			// The job runs; a retry within a minute is told to wait, a
			// later one starts another job.
			s.log.Warn("record idempotency key", "job_id", j.ID, "err", err)
		}
	}
	l := links(j.ID)
	c.Header("Location", l.Self)
	c.JSON(http.StatusAccepted, Accepted{
		JobID: j.ID, Status: j.Status, Joined: out.Joined, Cached: out.Cached,
		CachedSnapshots: out.CachedSnapshots, Links: l,
	})
}

// idempotencyWait bounds the wait of a request whose Idempotency-Key a
// concurrent request holds while it decides its job.
const idempotencyWait = 2 * time.Second

// replay answers a submission with the job of an earlier request with the
// same Idempotency-Key.
func (s *Server) replay(c *gin.Context, jobID string) {
	c.Set("job_id", jobID)
	j, err := s.store.Get(c.Request.Context(), jobID)
	if errors.Is(err, store.ErrNotFound) {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "the job of this Idempotency-Key (%s) has expired", jobID)
		return
	}
	if err != nil {
		s.log.Error("read job", "job_id", jobID, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job; try again")
		return
	}
	metrics.IdempotentReplays.Inc()
	l := links(j.ID)
	c.Header("Location", l.Self)
	c.Header(IdempotentReplayedHeader, "true")
	c.JSON(http.StatusAccepted, Accepted{JobID: j.ID, Status: j.Status, Cached: j.Cached(), Links: l})
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
	if err := tasks.Withdraw(s.insp, tasks.LaneOf(j.Spec.Warm), j.ID, indexes(len(j.Snapshots)), queued); err != nil {
		s.log.Warn("withdraw tasks of canceled job", "job_id", j.ID, "err", err)
	}
	if j.Fingerprint != "" {
		// Identical requests start a job of their own from now on.
		if err := s.inflight.Release(ctx, j.Fingerprint, j.ID); err != nil {
			s.log.Warn("release the canceled job's in-flight entry", "job_id", j.ID, "err", err)
		}
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
