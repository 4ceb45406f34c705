package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/timetravel-ai/timetravel/internal/idempotency"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
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
	// CachedSnapshots counts the members answered from the member cache
	// (time travel's snapshots).
	CachedSnapshots int   `json:"cached_snapshots,omitempty"`
	Links           Links `json:"links"`
}

// Links point at a job's resources.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

// links returns the links of jobID for who: the events link carries a
// token signed for that job's stream, for a browser EventSource.
func (s *Server) links(who caller, jobID string) Links {
	self := "/api/jobs/" + jobID
	return Links{Self: self, Events: self + "/events?token=" + s.tokens.sign(jobID, who.owner, s.now())}
}

// IdempotencyHeader is the request header that makes a submission
// idempotent; IdempotentReplayedHeader marks an answer that repeats an
// earlier request's job.
const (
	IdempotencyHeader        = "Idempotency-Key"
	IdempotentReplayedHeader = "Idempotent-Replayed"
)

// readBody reads the JSON request body and checks it is valid UTF-8, and
// answers the error itself: false means the request is answered.
func readBody(c *gin.Context) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if err != nil || mt != "application/json" {
		abort(c, http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "", "Content-Type must be application/json, got %q", clipID(c.GetHeader("Content-Type")))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			status, detail := decodeError(err)
			c.AbortWithStatusJSON(status, ErrorBody{Error: detail})
			return nil, false
		}
		abort(c, http.StatusBadRequest, CodeMalformedJSON, "", "the request body could not be read")
		return nil, false
	}
	// encoding/json turns invalid UTF-8 and lone surrogate escapes into
	// U+FFFD: questions that differ would then read alike.
	if at := invalidUTF8(body); at >= 0 {
		abort(c, http.StatusBadRequest, CodeInvalidEncoding, "", "request body is not valid UTF-8 (at byte %d)", at)
		return nil, false
	}
	return body, true
}

// decodeJSON decodes the JSON request body into v, strictly (no unknown
// fields, nothing after the object, valid UTF-8 only), and answers the
// error itself: false means the request is answered.
func decodeJSON(c *gin.Context, v any) bool {
	body, ok := readBody(c)
	if !ok {
		return false
	}
	if err := jobkind.DecodeStrict(body, v); err != nil {
		status, detail := decodeError(err)
		c.AbortWithStatusJSON(status, ErrorBody{Error: detail})
		return false
	}
	return true
}

// errTrailingData: the body goes on after its JSON value.
var errTrailingData = errors.New("request body has data after the JSON object")

func noTrailingData(dec *json.Decoder) error {
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errTrailingData
	}
	return nil
}

// errNotObject: the body is JSON, but not an object (a list, a string...).
var errNotObject = errors.New("request body must be a JSON object")

// checkObject checks that body (valid UTF-8) is one JSON object and
// nothing more, as a kind's Decode expects it; null counts as the empty
// object, which it is returned as. Its errors are those decodeError
// answers: empty body, syntax errors, a body that is not an object, data
// after the object.
func checkObject(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if err := noTrailingData(dec); err != nil {
		return nil, err
	}
	switch raw[0] {
	case '{':
		return body, nil
	case 'n': // null: no field at all
		return []byte("{}"), nil
	}
	return nil, errNotObject
}

// invalidUTF8 returns the offset of the first byte of b that is not valid
// UTF-8, or of a \u escape of a lone UTF-16 surrogate; -1 when there is
// none.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		if b[i] == '\\' && i+1 < len(b) {
			if b[i+1] != 'u' {
				i += 2 // any other escape, including an escaped backslash
				continue
			}
			if u, ok := hex4(b, i+2); ok && u >= 0xD800 && u <= 0xDFFF {
				lo, ok2 := uint32(0), false
				if u <= 0xDBFF && i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
					lo, ok2 = hex4(b, i+8)
				}
				if !ok2 || lo < 0xDC00 || lo > 0xDFFF {
					return i
				}
				i += 12
				continue
			}
		}
		i += n
	}
	return -1
}

// hex4 reads four hex digits of b at i.
func hex4(b []byte, i int) (uint32, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var v uint32
	for _, c := range b[i : i+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint32(d)
	}
	return v, true
}

