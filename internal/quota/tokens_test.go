package quota

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

func TestCheckTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		budget    int64
		used      int // charged before the check
		allowed   bool
		remaining int64
	}{
		{"no budget", 0, 500, true, 0},
		{"room left", 1000, 400, true, 600},
		{"used up exactly", 1000, 1000, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, _ := newQuota(t, start) // an hour to midnight
			ctx := context.Background()
			if _, err := q.ReserveTokens(ctx, "k", 0, tt.used); err != nil {
				t.Fatal(err)
			}
			d, err := q.CheckTokens(ctx, "k", tt.budget)
			if err != nil {
				t.Fatal(err)
			}
			want := Decision{Allowed: true, Limit: LimitTokens}
			if tt.budget > 0 {
				want = Decision{Allowed: tt.allowed, Limit: LimitTokens, Quota: tt.budget, Remaining: tt.remaining,
					Window: 24 * time.Hour, Reset: time.Hour}
				if !tt.allowed {
					want.RetryAfter = time.Hour
				}
			}
			if d != want {
				t.Errorf("decision %+v, want %+v", d, want)
			}
		})
	}
}

func TestReserveTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		budget  int64
		used    int // charged before
		tokens  int
		wantErr error
		after   int64 // charged after
	}{
		{"fits", 100, 40, 60, nil, 100},
		{"passes the budget: the last one in is charged", 100, 41, 60, nil, 101},
		{"more than the whole budget, from nothing", 100, 0, 101, nil, 101},
		{"used up: nothing charged", 100, 100, 1, ErrBudgetExhausted, 100},
		{"over: nothing charged", 100, 150, 10, ErrBudgetExhausted, 150},
		{"no budget counts all the same", 0, 1000, 500, nil, 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, _ := newQuota(t, start)
			ctx := context.Background()
			if _, err := q.ReserveTokens(ctx, "k", 0, tt.used); err != nil {
				t.Fatal(err)
			}
			r, err := q.ReserveTokens(ctx, "k", tt.budget, tt.tokens)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if (err == nil) != (r != nil) {
				t.Errorf("reservation %v with error %v", r, err)
			}
			u, err := q.Usage(ctx, "k", 0)
			if err != nil {
				t.Fatal(err)
			}
			if u.TokensToday != tt.after {
				t.Errorf("charged %d, want %d", u.TokensToday, tt.after)
			}
		})
	}
}

func TestTokensCounterLivesTwoDays(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	for range 2 { // the second reservation keeps the first one's expiry
		if _, err := q.ReserveTokens(ctx, "k", 0, 10); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := db.Client.PTTL(ctx, tokensKeyAt("k", start)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 47*time.Hour || ttl > 48*time.Hour {
		t.Errorf("the day's counter lives %s, want 48h", ttl)
	}
}

func TestSettle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		reserved int
		used     []int // Settle calls, in order
		after    int64
	}{
		{"used less", 100, []int{30}, 30},
		{"used more", 100, []int{130}, 130},
		{"use unknown: the reservation stays", 100, []int{-1}, 100},
		{"nothing used", 100, []int{0}, 0},
		{"settled twice: the second does nothing", 100, []int{30, 80}, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, _ := newQuota(t, start)
			ctx := context.Background()
			r, err := q.ReserveTokens(ctx, "k", 1000, tt.reserved)
			if err != nil {
				t.Fatal(err)
			}
			for _, used := range tt.used {
				if err := r.Settle(ctx, used); err != nil {
					t.Fatal(err)
				}
			}
			u, err := q.Usage(ctx, "k", 0)
			if err != nil {
				t.Fatal(err)
			}
			if u.TokensToday != tt.after {
				t.Errorf("charged %d, want %d", u.TokensToday, tt.after)
			}
		})
	}
}

