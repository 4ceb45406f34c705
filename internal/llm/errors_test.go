package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

func TestRetryable(t *testing.T) {
	t.Parallel()
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"429", &StatusError{StatusCode: 429}, true},
		{"408", &StatusError{StatusCode: 408}, true},
		{"500", &StatusError{StatusCode: 500}, true},
		{"502", &StatusError{StatusCode: 502}, true},
		{"503", &StatusError{StatusCode: 503}, true},
		{"400", &StatusError{StatusCode: 400}, false},
		{"401", &StatusError{StatusCode: 401}, false},
		{"403", &StatusError{StatusCode: 403}, false},
		{"404", &StatusError{StatusCode: 404}, false},
		{"422", &StatusError{StatusCode: 422}, false},
		{"wrapped 429", fmt.Errorf("snapshot 2: %w", &StatusError{StatusCode: 429}), true},
		{"wrapped 400", fmt.Errorf("snapshot 2: %w", &StatusError{StatusCode: 400}), false},
		{"ErrTimeout", ErrTimeout, true},
		{"wrapped ErrTimeout", fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded), true},
		{"ErrBrokenStream", ErrBrokenStream, true},
		{"wrapped ErrBrokenStream", fmt.Errorf("%w: %w", ErrBrokenStream, io.ErrUnexpectedEOF), true},
		{"ErrBadAnswer", ErrBadAnswer, false},
		{"ErrBadAnswer of a validator whose error wraps io.EOF", fmt.Errorf("%w: decode: %w", ErrBadAnswer, io.EOF), false},
		{"context.Canceled", context.Canceled, false},
		{"wrapped context.Canceled", fmt.Errorf("call: %w", context.Canceled), false},
		{"context.DeadlineExceeded", context.DeadlineExceeded, false},
		{"*net.OpError", opErr, true},
		{"wrapped *net.OpError", fmt.Errorf("post: %w", opErr), true},
		{"io.EOF", io.EOF, true},
		{"other error", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code int
		want string
	}{
		{400, "provider answered 400 (bad request)"},
		{401, "provider answered 401 (authentication failed)"},
		{403, "provider answered 403 (permission denied)"},
		{404, "provider answered 404 (not found)"},
		{408, "provider answered 408 (request timeout)"},
		{409, "provider answered 409 (conflict)"},
		{413, "provider answered 413 (request too large)"},
		{422, "provider answered 422 (unprocessable request)"},
		{429, "provider answered 429 (rate limited)"},
		{451, "provider answered 451 (client error)"},
		{500, "provider answered 500 (server error)"},
		{502, "provider answered 502 (bad gateway)"},
		{503, "provider answered 503 (unavailable)"},
		{504, "provider answered 504 (gateway timeout)"},
		{529, "provider answered 529 (server error)"},
		{302, "provider answered 302 (unexpected status)"},
	}
	for _, tt := range tests {
		// A message set by a caller is never shown.
		e := &StatusError{StatusCode: tt.code, Message: "key sk-secret"}
		if got := e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// The phrases of failures other than an error status hide what they wrap
// and keep its kind.
func TestCallErrorPhrases(t *testing.T) {
	t.Parallel()
	urlErr := func(inner error) error {
		return &url.Error{Op: "Post", URL: "https://example.invalid/v1/chat/completions?api-key=sk-secret", Err: inner}
	}
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	timeout, stop := context.WithCancelCause(context.Background())
	stop(fmt.Errorf("%w after 1s", ErrTimeout))
	tests := []struct {
		name      string
		ctx       context.Context
		err       error
		want      string
		is        []error
		retryable bool
	}{
		{"connection refused", context.Background(), urlErr(opErr), "connection to the provider failed", []error{syscall.ECONNREFUSED}, true},
		{"EOF", context.Background(), urlErr(io.EOF), "connection to the provider failed", []error{io.EOF}, true},
		{"cut mid-answer", context.Background(), urlErr(io.ErrUnexpectedEOF), "llm stream broke off", []error{ErrBrokenStream}, true},
		{"canceled", context.Background(), urlErr(context.Canceled), "llm call canceled", []error{context.Canceled}, false},
		{"deadline", context.Background(), urlErr(context.DeadlineExceeded), "llm call ran out of time", []error{context.DeadlineExceeded}, false},
		{"our timeout", timeout, urlErr(context.Canceled), "llm call timed out after 1s", []error{ErrTimeout}, true},
		{"our timeout, other error", timeout, urlErr(opErr), "llm call timed out after 1s", []error{ErrTimeout, syscall.ECONNREFUSED}, true},
		// A *url.Error is a net.Error: any failure of the request counts as
		// the connection's.
		{"TLS", context.Background(), urlErr(errors.New("tls: sk-secret")), "connection to the provider failed", nil, true},
		{"anything else", context.Background(), errors.New("sk-secret"), "provider call failed", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := classify(tt.ctx, tt.err)
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("%v is not %v", err, target)
				}
			}
			if got := Retryable(err); got != tt.retryable {
				t.Errorf("Retryable = %v, want %v", got, tt.retryable)
			}
		})
	}
}
