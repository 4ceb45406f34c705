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

// StatusError is a provider's HTTP error answer.
type StatusError struct {
	StatusCode int
	Message    string
	// RetryAfter is the wait the provider asked for (Retry-After or
	// Retry-After-Ms header); zero when it named none.
	RetryAfter time.Duration
	err        error
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

func (e *StatusError) Error() string {
	return fmt.Sprintf("provider answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

func (e *StatusError) Unwrap() error { return e.err }

// classify turns go-openai's errors into ours; ctx is the call's context.
func classify(ctx context.Context, err error) error {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) && apiErr.HTTPStatusCode != 0 {
		return &StatusError{StatusCode: apiErr.HTTPStatusCode, Message: apiErr.Message, RetryAfter: retryAfterOf(ctx), err: err}
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) && reqErr.HTTPStatusCode != 0 {
		msg := string(reqErr.Body)
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &StatusError{StatusCode: reqErr.HTTPStatusCode, Message: msg, RetryAfter: retryAfterOf(ctx), err: err}
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
		if errors.Is(err, ErrTimeout) {
			return err
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return cause
		}
		return fmt.Errorf("%w: %w", cause, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrBrokenStream, err)
	}
	return err
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
