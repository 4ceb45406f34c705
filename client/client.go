package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of the options.
const (
	// DefaultMaxRetries is how many reconnections in a row, without an event
	// delivered in between, Follow makes before giving up.
	DefaultMaxRetries = 5
	// DefaultRetryDelay is how long Follow waits before reconnecting until
	// the server sends a "retry:" hint.
	DefaultRetryDelay = time.Second
	// DefaultIdleTimeout is how long a stream may stay silent (no event and
	// no heartbeat comment) before it is taken as dropped. The API sends a
	// heartbeat every 15 s.
	DefaultIdleTimeout = 60 * time.Second
	// MaxEventSize bounds one line and one event's data in a stream.
	MaxEventSize = 8 << 20
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client talks to one time-travel API. Its zero value is not usable; make one
// with New.
type Client struct {
	base        *url.URL
	http        *http.Client
	maxRetries  int
	retryDelay  time.Duration
	idleTimeout time.Duration
	log         *slog.Logger
	apiKey      string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc. hc should have
// no overall Timeout, or streams end when it passes.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithMaxRetries sets how many reconnections in a row, without an event
// delivered in between, Follow makes before it gives up (default
// DefaultMaxRetries). n < 0 counts as 0: Follow then never reconnects.
func WithMaxRetries(n int) Option {
	return func(c *Client) { c.maxRetries = max(n, 0) }
}

// WithRetryDelay sets the wait before a reconnection until the server sends
// a "retry:" hint, which then takes over (default DefaultRetryDelay).
func WithRetryDelay(d time.Duration) Option {
	return func(c *Client) { c.retryDelay = max(d, 0) }
}

// WithIdleTimeout sets how long a stream may stay silent before it is taken
// as dropped (default DefaultIdleTimeout); d <= 0 disables the check.
func WithIdleTimeout(d time.Duration) Option {
	return func(c *Client) { c.idleTimeout = d }
}

// WithAPIKey makes the Client send key (Authorization: Bearer) with every
// request; the server then shows it only the key's own jobs.
func WithAPIKey(key string) Option {
	return func(c *Client) { c.apiKey = key }
}

// authorize adds the API key, if any, to req.
func (c *Client) authorize(req *http.Request) {
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
}

// WithLogger makes Follow log its reconnections to l (default: no logging).
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) {
		if l != nil {
			c.log = l
		}
	}
}

// New returns a Client for the API at baseURL (e.g. "http://127.0.0.1:8080";
// a path prefix is kept). Its default HTTP client pools connections and has
// no overall timeout. An unparsable baseURL makes every call fail.
func New(baseURL string, opts ...Option) *Client {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		u = nil
	}
	c := &Client{
		base:        u,
		http:        &http.Client{Transport: newTransport()},
		maxRetries:  DefaultMaxRetries,
		retryDelay:  DefaultRetryDelay,
		idleTimeout: DefaultIdleTimeout,
		log:         slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// Error codes of the API (docs/api.md) that a caller may want to tell
// apart; APIError.Code may hold others.
const (
	CodeMalformedJSON         = "malformed_json"
	CodeUnknownField          = "unknown_field"
	CodeInvalidField          = "invalid_field"
	CodeInvalidHeader         = "invalid_header"
	CodeInvalidEncoding       = "invalid_encoding"
	CodeBodyTooLarge          = "body_too_large"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeUnauthorized          = "unauthorized"
	CodeForbidden             = "forbidden"
	CodeJobNotFound           = "job_not_found"
	CodeJobFinished           = "job_finished"
	CodeIdempotencyInProgress = "idempotency_key_in_progress"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeModelNotAllowed       = "model_not_allowed"
	CodeQuotaExceeded         = "quota_exceeded"
	CodeCacheDisabled         = "cache_disabled"
	CodeUnavailable           = "unavailable"
	// CodeOverloaded: 503, the server's backlog of model calls is over its
	// admission limit; RetryAfter says when it is expected under it.
	CodeOverloaded = "overloaded"
)

// APIError is a non-2xx answer of the API. Code, Message, Field, Limit and
// Allowed come from the body
// {"error":{"code","message","field","limit","allowed"}}; when the body has
// another shape, Code is empty and Message holds the start of the body or
// the status text.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	// Field names the request field (or header) at fault, if one is.
	Field string
	// Limit names the quota reached, with code CodeQuotaExceeded (e.g.
	// "submissions_per_minute").
	Limit string
	// Allowed lists the values Field may take when they are few (e.g. the
	// models offered, with code CodeModelNotAllowed).
	Allowed []string
	// RetryAfter is the wait the answer's Retry-After header asks for
	// before trying again (sent with 429), in whole seconds or until its
	// HTTP date; 0 when there is none or it is not valid.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "api: %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Field != "" {
		b.WriteString(" (field " + e.Field + ")")
	}
	if e.Limit != "" {
		b.WriteString(" (limit " + e.Limit + ")")
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after " + e.RetryAfter.String() + ")")
	}
	return b.String()
}

