package quota

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

// TestTokensCommandCost bounds the Redis commands (scripts' included) that
// a reservation and a settlement cost, so that a change that makes them
// dearer shows.
func TestTokensCommandCost(t *testing.T) {
	t.Parallel()
	c := redistest.Own(t, reserveScript, settleScript)
	ctx := context.Background()
	q := New(c)
	q.now = testclock.New(start).Now
	reserve := func(owner string, budget int64, tokens int) *Reservation {
		t.Helper()
		r, err := q.ReserveTokens(ctx, owner, budget, tokens)
		if err != nil && !strings.Contains(err.Error(), "exhausted") {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name string
		// setup runs unmeasured and returns the reservation to settle, if any.
		setup func(owner string) *Reservation
		call  func(owner string, r *Reservation)
		max   int64
	}{
		{"reserve: new counter", func(string) *Reservation { return nil },
			func(o string, _ *Reservation) { reserve(o, 0, 100) }, 4},
		{"reserve: no budget", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(o string, _ *Reservation) { reserve(o, 0, 100) }, 2},
		{"reserve: within the budget", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(o string, _ *Reservation) { reserve(o, 1000, 100) }, 2},
		{"reserve: refused", func(o string) *Reservation { return reserve(o, 0, 1000) },
			func(o string, _ *Reservation) { reserve(o, 1000, 100) }, 3},
		{"settle: less than reserved", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(_ string, r *Reservation) { _ = r.Settle(ctx, 40) }, 2},
		{"settle: more than reserved", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(_ string, r *Reservation) { _ = r.Settle(ctx, 140) }, 2},
		{"settle: as reserved", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(_ string, r *Reservation) { _ = r.Settle(ctx, 100) }, 0},
		{"settle: use unknown", func(o string) *Reservation { return reserve(o, 0, 100) },
			func(_ string, r *Reservation) { _ = r.Settle(ctx, -1) }, 0},
	}
	for i, tt := range tests {
		// Not parallel: the server's counts are shared by its clients.
		t.Run(tt.name, func(t *testing.T) {
			owner := "o" + strconv.Itoa(i)
			r := tt.setup(owner)
			n, by := redistest.CommandsOf(t, c, func() { tt.call(owner, r) })
			t.Logf("%d commands %v", n, by)
			if n > tt.max {
				t.Errorf("%d commands %v, want at most %d", n, by, tt.max)
			}
		})
	}
}
