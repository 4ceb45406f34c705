package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
	inner := errors.New("inner")
	e := &StatusError{StatusCode: 429, Message: "slow down", err: inner}
	if got, want := e.Error(), "provider answered 429 Too Many Requests: slow down"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, inner) {
		t.Error("StatusError does not unwrap to its cause")
	}
}
