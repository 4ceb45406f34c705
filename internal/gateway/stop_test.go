package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// goneRedis returns a client of a real Redis, closed: its commands fail as
// they do when Redis is out of reach, marked as the service's clients mark
// them (redisx.Hook), so that redisx.Unavailable tells them.
func goneRedis(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redistest.New(t).Addr})
	c.AddHook(redisx.Hook{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return c
}

// A caller whose appends of text fail because Redis is out of reach stops
// its calls, again and again: none of that may move the breaker towards
// open, where as many failures of the provider open it.
func TestRedisCallbackErrorsNeverOpenTheBreaker(t *testing.T) {
	t.Parallel()
	const calls = 20
	gone := goneRedis(t)
	appendText := func(s string) error { return gone.RPush(context.Background(), "job:text", s).Err() }
	tests := []struct {
		name     string
		model    string
		answer   answer
		onText   func(string) error
		wantOpen bool
	}{
		{"provider 500s open it", "cb-control-500", answer{err: &llm.StatusError{StatusCode: 500}}, func(string) error { return nil }, true},
		{"Redis out of reach in the callback does not", "cb-redis-gone", answer{text: "some text"}, appendText, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model := uniqueModel(tt.model)
			b := setupFake(t, func(c *config.LLM, _ *llm.Policy) { c.BreakerFailures = 5 })
			b.f.set(tt.answer)
			refused := false
			for i := range calls {
				resp, err := b.g.Stream(noWait(), llm.Request{Model: model}, tt.onText)
				if errors.Is(err, llm.ErrCircuitOpen) {
					refused = true
					break
				}
				if tt.wantOpen {
					continue
				}
				if !errors.Is(err, redis.ErrClosed) || !redisx.Unavailable(err) || errors.Is(err, llm.ErrNoCapacity) || resp.Attempts != 1 {
					t.Fatalf("call %d: %+v, %v; want the callback's Redis error after 1 attempt", i, resp, err)
				}
			}
			if refused != tt.wantOpen {
				t.Fatalf("after up to %d calls the breaker refused: %v, want %v", calls, refused, tt.wantOpen)
			}
			if tt.wantOpen {
				return
			}
			if !b.admits(t, model) {
				t.Error("the breaker refuses after callback errors only")
			}
			// One request per call: a callback's error is never retried.
			if n := b.f.count(); n != calls+1 {
				t.Errorf("%d requests, want %d (one per call, and the probe)", n, calls+1)
			}
			if got := requestsOf(t, model, metrics.OutcomeCanceled); got != calls {
				t.Errorf("%v requests counted canceled, want %d", got, calls)
			}
		})
	}
}

var (
	errJobClosed   = errors.New("job closed")
	errJobDeadline = errors.New("job deadline reached")
)

