package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Failure kinds a caller can tell apart with errors.Is.
var (
	// ErrTimeout: the call took longer than the configured timeout.
	ErrTimeout = errors.New("llm call timed out")
	// ErrBrokenStream: the stream ended before the model finished.
	ErrBrokenStream = errors.New("llm stream broke off")
	// ErrBadAnswer: the provider answered with something unusable (no
	// choices, or an answer the request's Validate rejected). The provider
	// works, so it is no breaker failure; a gateway asks again within the
	// call as Policy.RetryBadAnswer says, and after that it is permanent
	// (Retryable is false): the queue does not run the work again for it.
	ErrBadAnswer = errors.New("llm answer unusable")
	// ErrNoCapacity: no capacity at the provider within the wait allowed
	// (its in-flight cap, requests or tokens per minute). No request was
	// sent; the work should be handed back and tried again later.
	ErrNoCapacity = errors.New("no provider capacity")
	// ErrCircuitOpen: the circuit breakers of the call's models (the model
	// and its fallbacks) refused it for as long as it could wait, after
	// repeated failures of the providers; no request was sent. Like
	// ErrNoCapacity, the work should be handed back and tried again later,
	// after the hint RetryAfter gives.
	ErrCircuitOpen = errors.New("circuit breaker open")
)

// StatusError is a provider's HTTP error answer. It keeps the status and
// the wait the provider asked for, and nothing of the answer's body or
// headers: some providers echo the request's credentials in them (a 401
// quoting the API key), and an error's text reaches jobs, event streams,
// webhooks, logs and Redis.
type StatusError struct {
	StatusCode int
	// Message is never set by this package nor shown by Error: a provider's
	// message may quote the API key.
	//
	// Deprecated: always empty; kept for callers that still set it.
	Message string
	// RetryAfter is the wait the provider asked for (Retry-After or
	// Retry-After-Ms header); zero when it named none.
	RetryAfter time.Duration
}

// RetryHint returns the wait the provider asked for, if any.
func (e *StatusError) RetryHint() time.Duration { return e.RetryAfter }

// hintError is an error that says how long to wait before trying again.
type hintError struct {
	err   error
	after time.Duration
}

func (e *hintError) Error() string            { return e.err.Error() }
func (e *hintError) Unwrap() error            { return e.err }
func (e *hintError) RetryHint() time.Duration { return e.after }

// WithRetryAfter returns err with a hint that trying again makes sense after
// d at the earliest; RetryAfter reads it back. A nil err stays nil.
func WithRetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, after: d}
}

// RetryAfter returns the first positive wait hint in err's chain: a
// provider's Retry-After, the rest of a breaker's open time, a rate
// limiter's estimate.
func RetryAfter(err error) (time.Duration, bool) {
	for err != nil {
		if h, ok := err.(interface{ RetryHint() time.Duration }); ok {
			if d := h.RetryHint(); d > 0 {
				return d, true
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if d, ok := RetryAfter(e); ok {
					return d, true
				}
			}
			return 0, false
		default:
			return 0, false
		}
	}
	return 0, false
}

// Error is "provider answered <status> (<category>)", e.g. "provider
// answered 401 (authentication failed)": the status and Category only.
func (e *StatusError) Error() string {
	return fmt.Sprintf("provider answered %d (%s)", e.StatusCode, e.Category())
}

// Category names the kind of an error status in a few fixed words.
func (e *StatusError) Category() string {
	switch c := e.StatusCode; {
	case c == http.StatusBadRequest:
		return "bad request"
	case c == http.StatusUnauthorized:
		return "authentication failed"
	case c == http.StatusForbidden:
		return "permission denied"
	case c == http.StatusNotFound:
		return "not found"
	case c == http.StatusRequestTimeout:
		return "request timeout"
	case c == http.StatusConflict:
		return "conflict"
	case c == http.StatusRequestEntityTooLarge:
		return "request too large"
	case c == http.StatusUnprocessableEntity:
		return "unprocessable request"
	case c == http.StatusTooManyRequests:
		return "rate limited"
	case c >= 400 && c < 500:
		return "client error"
	case c == http.StatusBadGateway:
		return "bad gateway"
	case c == http.StatusServiceUnavailable:
		return "unavailable"
	case c == http.StatusGatewayTimeout:
		return "gateway timeout"
	case c >= 500 && c < 600:
		return "server error"
	default:
		return "unexpected status"
	}
}