// decodeSpec reads the request body of a job of kind and returns the Spec
// it asks for, checked: the body is one JSON object in valid UTF-8 (the
// same 4xx answers as decodeJSON), the kind's Decode accepts it (its
// *job.FieldError is answered 400 invalid_field, a JSON type error or an
// unknown field as decodeError says), its callback URL passes the webhook
// policy and every model it names is allowed (422 model_not_allowed,
// naming the field). false means the request is answered with the
// problem. It also returns the body, for the Idempotency-Key's hash.
func (s *Server) decodeSpec(c *gin.Context, kind jobkind.Kind) (job.Spec, []byte, bool) {
	body, ok := readBody(c)
	if !ok {
		return job.Spec{}, nil, false
	}
	obj, err := checkObject(body)
	var spec job.Spec
	if err == nil {
		spec, err = kind.Decode(obj, s.now())
	}
	if err != nil {
		status, detail := decodeError(err)
		c.AbortWithStatusJSON(status, ErrorBody{Error: detail})
		return job.Spec{}, nil, false
	}
	if !s.checkSpec(c, kind, spec) {
		return job.Spec{}, nil, false
	}
	return spec, body, true
}

// checkSpec checks a decoded spec's callback URL and the models it names;
// false means the request is answered with the problem.
func (s *Server) checkSpec(c *gin.Context, kind jobkind.Kind, spec job.Spec) bool {
	if spec.CallbackURL != "" {
		if !s.webhooksOn {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url cannot be used: webhooks are not configured on this server")
			return false
		}
		if err := s.callbacks.ValidateURL(c.Request.Context(), spec.CallbackURL); err != nil {
			abort(c, http.StatusBadRequest, CodeInvalidField, "callback_url", "callback_url: %v", err)
			return false
		}
	}
	for _, m := range kind.Models(spec) {
		if m.Model != "" && !s.cfg.LLM.ModelAllowed(m.Model) {
			c.AbortWithStatusJSON(http.StatusUnprocessableEntity, ErrorBody{Error: ErrorDetail{
				Code: CodeModelNotAllowed, Field: m.Field, Allowed: s.cfg.LLM.AllowedModels(),
				Message: fmt.Sprintf("model %q is not offered by this server; use one of the allowed models (GET /api/models)", clipID(m.Model)),
			}})
			return false
		}
	}
	return true
}

// submit returns the handler of POST /api<kind.Path()>: it accepts a job
// of kind, whatever the kind.
func (s *Server) submit(kind jobkind.Kind) gin.HandlerFunc {
	return func(c *gin.Context) { s.submitKind(c, kind) }
}

func (s *Server) submitKind(c *gin.Context, kind jobkind.Kind) {
	who := callerOf(c)
	if !s.admitSubmission(c, who) {
		return
	}
	spec, body, ok := s.decodeSpec(c, kind)
	if !ok {
		return
	}
	spec.Owner = who.owner
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
		if hash, err = idempotency.RequestHash(kind.Name(), body); err != nil {
			abort(c, http.StatusInternalServerError, CodeInternal, "", "could not hash the request")
			return
		}
		// Keys are the caller's own: the same key of another caller is
		// another key.
		id, err := s.idem.Wait(ctx, scopedKey(who, key), hash, idempotencyWait)
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
			s.replay(c, who, id)
			return
		}
	}
	out, err := s.intake.Submit(ctx, spec)
	if err != nil {
		if idem {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if aerr := s.idem.Abandon(actx, scopedKey(who, key), hash); aerr != nil {
				s.log.Warn("free idempotency key", "err", aerr)
			}
			cancel()
		}
		s.submitFailed(c, err)
		return
	}
	j := out.Job
	c.Set("job_id", j.ID)
	if idem {
		if err := s.idem.Complete(ctx, scopedKey(who, key), hash, j.ID); err != nil {
			// The job runs; a retry within a minute is told to wait, a
			// later one starts another job.
			s.log.Warn("record idempotency key", "job_id", j.ID, "err", err)
		}
	}
	l := s.links(who, j.ID)
	c.Header("Location", l.Self)
	c.JSON(http.StatusAccepted, Accepted{
		JobID: j.ID, Status: j.Status, Joined: out.Joined, Cached: out.Cached,
		CachedSnapshots: out.CachedMembers, Links: l,
	})
}

// scopedKey is the caller's Idempotency-Key as stored: within its owner.
func scopedKey(who caller, key string) string { return who.owner + ":" + key }

