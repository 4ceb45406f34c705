package quota

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

// ownRedis returns a client of a redis-server of the test's own: INFO
// commandstats counts every database of a server, so the tests' shared
// server would count other tests' commands too.
func ownRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv, err := redisproc.Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// notCounted are the commands of the measurement itself and of the
// client's connection setup.
var notCounted = map[string]bool{"config": true, "info": true, "hello": true, "client": true, "select": true, "ping": true, "auth": true}

// commandsOf returns the commands Redis ran during f, those run by scripts
// included (as INFO commandstats counts them), by name.
func commandsOf(t *testing.T, c *redis.Client, f func()) (int64, map[string]int64) {
	t.Helper()
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	f()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	by := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isStat := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isStat || notCounted[strings.SplitN(name, "|", 2)[0]] {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		by[name] += n
		total += n
	}
	return total, by
}

// TestTokensCommandCost bounds the Redis commands (scripts' included) that
// a reservation and a settlement cost, so that a change that makes them
// dearer shows.
func TestTokensCommandCost(t *testing.T) {
	t.Parallel()
	c := ownRedis(t)
	ctx := context.Background()
	for _, s := range []*redis.Script{reserveScript, settleScript} {
		if err := s.Load(ctx, c).Err(); err != nil {
			t.Fatal(err)
		}
	}
	q := New(c)
	q.now = (&clock{t: start}).now
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
			n, by := commandsOf(t, c, func() { tt.call(owner, r) })
			t.Logf("%d commands %v", n, by)
			if n > tt.max {
				t.Errorf("%d commands %v, want at most %d", n, by, tt.max)
			}
		})
	}
}
