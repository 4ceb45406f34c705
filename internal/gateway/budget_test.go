package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// fakeBudget records what calls reserve and settle.
type fakeBudget struct {
	mu       sync.Mutex
	refuse   bool  // refuse every reservation
	err      error // fail every reservation with err
	owners   []string
	reserved []int
	settled  []int
}

func (b *fakeBudget) Reserve(_ context.Context, owner string, tokens int) (func(int), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.owners = append(b.owners, owner)
	switch {
	case b.err != nil:
		return nil, b.err
	case b.refuse:
		return nil, fmt.Errorf("%w: %s has 3 tokens left", ErrBudgetExhausted, owner)
	}
	b.reserved = append(b.reserved, tokens)
	return func(used int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.settled = append(b.settled, used)
	}, nil
}

// seen returns the owners asked for, the reservations and the
// settlements so far.
func (b *fakeBudget) seen() (owners []string, reserved, settled []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.owners), slices.Clone(b.reserved), slices.Clone(b.settled)
}

// budgetBundle is a gateway in front of a fakeProvider with a fakeBudget,
// on a database of its own.
type budgetBundle struct {
	fakeBundle
	budget *fakeBudget
	db     redistest.DB
}

// setupBudget is setupFake with a budget: breakers open after 100
// failures, and up to 3 requests per model.
func setupBudget(t *testing.T, tweak func(*config.LLM)) budgetBundle {
	t.Helper()
	cfg := testConfig(&sim{url: "http://127.0.0.1:1"})
	cfg.CapacityWait = time.Minute
	if tweak != nil {
		tweak(&cfg)
	}
	p := testPolicy
	db := redistest.New(t)
	f, fb := newFakeProvider(), &fakeBudget{}
	g := New(cfg, Options{
		Redis: db.Client, Policy: &p, Log: slog.New(slog.DiscardHandler), Budget: fb,
		Callers: map[string]Caller{config.DefaultProvider: f},
	})
	waits := make(chan struct{}, 100)
	g.waiting = func() {
		select {
		case waits <- struct{}{}:
		default:
		}
	}
	return budgetBundle{fakeBundle: fakeBundle{g: g, f: f, waits: waits}, budget: fb, db: db}
}

func budgetReq(model string) llm.Request {
	return llm.Request{Model: model, System: "As of 2024-05-01.", User: "What changed?", MaxTokens: 64}
}

// Each request sent is charged: reserved at its estimate before it is
// sent, settled with the provider's usage, or with the estimate when the
// provider told none.
func TestBudgetChargesRequests(t *testing.T) {
	t.Parallel()
	est := estimate(budgetReq("x"))
	e500 := answer{err: &llm.StatusError{StatusCode: 500}}
	e400 := answer{err: &llm.StatusError{StatusCode: 400}}
	tests := []struct {
		name     string
		owner    string
		stream   bool
		script   []answer
		wantErr  bool
		reserved []int
		settled  []int
	}{
		{"answered: its usage", "k1", false, []answer{{text: "fine"}}, false, []int{est}, []int{2}},
		{"streamed: its usage", "k1", true, []answer{{text: "fine"}}, false, []int{est}, []int{2}},
		{"failed, then answered: the estimate, then the usage", "k1", false, []answer{e500, {text: "fine"}}, false, []int{est, est}, []int{est, 2}},
		{"failed for good: the estimate", "k1", false, []answer{e400}, true, []int{est}, []int{est}},
		{"no owner: no budget", "", false, []answer{{text: "fine"}}, false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupBudget(t, nil)
			b.f.set(tt.script...)
			ctx := context.Background()
			if tt.owner != "" {
				ctx = WithOwner(ctx, tt.owner)
			}
			var err error
			if tt.stream {
				_, err = b.g.Stream(ctx, budgetReq(uniqueModel("budget")), func(string) error { return nil })
			} else {
				_, err = b.g.Complete(ctx, budgetReq(uniqueModel("budget")))
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("call: %v, want an error: %v", err, tt.wantErr)
			}
			owners, reserved, settled := b.budget.seen()
			if !slices.Equal(reserved, tt.reserved) || !slices.Equal(settled, tt.settled) {
				t.Errorf("reserved %v, settled %v; want %v, %v", reserved, settled, tt.reserved, tt.settled)
			}
			for _, o := range owners {
				if o != tt.owner {
					t.Errorf("charged to %q, want %q", o, tt.owner)
				}
			}
		})
	}
}

