package limit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// The line decides who gets a slot: free slots go to the waiters in the
// order of their scores, a newcomer never takes one owed to a waiter ahead,
// a waiter that stopped renewing its place loses it, and the reserve is
// for urgent calls only.
func TestSemaphoreLine(t *testing.T) {
	t.Parallel()
	base := time.Now().Add(time.Minute)
	live, dead := 1e15, 1.0 // ticket expiries: far ahead, long past
	type waiter struct {
		due    time.Duration // from base
		urgent bool
		alive  float64
	}
	tests := []struct {
		name     string
		capacity int
		reserved int
		held     int
		line     []waiter
		order    Order
		granted  bool
		ahead    int // when refused
	}{
		{"room, nobody waiting", 2, 0, 1, nil, Order{Due: base}, true, 0},
		{"room, but a waiter ahead is owed it", 2, 0, 1, []waiter{{0, false, live}}, Order{Due: base.Add(time.Second)}, false, 1},
		{"room for the waiter ahead and this one", 3, 0, 1, []waiter{{0, false, live}}, Order{Due: base.Add(time.Second)}, true, 0},
		{"ahead of every waiter", 2, 0, 1, []waiter{{time.Second, false, live}}, Order{Due: base}, true, 0},
		{"same due time as the waiter: served together", 2, 0, 1, []waiter{{0, false, live}}, Order{Due: base}, true, 0},
		{"the waiter ahead died", 2, 0, 1, []waiter{{0, false, dead}}, Order{Due: base.Add(time.Second)}, true, 0},
		{"urgent goes first", 2, 0, 1, []waiter{{0, false, live}}, Order{Due: base.Add(time.Hour), Urgent: true}, true, 0},
		{"behind an urgent waiter", 2, 0, 1, []waiter{{time.Hour, true, live}}, Order{Due: base}, false, 1},
		{"the reserve is not for calls that are not urgent", 2, 1, 1, nil, Order{Due: base}, false, 0},
		{"the reserve is for urgent calls", 2, 1, 1, nil, Order{Due: base, Urgent: true}, true, 0},
		{"full", 1, 0, 1, nil, Order{Due: base, Urgent: true}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			ctx := context.Background()
			sem := NewSemaphore(db.Client, "line", tt.capacity, SemaphoreOptions{TTL: time.Hour, Reserved: tt.reserved})
			for i := range tt.held {
				if err := db.Client.ZAdd(ctx, sem.keys[0], redis.Z{Score: 1e15, Member: fmt.Sprint("lease", i)}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for i, w := range tt.line {
				id := fmt.Sprint("waiter", i)
				score := Order{Due: base.Add(w.due), Urgent: w.urgent}.score(time.Now())
				if err := db.Client.ZAdd(ctx, sem.keys[1], redis.Z{Score: score, Member: id}).Err(); err != nil {
					t.Fatal(err)
				}
				if err := db.Client.ZAdd(ctx, sem.keys[2], redis.Z{Score: w.alive, Member: id}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			r, err := sem.try(ctx, "me", tt.order, time.Now(), ticketTTL)
			if err != nil {
				t.Fatal(err)
			}
			if r.granted != tt.granted {
				t.Fatalf("granted %t, want %t (%+v)", r.granted, tt.granted, r)
			}
			inLine := db.Client.ZScore(ctx, sem.keys[1], "me").Err() == nil
			if r.granted {
				if inLine {
					t.Error("granted, but still in the line")
				}
				return
			}
			if r.ahead != tt.ahead {
				t.Errorf("%d ahead, want %d", r.ahead, tt.ahead)
			}
			if !inLine {
				t.Error("refused, but not in the line")
			}
			// A try that does not wait never joins the line.
			if _, err := sem.try(ctx, "passer-by", tt.order, time.Now(), 0); err != nil {
				t.Fatal(err)
			}
			if db.Client.ZScore(ctx, sem.keys[1], "passer-by").Err() == nil {
				t.Error("a try that does not wait joined the line")
			}
		})
	}
}

// Waiters that join the line in any order are served in the order of
// their due times, urgent ones first, one slot at a time, across
// processes; and the line is empty once they are served.
func TestSemaphoreServesTheLineInOrder(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	const n = 12
	holder := NewSemaphore(db.Client, "fifo", 1, SemaphoreOptions{})
	l, err := holder.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(time.Minute)
	// Waiter i is due at base + i s; the last one is urgent.
	orderOf := func(i int) Order {
		return Order{Due: base.Add(time.Duration(i) * time.Second), Urgent: i == n-1}
	}
	var (
		mu     sync.Mutex
		served []int
		wg     sync.WaitGroup
	)
	// A waiter joins the line with a script of its client's.
	joined := redistest.NewScriptWatch()
	for _, i := range rand.Perm(n) {
		// Each waiter is a "process" of its own: its client and hub.
		rdb := db.NewClient(t)
		rdb.AddHook(joined)
		sem := NewSemaphore(rdb, "fifo", 1, SemaphoreOptions{Wake: runHub(t, rdb)})
		wg.Go(func() {
			l, err := sem.Acquire(WithOrder(ctx, orderOf(i)), time.Minute)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			mu.Lock()
			served = append(served, i)
			mu.Unlock()
			if err := l.Release(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	joined.Until(t, time.Minute, fmt.Sprintf("%d waiters in the line", n), func() bool {
		return db.Client.ZCard(ctx, holder.keys[1]).Val() >= n
	})
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	want := []int{n - 1}
	for i := range n - 1 {
		want = append(want, i)
	}
	if fmt.Sprint(served) != fmt.Sprint(want) {
		t.Errorf("served %v, want %v", served, want)
	}
	if k := db.Client.ZCard(ctx, holder.keys[1]).Val() + db.Client.ZCard(ctx, holder.keys[2]).Val(); k != 0 {
		t.Errorf("%d entries left in the line", k)
	}
}

// A waiter that gives up (its wait ran out, or its context ended) leaves
// the line at once, so that nobody waits behind it.
func TestSemaphoreGivingUpLeavesTheLine(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	sem := NewSemaphore(db.Client, "quit", 1, SemaphoreOptions{})
	l, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	if _, err := sem.Acquire(ctx, 50*time.Millisecond); !errors.Is(err, ErrFull) {
		t.Fatalf("Acquire = %v, want ErrFull", err)
	}
	if k := db.Client.ZCard(ctx, sem.keys[1]).Val(); k != 0 {
		t.Errorf("%d waiters in the line after giving up", k)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := sem.Acquire(cctx, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want the context's error", err)
	}
	if k := db.Client.ZCard(ctx, sem.keys[1]).Val(); k != 0 {
		t.Errorf("%d waiters in the line after the context ended", k)
	}
}
