package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	openai "github.com/sashabaranov/go-openai"
)

// Failure kinds a caller can tell apart with errors.Is.
var (
	// ErrTimeout: the call took longer than the configured timeout.
	ErrTimeout = errors.New("llm call timed out")
	// ErrBrokenStream: the stream ended before the model finished.
	ErrBrokenStream = errors.New("llm stream broke off")
	// ErrBadAnswer: the provider answered with something unusable.
	ErrBadAnswer = errors.New("llm answer unusable")
)

// StatusError is a provider's HTTP error answer.
type StatusError struct {
	StatusCode int
	Message    string
	err        error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("provider answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

func (e *StatusError) Unwrap() error { return e.err }

// classify turns go-openai's errors into ours; ctx is the call's context.
func classify(ctx context.Context, err error) error {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) && apiErr.HTTPStatusCode != 0 {
		return &StatusError{StatusCode: apiErr.HTTPStatusCode, Message: apiErr.Message, err: err}
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) && reqErr.HTTPStatusCode != 0 {
		msg := string(reqErr.Body)
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &StatusError{StatusCode: reqErr.HTTPStatusCode, Message: msg, err: err}
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
		if errors.Is(err, ErrTimeout) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrBrokenStream, err)
	}
	return err
}

// Retryable reports whether err may go away on another attempt: throttling
// (429), request timeout (408), server errors (5xx), timeouts, broken
// streams and network errors. Other 4xx answers, cancellation by the caller
// and unusable answers are permanent.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusTooManyRequests || se.StatusCode == http.StatusRequestTimeout || se.StatusCode >= 500
	}
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrBrokenStream) {
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
