package limit

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// TestSemaphoreCommandCost bounds the Redis commands (scripts' included)
// that taking and freeing a lease cost, so that a change that makes them
// dearer shows.
func TestSemaphoreCommandCost(t *testing.T) {
	t.Parallel()
	c := redistest.Own(t, acquireScript, renewScript)
	ctx := context.Background()
	// A TTL far longer than the test: no renewal runs while it measures.
	const capacity = 2
	sem := NewSemaphore(c, "cost", capacity, SemaphoreOptions{TTL: time.Hour})
	var held []*Lease
	t.Cleanup(func() {
		for _, l := range held {
			_ = l.Release(ctx)
		}
	})
	acquire := func(t *testing.T, wantFull bool) {
		l, err := sem.TryAcquire(ctx)
		if wantFull != errors.Is(err, ErrFull) || (!wantFull && err != nil) {
			t.Fatalf("TryAcquire = %v, want full %t", err, wantFull)
		}
		if l != nil {
			held = append(held, l)
		}
	}
	// expire makes every lease held expired, as if their holders died.
	expire := func(t *testing.T) {
		for _, l := range held {
			close(l.stop)
			<-l.done
			if err := c.ZAdd(ctx, sem.leaseKey(), redis.Z{Score: 1, Member: l.id}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		held = nil
	}
	tests := []struct {
		name  string
		setup func(t *testing.T)
		call  func(t *testing.T)
		max   int64
	}{
		{"acquire: room", func(*testing.T) {}, func(t *testing.T) { acquire(t, false) }, 6},
		{"acquire: full", func(t *testing.T) { acquire(t, false) }, func(t *testing.T) { acquire(t, true) }, 5},
		{"acquire: full of expired leases", expire, func(t *testing.T) { acquire(t, false) }, 7},
		{"release", func(*testing.T) {}, func(t *testing.T) {
			l := held[len(held)-1]
			held = held[:len(held)-1]
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"renew", func(t *testing.T) {
			acquire(t, false)
			// A renewal within the millisecond of the lease's last write
			// changes nothing and costs a ZSCORE more (6); a lease renewed
			// every third of its TTL is always older than that.
			if err := c.ZIncrBy(ctx, sem.leaseKey(), -1, held[0].id).Err(); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			ok, err := renewScript.Run(ctx, c, []string{sem.leaseKey()}, sem.ttl.Milliseconds(), held[0].id).Int()
			if err != nil || ok != 1 {
				t.Fatalf("renew = %d, %v; want 1", ok, err)
			}
		}, 5},
	}
	for _, tt := range tests {
		// Not parallel: the server's counts are shared by its clients.
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			n, by := redistest.CommandsOf(t, c, func() { tt.call(t) })
			t.Logf("%d commands %v", n, by)
			if n > tt.max {
				t.Errorf("%d commands %v, want at most %d", n, by, tt.max)
			}
		})
	}
}

// Expired leases are dropped only when the set is full; the decision is
// always the one the live leases call for.
func TestSemaphoreExpiredLeases(t *testing.T) {
	t.Parallel()
	const expired, live = 1, 1e15 // scores: long past, far ahead
	tests := []struct {
		name      string
		leases    []float64 // the set's scores before
		admitted  bool
		members   int64 // in the set after
		heldAfter int
	}{
		{"room: an expired lease stays", []float64{expired}, true, 2, 1},
		{"full of expired leases: dropped", []float64{expired, expired}, true, 1, 1},
		{"full with an expired lease: dropped", []float64{expired, live}, true, 2, 2},
		{"full of live leases: refused", []float64{live, live}, false, 2, 2},
		{"empty", nil, true, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			ctx := context.Background()
			sem := NewSemaphore(db.Client, "x", 2, SemaphoreOptions{TTL: time.Hour})
			for i, s := range tt.leases {
				if err := db.Client.ZAdd(ctx, sem.leaseKey(), redis.Z{Score: s, Member: "old" + strconv.Itoa(i)}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			l, err := sem.TryAcquire(ctx)
			if tt.admitted != (err == nil) || (!tt.admitted && !errors.Is(err, ErrFull)) {
				t.Fatalf("TryAcquire = %v, want admitted %t", err, tt.admitted)
			}
			if l != nil {
				// Stop the renewal; the lease stays in the set.
				close(l.stop)
				<-l.done
			}
			if n := db.Client.ZCard(ctx, sem.leaseKey()).Val(); n != tt.members {
				t.Errorf("%d members, want %d", n, tt.members)
			}
			if n, err := sem.Held(ctx); err != nil || n != tt.heldAfter {
				t.Errorf("Held = %d (%v), want %d", n, err, tt.heldAfter)
			}
			if l != nil {
				if ttl := db.Client.PTTL(ctx, sem.leaseKey()).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
					t.Errorf("set expires in %s, want the lease TTL", ttl)
				}
			}
		})
	}
}

// Renewal extends a lease that is there and never brings one back.
func TestSemaphoreRenewScript(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		score  float64 // of the lease before; 0: not there
		want   int
		member bool // there after
	}{
		{"there", 1e12, 1, true},
		{"expired but not dropped", 1, 1, true},
		{"gone", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			ctx := context.Background()
			key := "tt:limit:{r}:inflight"
			if err := db.Client.ZAdd(ctx, key, redis.Z{Score: 5e14, Member: "other"}).Err(); err != nil {
				t.Fatal(err)
			}
			if tt.score > 0 {
				if err := db.Client.ZAdd(ctx, key, redis.Z{Score: tt.score, Member: "me"}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			got, err := renewScript.Run(ctx, db.Client, []string{key}, time.Minute.Milliseconds(), "me").Int()
			if err != nil || got != tt.want {
				t.Fatalf("renew = %d (%v), want %d", got, err, tt.want)
			}
			score, err := db.Client.ZScore(ctx, key, "me").Result()
			if tt.member != (err == nil) {
				t.Fatalf("lease there after: %t (%v), want %t", err == nil, err, tt.member)
			}
			now := db.Client.Time(ctx).Val()
			if tt.member && (score <= float64(now.UnixMilli()) || score > float64(now.Add(time.Minute).UnixMilli())) {
				t.Errorf("lease expires at %v, want a minute from %d", score, now.UnixMilli())
			}
			if ttl := db.Client.PTTL(ctx, key).Val(); tt.member && (ttl <= 59*time.Second || ttl > time.Minute) {
				t.Errorf("set expires in %s, want a minute", ttl)
			}
		})
	}
}