// A request that straddles midnight is settled on the day it was reserved
// in; the new day starts afresh.
func TestSettleAfterMidnight(t *testing.T) {
	t.Parallel()
	q, c, db := newQuota(t, start)
	ctx := context.Background()
	r, err := q.ReserveTokens(ctx, "k", 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := q.CheckTokens(ctx, "k", 100); d.Allowed {
		t.Fatalf("budget used up, yet allowed: %+v", d)
	}
	c.Advance(time.Hour + time.Minute) // 00:01 the next day
	if d, err := q.CheckTokens(ctx, "k", 100); err != nil || !d.Allowed || d.Remaining != 100 {
		t.Fatalf("the next day: %+v, %v", d, err)
	}
	if err := r.Settle(ctx, 40); err != nil {
		t.Fatal(err)
	}
	yesterday, err := db.Client.Get(ctx, tokensKeyAt("k", start)).Int64()
	if err != nil || yesterday != 40 {
		t.Errorf("yesterday's count %d (%v), want 40", yesterday, err)
	}
	if u, _ := q.Usage(ctx, "k", 0); u.TokensToday != 0 {
		t.Errorf("today's count %d, want 0", u.TokensToday)
	}
}

// A settlement after the day's counter expired does not bring it back
// without an expiry.
func TestSettleAfterTheCounterExpired(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	r, err := q.ReserveTokens(ctx, "k", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Client.Del(ctx, tokensKeyAt("k", start)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, 300); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.Client.Exists(ctx, tokensKeyAt("k", start)).Result(); n != 0 {
		t.Error("the settlement recreated the counter")
	}
}

// The counter's edge cases for the scripts, which add first and repair
// after: a count that would go below 0, a counter at 0, one that expired;
// counts never go below 0, an expiry is never reset, a counter is never
// created without one.
func TestTokensCounterEdges(t *testing.T) {
	t.Parallel()
	const short = time.Hour // an expiry that a reset to 48h would show
	tests := []struct {
		name     string
		counter  int64 // before the reservation; -1: no counter
		budget   int64
		reserved int
		// change applies to the counter between reservation and settlement:
		// "drop" deletes it, else it is added.
		change     string
		used       int
		wantErr    error
		after      int64 // -1: no counter
		keepExpiry bool  // the counter keeps the short expiry it had
	}{
		{"reserve on a counter at 0", 0, 0, 50, "", -1, nil, 50, true},
		{"reserve 0 on a counter at 0", 0, 100, 0, "", -1, nil, 0, true},
		{"reserve 0 creates the counter", -1, 100, 0, "", -1, nil, 0, false},
		{"refused: count and expiry unchanged", 100, 100, 50, "", -1, ErrBudgetExhausted, 100, true},
		{"settle less on a counter at 0", 0, 0, 100, "-100", 10, nil, 0, true},
		{"settle below 0", 20, 0, 100, "-110", 0, nil, 0, true},
		{"settle more on a counter at 0", 0, 0, 0, "", 70, nil, 70, true},
		{"settle less after the counter expired", 0, 0, 100, "drop", 10, nil, -1, false},
		{"settle more after the counter expired", 0, 0, 100, "drop", 300, nil, -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, db := newQuota(t, start)
			ctx := context.Background()
			key := tokensKeyAt("k", start)
			if tt.counter >= 0 {
				if err := db.Client.Set(ctx, key, tt.counter, short).Err(); err != nil {
					t.Fatal(err)
				}
			}
			r, err := q.ReserveTokens(ctx, "k", tt.budget, tt.reserved)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("reserve: %v, want %v", err, tt.wantErr)
			}
			switch tt.change {
			case "":
			case "drop":
				if err := db.Client.Del(ctx, key).Err(); err != nil {
					t.Fatal(err)
				}
			default:
				d, _ := strconv.ParseInt(tt.change, 10, 64)
				if err := db.Client.IncrBy(ctx, key, d).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if r != nil {
				if err := r.Settle(ctx, tt.used); err != nil {
					t.Fatal(err)
				}
			}
			got, err := db.Client.Get(ctx, key).Int64()
			if errors.Is(err, redis.Nil) {
				got, err = -1, nil
			}
			if err != nil || got != tt.after {
				t.Errorf("counter %d (%v), want %d", got, err, tt.after)
			}
			ttl, err := db.Client.PTTL(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.after < 0:
			case tt.keepExpiry && (ttl <= 0 || ttl > short):
				t.Errorf("expiry %s, want the %s it had", ttl, short)
			case !tt.keepExpiry && (ttl <= 47*time.Hour || ttl > tokensTTL):
				t.Errorf("expiry %s, want %s", ttl, tokensTTL)
			}
		})
	}
}

// caller is a provider that answers every request with its usage.
type caller struct {
	requests atomic.Int64
	prompt   int
	answer   int
}

func (c *caller) Complete(_ context.Context, r llm.Request) (llm.Response, error) {
	c.requests.Add(1)
	return llm.Response{Text: "ok", Model: r.Model, PromptTokens: c.prompt, CompletionTokens: c.answer}, nil
}

func (c *caller) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	resp, _ := c.Complete(ctx, r)
	return resp, onText(resp.Text)
}

