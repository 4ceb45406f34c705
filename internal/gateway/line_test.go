package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestUrgentReserved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		maxInFlight int
		share       float64
		want        int
	}{
		{64, 0.25, 16},
		{64, 0, 0},
		{64, -1, 0},
		{10, 0.15, 1},
		{3, 0.1, 0}, // rounded down
		{1, 0.5, 0}, // never the whole cap
		{2, 0.5, 1},
	}
	for _, tt := range tests {
		if got := UrgentReserved(tt.maxInFlight, tt.share); got != tt.want {
			t.Errorf("UrgentReserved(%d, %g) = %d, want %d", tt.maxInFlight, tt.share, got, tt.want)
		}
	}
}

// The provider's line through the gateway: an urgent call (an
// aggregation) waiting behind a member call gets the slot first, and a
// wait that would leave no time for a request before the caller's
// deadline ends as a lack of capacity, not as the caller's timeout.
func TestCapacityLine(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	cfg := testConfig(&sim{url: "http://127.0.0.1:1"})
	cfg.MaxInFlight = 1
	cfg.CapacityWait = time.Minute
	f := newFakeProvider(answer{block: true, err: context.Canceled}, answer{text: "member"}, answer{text: "aggregation"})
	p := testPolicy
	// The gateway's calls join the line with scripts of its client's.
	scripts := redistest.NewScriptWatch()
	gc := db.NewClient(t)
	gc.AddHook(scripts)
	g := New(cfg, Options{
		Redis: gc, Policy: &p, Log: slog.New(slog.DiscardHandler),
		Callers: map[string]Caller{config.DefaultProvider: f},
	})
	model := uniqueModel("line")
	ctx := context.Background()

	// The blocker holds the only slot until it is cancelled.
	blockCtx, unblock := context.WithCancel(ctx)
	blocked := make(chan error, 1)
	go func() {
		_, err := g.Complete(blockCtx, llm.Request{Model: model, User: "blocker"})
		blocked <- err
	}()
	<-f.entered

	// No time for a request: a lack of capacity, before the deadline.
	short, cancel := context.WithTimeout(ctx, minAttemptTime+deadlineMargin+300*time.Millisecond)
	defer cancel()
	if _, err := g.Complete(short, llm.Request{Model: model, User: "late"}); !errors.Is(err, llm.ErrNoCapacity) || short.Err() != nil {
		t.Fatalf("a wait past the last useful moment = %v (context %v), want llm.ErrNoCapacity before the deadline", err, short.Err())
	}

	line := "tt:limit:{" + config.DefaultProvider + "}:line"
	inLine := func(n int64) {
		t.Helper()
		scripts.Until(t, time.Minute, fmt.Sprintf("%d waiters in the line", n), func() bool {
			return db.Client.ZCard(ctx, line).Val() >= n
		})
	}
	due := time.Now().Add(time.Minute)
	memberDone := make(chan error, 1)
	go func() {
		_, err := g.Complete(limit.WithOrder(ctx, limit.Order{Due: due}), llm.Request{Model: model, User: "member"})
		memberDone <- err
	}()
	inLine(1)
	urgentDone := make(chan error, 1)
	go func() {
		_, err := g.Complete(limit.WithOrder(ctx, limit.Order{Due: due.Add(time.Minute), Urgent: true}), llm.Request{Model: model, User: "aggregation"})
		urgentDone <- err
	}()
	inLine(2)
	unblock()
	<-blocked
	if r := <-f.entered; r.User != "aggregation" {
		t.Errorf("the slot went to %q first, want the urgent call", r.User)
	}
	if r := <-f.entered; r.User != "member" {
		t.Errorf("then %q, want the member call", r.User)
	}
	for _, ch := range []chan error{urgentDone, memberDone} {
		if err := <-ch; err != nil {
			t.Error(err)
		}
	}
}