// Requests stopped by their caller, for whatever reason, are the caller's:
// the metrics say canceled, no breaker counts them, and the call is not
// retried. A request cut short of the caller's deadline by the gateway is
// a timeout (no answer in the time the task had), not counted either.
func TestStoppedRequests(t *testing.T) {
	t.Parallel()
	gone := goneRedis(t)
	tests := []struct {
		name        string
		answer      answer
		onText      func(string) error
		deadline    time.Duration // of the caller's context; 0: none
		stop        error         // the caller cancels with this cause once the request is in
		wantIs      error
		wantOutcome string
		wantOpen    bool
	}{
		{
			name:   "callback: Redis out of reach",
			answer: answer{text: "text"},
			onText: func(s string) error { return gone.Append(context.Background(), "job:text", s).Err() },
			wantIs: redis.ErrClosed, wantOutcome: metrics.OutcomeCanceled,
		},
		{
			name:   "callback: the job closed",
			answer: answer{text: "text"},
			onText: func(string) error { return fmt.Errorf("append: %w", errJobClosed) },
			wantIs: errJobClosed, wantOutcome: metrics.OutcomeCanceled,
		},
		{
			name:   "caller canceled",
			answer: answer{block: true},
			stop:   errJobClosed,
			wantIs: context.Canceled, wantOutcome: metrics.OutcomeCanceled,
		},
		{
			// The client made a broken stream of the cut connection: the
			// caller's context says who ended it.
			name:   "job deadline reached, as a cancel cause",
			answer: answer{block: true, err: fmt.Errorf("%w: %w", llm.ErrBrokenStream, io.ErrUnexpectedEOF)},
			stop:   errJobDeadline,
			wantIs: llm.ErrBrokenStream, wantOutcome: metrics.OutcomeCanceled,
		},
		{
			name:     "the task's time ran out",
			answer:   answer{block: true},
			deadline: deadlineMargin + 300*time.Millisecond,
			wantIs:   llm.ErrTimeout, wantOutcome: metrics.OutcomeTimeout,
		},
		{
			name:   "control: a provider failure counts",
			answer: answer{err: &llm.StatusError{StatusCode: 502}},
			wantIs: &llm.StatusError{}, wantOutcome: metrics.OutcomeServerError, wantOpen: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model := uniqueModel("stopped")
			b := setupFake(t, nil) // opens on the first counted failure
			b.f.set(tt.answer)
			onText := tt.onText
			if onText == nil {
				onText = func(string) error { return nil }
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tt.deadline > 0 {
				var stop context.CancelFunc
				ctx, stop = context.WithTimeout(ctx, tt.deadline)
				defer stop()
			}
			type result struct {
				resp llm.Response
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := b.g.Stream(ctx, llm.Request{Model: model}, onText)
				done <- result{resp, err}
			}()
			<-b.f.entered
			if tt.stop != nil {
				cancel(tt.stop)
			}
			res := <-done
			var se *llm.StatusError
			if want, ok := tt.wantIs.(*llm.StatusError); ok && want != nil {
				if !errors.As(res.err, &se) {
					t.Fatalf("error %v, want a provider's status error", res.err)
				}
			} else if !errors.Is(res.err, tt.wantIs) {
				t.Fatalf("error %v, want %v", res.err, tt.wantIs)
			}
			if !tt.wantOpen && (res.resp.Attempts != 1 || b.f.count() != 1) {
				t.Errorf("%d attempts, %d requests; want 1: a stopped request is not retried", res.resp.Attempts, b.f.count())
			}
			if got := requestsOf(t, model, tt.wantOutcome); got != 1 {
				t.Errorf("%v requests counted %s, want 1", got, tt.wantOutcome)
			}
			for _, o := range []string{metrics.OutcomeError, metrics.OutcomeBrokenStream} {
				if got := requestsOf(t, model, o); got != 0 {
					t.Errorf("%v requests counted %s", got, o)
				}
			}
			if open := !b.admits(t, model); open != tt.wantOpen {
				t.Errorf("breaker open %v, want %v", open, tt.wantOpen)
			}
		})
	}
}

// Redis out of reach while a call is admitted (the limits, the breakers'
// state) is neither a lack of capacity, nor an open breaker, nor the
// provider's failure: the error is Redis', and nothing is sent.
func TestRedisOutOfReachAtAdmission(t *testing.T) {
	t.Parallel()
	f := newFakeProvider(answer{text: "fine"})
	g := New(testConfig(&sim{url: "http://127.0.0.1:1"}), Options{
		Redis: goneRedis(t), Policy: &testPolicy, Log: slog.New(slog.DiscardHandler),
		Callers: map[string]Caller{config.DefaultProvider: f},
	})
	calls := map[string]func() error{
		"Complete": func() error { _, err := g.Complete(context.Background(), req("m")); return err },
		"Stream": func() error {
			_, err := g.Stream(context.Background(), req("m"), func(string) error { return nil })
			return err
		},
		"Admit": func() error { _, _, err := g.Admit(context.Background(), req("m")); return err },
	}
	for name, call := range calls {
		err := call()
		if !redisx.Unavailable(err) || errors.Is(err, llm.ErrNoCapacity) || errors.Is(err, llm.ErrCircuitOpen) {
			t.Errorf("%s: %v; want Redis' error, not a lack of capacity or an open breaker", name, err)
		}
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d requests sent without Redis", n)
	}
}