// The gateway pays for requests from the owners' budgets of Quota.Budget.
func TestBudgetInTheGateway(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	budgets := map[string]int64{"small": 50, "big": 10_000}
	budget := q.Budget(func(_ context.Context, owner string) (int64, error) {
		if owner == "broken" {
			return 0, errors.New("no key store")
		}
		return budgets[owner], nil
	})
	p := &caller{prompt: 12, answer: 18}
	g := gateway.New(config.LLM{
		MaxInFlight: 4, MaxAttempts: 1, CapacityWait: time.Second, Timeout: time.Minute,
		BreakerFailures: 100, BreakerOpenFor: time.Minute, BreakerTrials: 1,
	}, gateway.Options{
		Redis: db.Client, Log: slog.New(slog.DiscardHandler), Budget: budget,
		Callers: map[string]gateway.Caller{config.DefaultProvider: p},
	})
	// Estimated at 40 tokens: prompt 0, answer bound 40.
	r := llm.Request{Model: "m", MaxTokens: 40}

	tests := []struct {
		owner    string
		wantErr  error
		requests int64 // the provider's, in all
		charged  int64 // the owner's, today
	}{
		{"big", nil, 1, 30},
		{"small", nil, 2, 30},                        // 0 of 50 used; settled to 30
		{"small", nil, 3, 60},                        // 30 of 50 used: still room
		{"small", gateway.ErrBudgetExhausted, 3, 60}, // 60 of 50: used up
		{"anonymous", nil, 4, 30},                    // no budget, counted
		{"", nil, 5, 0},                              // no owner: nothing charged
	}
	for i, tt := range tests {
		cctx := ctx
		if tt.owner != "" {
			cctx = gateway.WithOwner(ctx, tt.owner)
		}
		_, err := g.Complete(cctx, r)
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("call %d (%s): %v, want %v", i, tt.owner, err, tt.wantErr)
		}
		if err != nil && (err.Error() != "the API key's token budget for today is used up" || !errors.Is(err, gateway.ErrBudgetExhausted)) {
			t.Errorf("call %d: error %q", i, err)
		}
		if n := p.requests.Load(); n != tt.requests {
			t.Errorf("call %d: the provider got %d requests, want %d", i, n, tt.requests)
		}
		if tt.owner == "" {
			continue
		}
		u, err := q.Usage(ctx, tt.owner, 0)
		if err != nil {
			t.Fatal(err)
		}
		if u.TokensToday != tt.charged {
			t.Errorf("call %d: %s charged %d, want %d", i, tt.owner, u.TokensToday, tt.charged)
		}
	}

	// A budget that cannot be read fails the call, which is not a refusal.
	_, err := g.Complete(gateway.WithOwner(ctx, "broken"), r)
	if err == nil || errors.Is(err, gateway.ErrBudgetExhausted) {
		t.Errorf("unreadable budget: %v", err)
	}
	// The quota's own refusal is both errors.
	_, err = budget.Reserve(ctx, "small", 40)
	if !errors.Is(err, gateway.ErrBudgetExhausted) || !errors.Is(err, ErrBudgetExhausted) {
		t.Errorf("Reserve's refusal: %v", err)
	}
}