// idempotencyWait bounds the wait of a request whose Idempotency-Key a
// concurrent request holds while it decides its job.
const idempotencyWait = 2 * time.Second

// replay answers a submission with the job of an earlier request with the
// same Idempotency-Key.
func (s *Server) replay(c *gin.Context, who caller, jobID string) {
	c.Set("job_id", jobID)
	j, err := s.store.Resolve(c.Request.Context(), jobID)
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
	l := s.links(who, j.ID)
	c.Header("Location", l.Self)
	c.Header(IdempotentReplayedHeader, "true")
	c.JSON(http.StatusAccepted, Accepted{JobID: j.ID, Status: j.Status, Cached: j.Cached(), Links: l})
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
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\ufffd")
}

// headOf reads the :id job's head, answering 404 unless the caller owns
// it (another caller's job is answered exactly like an unknown one).
func (s *Server) headOf(c *gin.Context) (store.Head, bool) {
	id, ok := jobID(c)
	if !ok {
		return store.Head{}, false
	}
	h, err := s.store.Head(c.Request.Context(), id)
	if err == nil && !callerOf(c).owns(h) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "no job %q (unknown or expired)", id)
		return h, false
	}
	if err != nil {
		s.log.Error("read job", "job_id", id, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job; try again")
		return h, false
	}
	return h, true
}

// loadJob reads the :id job as its caller sees it (store.Resolve),
// answering 404 unless the caller owns it. The resolved job carries its
// owner: no head is read first.
func (s *Server) loadJob(c *gin.Context) (*job.Job, bool) {
	id, ok := jobID(c)
	if !ok {
		return nil, false
	}
	j, ok := s.resolve(c, id)
	if !ok {
		return nil, false
	}
	if !callerOf(c).owns(store.Head{ID: j.ID, Owner: j.Spec.Owner}) {
		abort(c, http.StatusNotFound, CodeJobNotFound, "", "no job %q (unknown or expired)", id)
		return nil, false
	}
	return j, true
}

func (s *Server) resolve(c *gin.Context, id string) (*job.Job, bool) {
	j, err := s.store.Resolve(c.Request.Context(), id)
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

// JobView is a job as GET /api/jobs/{id} shows it: its state, as its kind
// shows it (jobkind.Registry.View), and its links (the events link carries
// a fresh token).
type JobView struct {
	job.View
	Links Links `json:"links"`
}

// MarshalJSON writes the view (with its kind's fields) and the links
// beside its fields.
func (v JobView) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(v.View)
	if err != nil {
		return nil, err
	}
	links, err := json.Marshal(struct {
		Links Links `json:"links"`
	}{v.Links})
	if err != nil {
		return nil, err
	}
	// No kind's view has a field named links (package kinds' tests).
	return job.JoinObjects(b, links)
}

// showJob answers status with j as the caller sees it.
func (s *Server) showJob(c *gin.Context, status int, j *job.Job) {
	v, err := s.kinds.View(j)
	if err != nil {
		s.log.Error("show job", "job_id", j.ID, "err", err)
		abort(c, http.StatusInternalServerError, CodeInternal, "", "could not show the job")
		return
	}
	c.JSON(status, JobView{View: v, Links: s.links(callerOf(c), j.ID)})
}

func (s *Server) getJob(c *gin.Context) {
	j, ok := s.loadJob(c)
	if !ok {
		return
	}
	s.showJob(c, http.StatusOK, j)
}

// cancelJob cancels the caller's job (lifecycle.Cancel). A job shared with
// other callers (they joined it) goes on for them: only this caller's part
// ends. The last caller to cancel cancels the work.
func (s *Server) cancelJob(c *gin.Context) {
	h, ok := s.headOf(c)
	if !ok {
		return
	}
	if h.Status.Terminal() {
		abort(c, http.StatusConflict, CodeJobFinished, "", "job %s has already ended (%s)", h.ID, h.Status)
		return
	}
	_, err := s.life.Cancel(c.Request.Context(), h)
	switch {
	case errors.Is(err, lifecycle.ErrEnded):
		abort(c, http.StatusConflict, CodeJobFinished, "", "job %s ended before it could be canceled", h.ID)
		return
	case err != nil:
		s.log.Error("cancel job", "job_id", h.ID, "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not cancel the job; try again")
		return
	}
	if j, ok := s.resolve(c, h.ID); ok {
		s.showJob(c, http.StatusOK, j)
	}
}
