package llm

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// go-openai's errors do not carry the response headers, so the Retry-After
// of an error answer is caught on the way: the call puts a slot in the
// request's context and the transport fills it.

type retrySlotKey struct{}

// retrySlot holds the Retry-After of the last error answer of one call.
type retrySlot struct {
	mu sync.Mutex
	d  time.Duration
}

func (s *retrySlot) set(d time.Duration) {
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
}

func (s *retrySlot) get() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d
}

func withRetrySlot(ctx context.Context) context.Context {
	return context.WithValue(ctx, retrySlotKey{}, &retrySlot{})
}

// retryAfterOf returns the Retry-After recorded for the call of ctx.
func retryAfterOf(ctx context.Context) time.Duration {
	if s, ok := ctx.Value(retrySlotKey{}).(*retrySlot); ok {
		return s.get()
	}
	return 0
}

// retryAfterTransport records the Retry-After of error answers into the
// request context's slot, when it has one.
type retryAfterTransport struct {
	base http.RoundTripper
	now  func() time.Time
}

func (t retryAfterTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil && resp.StatusCode >= 400 {
		if s, ok := r.Context().Value(retrySlotKey{}).(*retrySlot); ok {
			s.set(ParseRetryAfter(resp.Header, t.now()))
		}
	}
	return resp, err
}

// maxRetryAfter bounds a provider's hint: a larger one is treated as this.
const maxRetryAfter = 10 * time.Minute

// ParseRetryAfter reads the wait an error answer asks for: Retry-After-Ms
// (milliseconds, as OpenAI sends it), else Retry-After in seconds or as an
// HTTP date. It returns 0 when there is none or it cannot be read, and at
// most 10 minutes.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			d = time.Duration(min(ms, float64(maxRetryAfter.Milliseconds())) * float64(time.Millisecond))
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); d == 0 && v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			if s > 0 {
				d = time.Duration(min(s, maxRetryAfter.Seconds()) * float64(time.Second))
			}
		} else if at, err := http.ParseTime(v); err == nil {
			d = at.Sub(now)
		}
	}
	return min(max(d, 0), maxRetryAfter)
}