// Phrases of the failures that are not an error status. Their Error is one
// of these, whatever the failure wrapped says: a *url.Error names the
// request's URL (an Azure endpoint's, or one with a key in its query), a
// dial error the provider's address, a stream's error event the provider's
// own words.
const (
	phraseConnection  = "connection to the provider failed"
	phraseCanceled    = "llm call canceled"
	phraseDeadline    = "llm call ran out of time"
	phraseStreamError = "provider sent an error in the stream"
	phraseOther       = "provider call failed"
)

// callError is a failure of a provider call shown as a fixed phrase. It
// unwraps to what it stands for (a kind such as ErrBrokenStream, and the
// cause), so that errors.Is and errors.As, and with them Retryable and the
// metrics' outcomes, decide as they would on the cause itself.
type callError struct {
	phrase string
	errs   []error
}

func (e *callError) Error() string   { return e.phrase }
func (e *callError) Unwrap() []error { return e.errs }

// classify turns go-openai's errors into ours; ctx is the call's context.
// No text of the provider's answer, nor the request's URL, survives in the
// result's Error (see StatusError and callError).
func classify(ctx context.Context, err error) error {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) && apiErr.HTTPStatusCode != 0 {
		return &StatusError{StatusCode: apiErr.HTTPStatusCode, RetryAfter: retryAfterOf(ctx)}
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) && reqErr.HTTPStatusCode != 0 {
		return &StatusError{StatusCode: reqErr.HTTPStatusCode, RetryAfter: retryAfterOf(ctx)}
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
		// The cause is ours ("llm call timed out after 90s"), and says it
		// all.
		if errors.Is(err, ErrTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return cause
		}
		return &callError{phrase: cause.Error(), errs: []error{cause, err}}
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &callError{phrase: ErrBrokenStream.Error(), errs: []error{ErrBrokenStream, err}}
	case errors.Is(err, context.Canceled):
		// Before the network errors: a *url.Error is a net.Error too.
		return &callError{phrase: phraseCanceled, errs: []error{err}}
	case errors.Is(err, context.DeadlineExceeded):
		return &callError{phrase: phraseDeadline, errs: []error{err}}
	case errors.As(err, &apiErr):
		// An error event in a stream that had started well.
		return &callError{phrase: phraseStreamError, errs: []error{err}}
	case isNetwork(err):
		return &callError{phrase: phraseConnection, errs: []error{err}}
	}
	return &callError{phrase: phraseOther, errs: []error{err}}
}

// isNetwork reports whether err is a failure of the connection: one that
// Retryable counts as such.
func isNetwork(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.EOF)
}

// Retryable reports whether err may go away on another attempt: throttling
// (429), request timeout (408), server errors (5xx), timeouts, broken
// streams, network errors, no capacity and an open circuit breaker. Other
// 4xx answers, cancellation by the caller and unusable answers
// (ErrBadAnswer, whatever its validator's error wraps) are permanent.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrBadAnswer) {
		// A validator's error may wrap anything (an io.EOF of its decoder):
		// the kind decides, and another request is the gateway's one retry.
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusTooManyRequests || se.StatusCode == http.StatusRequestTimeout || se.StatusCode >= 500
	}
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrBrokenStream) || errors.Is(err, ErrNoCapacity) || errors.Is(err, ErrCircuitOpen) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) || errors.Is(err, io.EOF)
}
