package limit

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func runHub(t *testing.T, rdb *redis.Client) *events.Hub {
	t.Helper()
	hub := events.NewHub(rdb, ReleasedChannel, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return hub
}

func TestSemaphoreCapNeverExceeded(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	const capacity, procs, workers, rounds = 3, 2, 8, 6
	var inFlight, peak atomic.Int64
	var granted atomic.Int64
	var wg sync.WaitGroup
	for p := range procs {
		// Each "process" has its own client, hub and semaphore value.
		rdb := db.NewClient(t)
		sem := NewSemaphore(rdb, "sim", capacity, SemaphoreOptions{Wake: runHub(t, rdb)})
		for w := range workers {
			wg.Go(func() {
				for r := range rounds {
					l, err := sem.Acquire(context.Background(), 10*time.Second)
					if err != nil {
						t.Errorf("proc %d worker %d round %d: %v", p, w, r, err)
						return
					}
					granted.Add(1)
					n := inFlight.Add(1)
					for {
						old := peak.Load()
						if n <= old || peak.CompareAndSwap(old, n) {
							break
						}
					}
					if held, err := sem.Held(context.Background()); err != nil || held > capacity {
						t.Errorf("Redis holds %d leases (%v), cap %d", held, err, capacity)
					}
					time.Sleep(2 * time.Millisecond) // the "request"
					inFlight.Add(-1)
					if err := l.Release(context.Background()); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	if got := granted.Load(); got != procs*workers*rounds {
		t.Errorf("%d leases granted, want %d", got, procs*workers*rounds)
	}
	if p := peak.Load(); p > capacity || p < 2 {
		t.Errorf("peak in flight %d, want between 2 and the cap %d", p, capacity)
	}
	if held, _ := NewSemaphore(db.Client, "sim", capacity, SemaphoreOptions{}).Held(context.Background()); held != 0 {
		t.Errorf("%d leases left after every release", held)
	}
}

func TestSemaphoreExpiredLeaseIsReclaimed(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ttl := 300 * time.Millisecond
	sem := NewSemaphore(db.Client, "crashy", 1, SemaphoreOptions{TTL: ttl})
	l, err := sem.TryAcquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The holder "crashes": its renewal stops and it never releases.
	close(l.stop)
	<-l.done
	if _, err := sem.TryAcquire(context.Background()); !errors.Is(err, ErrFull) {
		t.Fatalf("second TryAcquire = %v, want ErrFull while the lease lives", err)
	}
	start := time.Now()
	l2, err := sem.Acquire(context.Background(), 5*time.Second)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	defer l2.Release(context.Background())
	if d := time.Since(start); d > ttl+time.Second {
		t.Errorf("the slot came back after %s, want about the TTL %s", d, ttl)
	}
}

func TestSemaphoreRenewalKeepsTheLease(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ttl := 300 * time.Millisecond
	sem := NewSemaphore(db.Client, "long", 1, SemaphoreOptions{TTL: ttl})
	l, err := sem.TryAcquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Three TTLs later the renewed lease still holds the only slot.
	if _, err := sem.Acquire(context.Background(), 3*ttl); !errors.Is(err, ErrFull) {
		t.Fatalf("Acquire while a renewed lease holds the slot = %v, want ErrFull", err)
	}
	if l.Lost() {
		t.Error("the lease was lost despite renewal")
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Errorf("second Release: %v", err)
	}
	l2, err := sem.TryAcquire(context.Background())
	if err != nil {
		t.Fatalf("TryAcquire after Release: %v", err)
	}
	l2.Release(context.Background())
}

func TestSemaphoreReleaseWakesWaiter(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	hub := runHub(t, db.Client)
	// Wait until the hub has subscribed: a release published before would
	// only be seen at the next poll.
	waitSubscribed(t, db.Client)
	sem := NewSemaphore(db.Client, "wake", 1, SemaphoreOptions{Wake: hub})
	l, err := sem.TryAcquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	calls := &redistest.ScriptCounter{}
	waiterRDB := db.NewClient(t)
	waiterRDB.AddHook(calls)
	waiter := NewSemaphore(waiterRDB, "wake", 1, SemaphoreOptions{Wake: hub})
	got := make(chan error, 1)
	var acquiredAt time.Time
	go func() {
		l2, err := waiter.Acquire(context.Background(), 10*time.Second)
		acquiredAt = time.Now()
		if err == nil {
			err = l2.Release(context.Background())
		}
		got <- err
	}()
	// Let the waiter find the slot taken and go to sleep on its backoff,
	// which has grown to its maximum by then.
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the waiter's progress, bounded
	}
	releasedAt := time.Now()
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if d := acquiredAt.Sub(releasedAt); d > 150*time.Millisecond {
		t.Errorf("the waiter got the slot %s after the release; want a prompt wake-up", d)
	}
}

func waitSubscribed(t *testing.T, rdb *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := rdb.PubSubNumSub(context.Background(), ReleasedChannel).Result()
		if err == nil && n[ReleasedChannel] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSemaphoreWaitIsBoundedAndDoesNotSpin(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	sem := NewSemaphore(db.Client, "busy", 1, SemaphoreOptions{})
	l, err := sem.TryAcquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	calls := &redistest.ScriptCounter{}
	rdb := db.NewClient(t)
	rdb.AddHook(calls)
	waiter := NewSemaphore(rdb, "busy", 1, SemaphoreOptions{})
	start := time.Now()
	_, err = waiter.Acquire(context.Background(), time.Second)
	d := time.Since(start)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Acquire = %v, want ErrFull", err)
	}
	if d < time.Second || d > 1500*time.Millisecond {
		t.Errorf("Acquire gave up after %s, want about 1s", d)
	}
	// Backoff 10 ms doubling to 250 ms: about ten tries in a second.
	if n := calls.Load(); n < 3 || n > 20 {
		t.Errorf("%d tries in 1s of waiting; want a backoff, not a spin", n)
	}

	// A cancelled wait ends at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := waiter.Acquire(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v", err)
	}
}

func TestRate(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	if r := NewRate(db.Client, "none", 0); r != nil {
		t.Fatal("a zero limit is not nil")
	}
	var none *Rate
	if ok, _, err := none.Take(ctx, 1e9); !ok || err != nil {
		t.Errorf("no limit refused: %v", err)
	}
	r := NewRate(db.Client, "rpm", 60) // one per second, a minute's worth at once
	for i := range 60 {
		if ok, _, err := r.Take(ctx, 1); !ok || err != nil {
			t.Fatalf("take %d of the burst refused (%v)", i, err)
		}
	}
	ok, wait, err := r.Take(ctx, 1)
	if ok || err != nil || wait <= 0 || wait > time.Second {
		t.Fatalf("take past the budget = %v, %s, %v; want refused with a wait up to 1s", ok, wait, err)
	}
	// Giving units back makes room again.
	if err := r.Adjust(ctx, -5); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if ok, _, err := r.Take(ctx, 1); !ok || err != nil {
			t.Fatalf("take %d after a refund of 5 refused (%v)", i, err)
		}
	}
	if ok, _, _ := r.Take(ctx, 1); ok {
		t.Error("more than refunded was taken")
	}

	tpm := NewRate(db.Client, "tpm", 1000)
	// A request bigger than the whole budget is clamped, not refused forever.
	if ok, _, err := tpm.Take(ctx, 5000); !ok || err != nil {
		t.Fatalf("an oversized take on a full budget = %v, %v", ok, err)
	}
	ok, wait, _ = tpm.Take(ctx, 100)
	if ok || wait < 5*time.Second || wait > 7*time.Second {
		t.Errorf("take of 100 on an empty 1000/min budget = %v, wait %s; want about 6s", ok, wait)
	}
	// Usage below the estimate is given back.
	if err := tpm.Adjust(ctx, -500); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := tpm.Take(ctx, 400); !ok {
		t.Error("take of 400 after a refund of 500 refused")
	}
	// More usage than estimated is spent as far as the budget goes.
	if err := tpm.Adjust(ctx, 10_000); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := tpm.Take(ctx, 1); ok {
		t.Error("the budget has room after an adjustment past it")
	}
}

func TestGate(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()

	t.Run("in-flight cap", func(t *testing.T) {
		g := NewGate(db.Client, "g1", Limits{MaxInFlight: 2}, SemaphoreOptions{})
		p1, err := g.Enter(ctx, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := g.Enter(ctx, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Enter(ctx, 10, 50*time.Millisecond)
		var nc *NoCapacityError
		if !errors.As(err, &nc) || !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "in-flight cap of 2") {
			t.Fatalf("third Enter = %v, want no capacity naming the cap", err)
		}
		p1.Leave(-1)
		p1.Leave(-1)
		p3, err := g.Enter(ctx, 10, 0)
		if err != nil {
			t.Fatalf("Enter after a Leave: %v", err)
		}
		p2.Leave(5)
		p3.Leave(5)
	})

	t.Run("requests per minute", func(t *testing.T) {
		g := NewGate(db.Client, "g2", Limits{MaxInFlight: 10, RPM: 2}, SemaphoreOptions{})
		for range 2 {
			p, err := g.Enter(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			p.Leave(-1)
		}
		_, err := g.Enter(ctx, 0, 100*time.Millisecond)
		var nc *NoCapacityError
		if !errors.As(err, &nc) || nc.Limit != "2 requests per minute" || nc.RetryAfter < 20*time.Second {
			t.Fatalf("Enter past the RPM = %v (%+v); want refused with a wait of about 30s", err, nc)
		}
	})

	t.Run("tokens per minute, reconciled", func(t *testing.T) {
		g := NewGate(db.Client, "g3", Limits{MaxInFlight: 10, TPM: 1000}, SemaphoreOptions{})
		p, err := g.Enter(ctx, 900, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Enter(ctx, 900, 0)
		var nc *NoCapacityError
		if !errors.As(err, &nc) || nc.Limit != "1000 tokens per minute" {
			t.Fatalf("Enter past the TPM = %v", err)
		}
		// The request used 100 tokens, not the 900 estimated.
		p.Leave(100)
		p2, err := g.Enter(ctx, 800, 0)
		if err != nil {
			t.Fatalf("Enter after the usage was reconciled: %v", err)
		}
		p2.Leave(-1)
		// A refused Enter spent nothing: its request is given back.
		if held, _ := g.Semaphore().Held(ctx); held != 0 {
			t.Errorf("%d slots held after every Leave", held)
		}
	})
}