// IsCode reports whether err is, or wraps, an *APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// readAPIError turns a non-2xx response into an *APIError.
func readAPIError(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var env struct {
		Error *struct {
			Code    string   `json:"code"`
			Message string   `json:"message"`
			Field   string   `json:"field"`
			Limit   string   `json:"limit"`
			Allowed []string `json:"allowed"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != nil {
		d := env.Error
		e.Code, e.Message, e.Field, e.Limit, e.Allowed = d.Code, d.Message, d.Field, d.Limit, d.Allowed
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}

// retryAfter reads a Retry-After value (RFC 9110 10.2.3): delay seconds or an
// HTTP date, which counts from now. It returns 0 for an empty, invalid or
// past value.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// maxRetryAfter bounds APIError.RetryAfter, so that a huge header cannot
// overflow a time.Duration.
const maxRetryAfter = 24 * time.Hour

// endpoint returns the absolute URL of the API path p (already escaped),
// which may end with a query ("?" and its encoded values).
func (c *Client) endpoint(p string) (string, error) {
	if c.base == nil {
		return "", errors.New("client: invalid base URL")
	}
	u := *c.base
	p, query, hasQuery := strings.Cut(p, "?")
	u.Path = strings.TrimRight(u.Path, "/") + p
	u.RawPath = ""
	if hasQuery {
		u.RawQuery = query
	}
	return u.String(), nil
}

func jobPath(id string) string { return "/api/jobs/" + url.PathEscape(id) }

// do sends a JSON request and decodes a 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.doWith(ctx, method, path, nil, in, out)
	return err
}

// doWith is do with extra request headers; it returns the answer's headers.
func (c *Client) doWith(ctx context.Context, method, path string, header http.Header, in, out any) (http.Header, error) {
	u, err := c.endpoint(path)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	c.authorize(req)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, readAPIError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.Header, fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return resp.Header, nil
}

// Submit creates a job (POST /api/time-travel) and returns the API's
// acceptance. A refused request is an *APIError: e.g. status 400 and code
// CodeInvalidField with Field naming the field, or status 429 and code
// CodeQuotaExceeded with Limit naming the quota and RetryAfter the wait.
// With req.IdempotencyKey, a repeat of the same request within the key's
// lifetime returns the first request's job (Accepted.Replayed).
func (c *Client) Submit(ctx context.Context, req SubmitRequest) (Accepted, error) {
	return c.submit(ctx, "/api/time-travel", req.IdempotencyKey, req)
}

func (c *Client) submit(ctx context.Context, path, idempotencyKey string, req any) (Accepted, error) {
	var a Accepted
	var header http.Header
	if idempotencyKey != "" {
		header = http.Header{"Idempotency-Key": {idempotencyKey}}
	}
	h, err := c.doWith(ctx, http.MethodPost, path, header, req, &a)
	if err != nil {
		return Accepted{}, err
	}
	a.Replayed = h.Get("Idempotent-Replayed") == "true"
	if a.JobID == "" {
		return Accepted{}, errors.New("client: submit: answer has no job_id")
	}
	return a, nil
}

// EnsembleRequest is the body of POST /api/ensemble: 2 to 8 models answer
// Question, and SynthesisModel (empty: the server's default) merges their
// answers.
type EnsembleRequest struct {
	Question       string   `json:"question"`
	Models         []string `json:"models"`
	SynthesisModel string   `json:"synthesis_model,omitempty"`
	// Cache is CacheUse (the default) or CacheBypass (skip cache reads).
	Cache string `json:"cache,omitempty"`
	// CallbackURL gets the job's result in a signed webhook when it ends.
	CallbackURL string `json:"callback_url,omitempty"`
	// IdempotencyKey, sent as the Idempotency-Key header, makes a repeat
	// of this request return the first one's job.
	IdempotencyKey string `json:"-"`
}

// Ensemble submits an ensemble job (POST /api/ensemble) and returns its
// acceptance, as Submit does for a time-travel job.
func (c *Client) Ensemble(ctx context.Context, req EnsembleRequest) (Accepted, error) {
	return c.submit(ctx, "/api/ensemble", req.IdempotencyKey, req)
}

// Job returns the current state of job id (GET /api/jobs/{id}). An unknown
// id, or another API key's job, is an *APIError with status 404 and code
// CodeJobNotFound.
func (c *Client) Job(ctx context.Context, id string) (JobView, error) {
	var v JobView
	if err := c.do(ctx, http.MethodGet, jobPath(id), nil, &v); err != nil {
		return JobView{}, err
	}
	return v, nil
}

// Cancel cancels job id (DELETE /api/jobs/{id}) and returns the job as the
// API answers it, canceled. A job that had already ended (or was canceled
// already) is an *APIError with status 409 and code CodeJobFinished; an
// unknown id one with status 404 and code CodeJobNotFound.
func (c *Client) Cancel(ctx context.Context, id string) (JobView, error) {
	var v JobView
	if err := c.do(ctx, http.MethodDelete, jobPath(id), nil, &v); err != nil {
		return JobView{}, err
	}
	return v, nil
}

// Jobs returns a page of the caller's jobs, newest first (GET /api/jobs):
// only the jobs of the client's API key (or, on a server without keys,
// the anonymous caller's), while they are kept. Follow NextCursor for the
// next page. A bad Limit or Cursor is an *APIError with status 400, code
// CodeInvalidField and Field "limit" or "cursor".
func (c *Client) Jobs(ctx context.Context, q JobsQuery) (JobList, error) {
	v := url.Values{}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	p := "/api/jobs"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var l JobList
	if err := c.do(ctx, http.MethodGet, p, nil, &l); err != nil {
		return JobList{}, err
	}
	return l, nil
}

// Usage returns the caller's limits and how much of each it uses
// (GET /api/usage).
func (c *Client) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	if err := c.do(ctx, http.MethodGet, "/api/usage", nil, &u); err != nil {
		return Usage{}, err
	}
	return u, nil
}

// Models returns the models a submission may name and the default one
// (GET /api/models). Naming another is an *APIError with code
// CodeModelNotAllowed whose Allowed lists them.
func (c *Client) Models(ctx context.Context) (Models, error) {
	var m Models
	if err := c.do(ctx, http.MethodGet, "/api/models", nil, &m); err != nil {
		return Models{}, err
	}
	return m, nil
}
