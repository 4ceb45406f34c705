package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

// openBreaker fails the requests of model until its call is refused by
// every breaker of its chain.
func (b fakeBundle) openBreaker(t *testing.T, model string) {
	t.Helper()
	b.f.set(answer{err: &llm.StatusError{StatusCode: 503}})
	for range 50 {
		if _, err := b.g.Complete(noWait(), llm.Request{Model: model}); errors.Is(err, llm.ErrCircuitOpen) {
			b.drainWaits()
			return
		}
	}
	t.Fatalf("the breakers of %s did not open", model)
}

// drainWaits forgets the breaker waits signalled so far.
func (b fakeBundle) drainWaits() {
	for {
		select {
		case <-b.waits:
		default:
			return
		}
	}
}

// awaitWaiting waits for a call to start waiting for a breaker.
func (b fakeBundle) awaitWaiting(t *testing.T) {
	t.Helper()
	select {
	case <-b.waits:
	case <-time.After(time.Minute): // a hang, not a timing
		t.Fatal("no call started waiting for a breaker")
	}
}

type callResult struct {
	resp llm.Response
	err  error
}

func (b fakeBundle) completeAsync(ctx context.Context, model string) <-chan callResult {
	done := make(chan callResult, 1)
	go func() {
		resp, err := b.g.Complete(ctx, llm.Request{Model: model})
		done <- callResult{resp, err}
	}()
	return done
}

// A call refused by its breaker waits for it, as for capacity: it is
// answered if the breaker lets requests through again within the wait.
// The breaker is half-open with its one trial held by an admission the test
// controls, so that the call is refused for as long as the test says.
func TestOpenBreakerWaitsForTheTrial(t *testing.T) {
	t.Parallel()
	b := setupFake(t, func(c *config.LLM, _ *llm.Policy) { c.BreakerOpenFor = 50 * time.Millisecond })
	b.openBreaker(t, "wait-a")
	b.f.set(answer{text: "fine"})
	// The admission waits out the open time and takes the trial.
	trialCtx, release, err := b.g.Admit(context.Background(), llm.Request{Model: "wait-a"})
	if err != nil {
		t.Fatalf("Admit after the open time: %v", err)
	}
	defer release()
	b.drainWaits()

	done := b.completeAsync(context.Background(), "wait-a")
	b.awaitWaiting(t)
	sent := b.f.count()
	// The trial succeeds and closes the breaker; the waiting call follows.
	if _, err := b.g.Complete(trialCtx, llm.Request{Model: "wait-a"}); err != nil {
		t.Fatalf("the trial: %v", err)
	}
	res := <-done
	if res.err != nil || res.resp.Text != "fine" || res.resp.Attempts != 1 || res.resp.Requested != "wait-a" {
		t.Fatalf("the waiting call: %+v, %v; want an answer after one request", res.resp, res.err)
	}
	if n := b.f.count() - sent; n != 2 {
		t.Errorf("%d requests since the call started waiting, want 2 (the trial, the call)", n)
	}
}

// With fallbacks, a call waits only when every model of its chain is
// refused, and then takes the first that admits it.
func TestBreakerWaitCoversTheChain(t *testing.T) {
	t.Parallel()
	b := setupFake(t, func(c *config.LLM, _ *llm.Policy) {
		c.BreakerOpenFor = 50 * time.Millisecond
		c.Fallbacks = map[string][]string{"chain-a": {"chain-b"}}
	})
	b.openBreaker(t, "chain-b")
	b.openBreaker(t, "chain-a") // refused by both
	b.f.set(answer{text: "fine"})
	// Hold both breakers half-open: chain-b's trial first (its own chain),
	// then chain-a's (chain-b refuses it).
	ctxB, releaseB, err := b.g.Admit(context.Background(), llm.Request{Model: "chain-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseB()
	_, releaseA, err := b.g.Admit(context.Background(), llm.Request{Model: "chain-a"})
	if err != nil {
		t.Fatal(err)
	}
	b.drainWaits()

	done := b.completeAsync(context.Background(), "chain-a")
	b.awaitWaiting(t)
	if _, err := b.g.Complete(ctxB, llm.Request{Model: "chain-b"}); err != nil {
		t.Fatalf("chain-b's trial: %v", err)
	}
	res := <-done
	releaseA() // chain-a's trial was never used
	if res.err != nil || res.resp.Requested != "chain-b" || res.resp.Attempts != 1 {
		t.Fatalf("the waiting call: %+v, %v; want chain-b's answer after one request", res.resp, res.err)
	}
}

// When no breaker admits the call within its wait, it fails with
// ErrCircuitOpen and a hint, having sent nothing; its caller's end and its
// deadline bound the wait too.
func TestBreakerWaitRunsOut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// call makes the call; the one that ends its context waits for
		// the call to wait first.
		call   func(b fakeBundle) (llm.Response, error)
		wantIs error
	}{
		{
			name: "the capacity wait",
			call: func(b fakeBundle) (llm.Response, error) {
				return b.g.Complete(llm.WithCapacityWait(context.Background(), 100*time.Millisecond), llm.Request{Model: "out"})
			},
			wantIs: llm.ErrCircuitOpen,
		},
		{
			name: "the capacity wait of an admission",
			call: func(b fakeBundle) (llm.Response, error) {
				_, _, err := b.g.Admit(llm.WithCapacityWait(context.Background(), 100*time.Millisecond), llm.Request{Model: "out"})
				return llm.Response{}, err
			},
			wantIs: llm.ErrCircuitOpen,
		},
		{
			// The wait stops while a request still fits before the
			// deadline: the error says the breaker, not the deadline.
			name: "the caller's deadline",
			call: func(b fakeBundle) (llm.Response, error) {
				ctx, cancel := context.WithTimeout(context.Background(), minAttemptTime+deadlineMargin+200*time.Millisecond)
				defer cancel()
				return b.g.Complete(ctx, llm.Request{Model: "out"})
			},
			wantIs: llm.ErrCircuitOpen,
		},
		{
			name: "the caller's cancel",
			call: func(b fakeBundle) (llm.Response, error) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := b.completeAsync(ctx, "out")
				b.awaitWaiting(t)
				cancel()
				res := <-done
				return res.resp, res.err
			},
			wantIs: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupFake(t, nil) // open for an hour; a capacity wait of a minute
			b.openBreaker(t, "out")
			sent := b.f.count()
			resp, err := tt.call(b)
			if !errors.Is(err, tt.wantIs) || resp.Attempts != 0 {
				t.Fatalf("%+v, %v; want %v with no attempt", resp, err, tt.wantIs)
			}
			if tt.wantIs == llm.ErrCircuitOpen {
				if d, ok := llm.RetryAfter(err); !ok || d <= 0 {
					t.Errorf("no hint of when to come back: %s, %v", d, ok)
				}
				select {
				case <-b.waits:
				default:
					t.Error("the call did not wait for the breaker")
				}
			} else if errors.Is(err, llm.ErrCircuitOpen) {
				t.Errorf("error %v: a stopped wait is the caller's, not the breaker's", err)
			}
			if n := b.f.count(); n != sent {
				t.Errorf("%d requests sent while the breaker was open", n-sent)
			}
		})
	}
}