// A refused reservation fails the call at once: nothing sent, no retry,
// no fallback, no breaker count, the capacity it was admitted with freed.
func TestBudgetRefusalFailsTheCall(t *testing.T) {
	t.Parallel()
	b := setupBudget(t, func(c *config.LLM) {
		c.MaxInFlight = 1
		c.BreakerFailures = 1 // a single counted failure would open it
	})
	b.budget.refuse = true
	model, fallback := uniqueModel("refused"), uniqueModel("refused-fallback")
	b.g.fallbacks[model] = []string{fallback}
	ctx := WithOwner(context.Background(), "k1")

	for i, admitted := range []bool{false, true, false} {
		cctx := ctx
		if admitted {
			// The capacity a task took ahead of the call is given back.
			var release func()
			var err error
			cctx, release, err = b.g.Admit(ctx, budgetReq(model))
			if err != nil {
				t.Fatal(err)
			}
			defer release()
		}
		resp, err := b.g.Complete(cctx, budgetReq(model))
		if !errors.Is(err, ErrBudgetExhausted) || err.Error() != "the API key's token budget for today is used up" {
			t.Fatalf("call %d: %v, want ErrBudgetExhausted and its text alone", i, err)
		}
		if llm.Retryable(err) || errors.Is(err, llm.ErrNoCapacity) || errors.Is(err, llm.ErrCircuitOpen) {
			t.Errorf("call %d: %v would be tried again", i, err)
		}
		if resp.Attempts != 0 {
			t.Errorf("call %d: %d attempts", i, resp.Attempts)
		}
	}
	if n := b.f.count(); n != 0 {
		t.Errorf("the provider got %d requests", n)
	}
	if owners, _, _ := b.budget.seen(); len(owners) != 3 {
		t.Errorf("%d reservations asked for 3 calls: a refusal is not retried", len(owners))
	}
	if n := requestsOf(t, model, outcomeBudgetExhausted); n != 3 {
		t.Errorf("%v requests counted %s, want 3", n, outcomeBudgetExhausted)
	}
	if n := requestsOf(t, fallback, outcomeBudgetExhausted); n != 0 {
		t.Errorf("the fallback was tried (%v)", n)
	}
	if held, err := limit.NewSemaphore(b.db.Client, config.DefaultProvider, 1, limit.SemaphoreOptions{}).Held(context.Background()); err != nil || held != 0 {
		t.Errorf("%d slots held after the refusals (%v)", held, err)
	}
	// The breaker counted nothing: a call without a budget goes through.
	if !b.admits(t, model) {
		t.Error("the refusals opened the breaker")
	}
	if n := requestsOf(t, model, metrics.OutcomeOK); n != 1 {
		t.Errorf("%v requests ok, want 1", n)
	}
}

// Requests that are not sent are not charged: refused by a breaker, or
// without capacity. A budget that cannot be read fails the call as it is,
// having sent nothing.
func TestBudgetUnsentRequestsCostNothing(t *testing.T) {
	t.Parallel()
	errBudget := errors.New("budget store out of reach")
	tests := []struct {
		name    string
		prepare func(t *testing.T, b budgetBundle, model string) context.Context
		wantErr error
	}{
		{
			name: "breaker open",
			prepare: func(t *testing.T, b budgetBundle, model string) context.Context {
				b.openBreaker(t, model) // without an owner: not charged
				return noWait()
			},
			wantErr: llm.ErrCircuitOpen,
		},
		{
			name: "no capacity",
			prepare: func(t *testing.T, b budgetBundle, model string) context.Context {
				_, release, err := b.g.Admit(context.Background(), budgetReq(model)) // takes the only slot
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(release)
				return noWait()
			},
			wantErr: llm.ErrNoCapacity,
		},
		{
			name: "budget unreadable",
			prepare: func(t *testing.T, b budgetBundle, model string) context.Context {
				b.budget.err = errBudget
				return context.Background()
			},
			wantErr: errBudget,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupBudget(t, func(c *config.LLM) {
				c.MaxInFlight = 1
				c.BreakerFailures = 1
			})
			model := uniqueModel("unsent")
			ctx := WithOwner(tt.prepare(t, b, model), "k1")
			sent := b.f.count()
			_, err := b.g.Complete(ctx, budgetReq(model))
			if !errors.Is(err, tt.wantErr) || errors.Is(err, ErrBudgetExhausted) {
				t.Fatalf("call: %v, want %v", err, tt.wantErr)
			}
			if n := b.f.count(); n != sent {
				t.Errorf("%d requests sent", n-sent)
			}
			if _, reserved, settled := b.budget.seen(); len(reserved) != 0 || len(settled) != 0 {
				t.Errorf("reserved %v, settled %v; want nothing", reserved, settled)
			}
		})
	}
}

func TestOwnerOnContext(t *testing.T) {
	t.Parallel()
	if o := OwnerFrom(context.Background()); o != "" {
		t.Errorf("no owner: %q", o)
	}
	ctx := WithOwner(context.Background(), "k1")
	if o := OwnerFrom(WithOwner(ctx, "k2")); o != "k2" {
		t.Errorf("owner %q, want the innermost, k2", o)
	}
	if o := OwnerFrom(ctx); o != "k1" {
		t.Errorf("owner %q, want k1", o)
	}
}
