package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestPolicyNext(t *testing.T) {
	t.Parallel()
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	p := Policy{MaxAttempts: 3, Base: 100 * time.Millisecond, MaxBackoff: time.Second, MaxWait: 5 * time.Second}
	tests := []struct {
		name    string
		err     error
		attempt int
		retry   bool
		now     bool
		// the delay is within [lo, hi]
		lo, hi time.Duration
	}{
		{"nil", nil, 1, false, false, 0, 0},
		{"400", &StatusError{StatusCode: 400}, 1, false, false, 0, 0},
		{"401", &StatusError{StatusCode: 401}, 1, false, false, 0, 0},
		{"404", &StatusError{StatusCode: 404}, 1, false, false, 0, 0},
		{"canceled", context.Canceled, 1, false, false, 0, 0},
		{"bad answer", ErrBadAnswer, 1, false, false, 0, 0},
		{"500 first", &StatusError{StatusCode: 500}, 1, true, true, 50 * time.Millisecond, 100 * time.Millisecond},
		{"503 second", &StatusError{StatusCode: 503}, 2, true, true, 100 * time.Millisecond, 200 * time.Millisecond},
		{"503 last", &StatusError{StatusCode: 503}, 3, true, false, 200 * time.Millisecond, 400 * time.Millisecond},
		{"500 backoff capped", &StatusError{StatusCode: 500}, 9, true, false, 500 * time.Millisecond, time.Second},
		{"408", &StatusError{StatusCode: 408}, 1, true, true, 50 * time.Millisecond, 100 * time.Millisecond},
		{"timeout", fmt.Errorf("%w: no first token within 1s", ErrTimeout), 1, true, true, 50 * time.Millisecond, 100 * time.Millisecond},
		{"broken stream", fmt.Errorf("%w: %w", ErrBrokenStream, io.ErrUnexpectedEOF), 2, true, true, 100 * time.Millisecond, 200 * time.Millisecond},
		{"429 without hint", &StatusError{StatusCode: 429}, 1, true, true, 50 * time.Millisecond, 100 * time.Millisecond},
		{"429 Retry-After 1s", &StatusError{StatusCode: 429, RetryAfter: time.Second}, 1, true, true, time.Second, 1200 * time.Millisecond},
		{"429 Retry-After 1s, last attempt", &StatusError{StatusCode: 429, RetryAfter: time.Second}, 3, true, false, time.Second, 1200 * time.Millisecond},
		{"429 Retry-After 30s: hand back", &StatusError{StatusCode: 429, RetryAfter: 30 * time.Second}, 1, true, false, 30 * time.Second, 36 * time.Second},
		{"wrapped 429 Retry-After", fmt.Errorf("snapshot: %w", &StatusError{StatusCode: 429, RetryAfter: 2 * time.Second}), 1, true, true, 2 * time.Second, 2400 * time.Millisecond},
		{"no capacity: hand back", WithRetryAfter(ErrNoCapacity, 3*time.Second), 1, true, false, 3 * time.Second, 3 * time.Second},
		{"breaker open: hand back", WithRetryAfter(ErrCircuitOpen, 10*time.Second), 1, true, false, 10 * time.Second, 10 * time.Second},
		{"connection refused", opErr, 1, true, true, 50 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for range 20 { // the jitter stays within bounds
				d := p.Next(tt.err, tt.attempt)
				if d.Retry != tt.retry || d.Now != tt.now || d.Delay < tt.lo || d.Delay > tt.hi {
					t.Fatalf("Next(%v, %d) = %+v; want retry %v, now %v, delay in [%s, %s]", tt.err, tt.attempt, d, tt.retry, tt.now, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestQueueDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		retried int
		err     error
		lo, hi  time.Duration
	}{
		{"first retry", 0, &StatusError{StatusCode: 503}, time.Second, 1500 * time.Millisecond},
		{"third retry", 2, &StatusError{StatusCode: 503}, 4 * time.Second, 6 * time.Second},
		{"capped", 10, &StatusError{StatusCode: 503}, 30 * time.Second, 30 * time.Second},
		{"Retry-After longer than the backoff", 0, &StatusError{StatusCode: 429, RetryAfter: 20 * time.Second}, 20 * time.Second, 24 * time.Second},
		{"Retry-After shorter than the backoff", 3, &StatusError{StatusCode: 429, RetryAfter: time.Second}, 8 * time.Second, 12 * time.Second},
		{"huge Retry-After capped", 0, &StatusError{StatusCode: 429, RetryAfter: time.Hour}, 2 * time.Minute, 2 * time.Minute},
		{"no capacity, no hint", 0, ErrNoCapacity, time.Second, 1500 * time.Millisecond},
		{"no capacity, hint", 7, WithRetryAfter(ErrNoCapacity, 2*time.Second), 2 * time.Second, 3 * time.Second},
		{"no capacity, short hint", 0, WithRetryAfter(ErrNoCapacity, 10*time.Millisecond), time.Second, time.Second},
		// An open breaker's hand-back: like no capacity, its hint and up to
		// half again, however often it came back.
		{"breaker open: back within 5 s to meet the trial", 0, WithRetryAfter(ErrCircuitOpen, 10*time.Second), 5 * time.Second, 7500 * time.Millisecond},
		{"breaker open, often", 9, WithRetryAfter(ErrCircuitOpen, 2*time.Second), 2 * time.Second, 3 * time.Second},
		{"breaker open, no hint", 0, fmt.Errorf("call: %w", ErrCircuitOpen), time.Second, 1500 * time.Millisecond},
		{"breaker open, huge hint capped", 0, WithRetryAfter(ErrCircuitOpen, time.Hour), 5 * time.Second, 7500 * time.Millisecond},
	}
	for _, tt := range tests {
		for range 20 {
			if d := QueueDelay(tt.retried, tt.err); d < tt.lo || d > tt.hi {
				t.Errorf("%s: QueueDelay(%d, %v) = %s, want within [%s, %s]", tt.name, tt.retried, tt.err, d, tt.lo, tt.hi)
				break
			}
		}
	}
}

func TestRetryBadAnswer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		p        Policy
		rejected int
		want     bool
	}{
		{"default: the first rejected answer is asked again", DefaultPolicy(3, time.Second), 1, true},
		{"default: not the second", DefaultPolicy(3, time.Second), 2, false},
		{"default, whatever MaxAttempts", DefaultPolicy(1, time.Second), 1, true},
		{"none", Policy{MaxAttempts: 3}, 1, false},
		{"two", Policy{BadAnswerRetries: 2}, 2, true},
		{"two, third", Policy{BadAnswerRetries: 2}, 3, false},
		{"nothing rejected", DefaultPolicy(3, time.Second), 0, false},
	}
	for _, tt := range tests {
		if got := tt.p.RetryBadAnswer(tt.rejected); got != tt.want {
			t.Errorf("%s: RetryBadAnswer(%d) = %v, want %v", tt.name, tt.rejected, got, tt.want)
		}
	}
	// The queue does not run the work again for a bad answer: it is
	// permanent, whatever its validator's error wraps.
	bad := fmt.Errorf("%w: %w", ErrBadAnswer, io.EOF)
	if d := (DefaultPolicy(3, time.Second)).Next(bad, 1); d.Retry {
		t.Errorf("Next(%v) = %+v, want no retry", bad, d)
	}
}

func TestRetryAfterHint(t *testing.T) {
	t.Parallel()
	if d, ok := RetryAfter(errors.Join(errors.New("x"), WithRetryAfter(ErrNoCapacity, time.Second))); !ok || d != time.Second {
		t.Errorf("RetryAfter of a joined error = %s, %v", d, ok)
	}
	if _, ok := RetryAfter(&StatusError{StatusCode: 503}); ok {
		t.Error("a StatusError without Retry-After has a hint")
	}
	if WithRetryAfter(nil, time.Second) != nil {
		t.Error("WithRetryAfter(nil) is not nil")
	}
	err := WithRetryAfter(ErrCircuitOpen, time.Second)
	if !errors.Is(err, ErrCircuitOpen) || err.Error() != ErrCircuitOpen.Error() {
		t.Errorf("WithRetryAfter changed the error: %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		h    map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond},
		{"milliseconds win", map[string]string{"Retry-After": "1", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"http date", map[string]string{"Retry-After": now.Add(7 * time.Second).Format(http.TimeFormat)}, 7 * time.Second},
		{"date in the past", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"negative", map[string]string{"Retry-After": "-3"}, 0},
		{"huge", map[string]string{"Retry-After": "99999999999"}, 10 * time.Minute},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.h {
			h.Set(k, v)
		}
		if got := ParseRetryAfter(h, now); got != tt.want {
			t.Errorf("%s: ParseRetryAfter(%v) = %s, want %s", tt.name, tt.h, got, tt.want)
		}
	}
}
