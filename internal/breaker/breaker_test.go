package breaker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/timetravel-ai/timetravel/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestStoreLock(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	a := NewStore(db.Client, "tt:breaker:")
	b := NewStore(db.NewClient(t), "tt:breaker:")
	b.LockWait = 50 * time.Millisecond
	if err := a.Lock("m"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock("m"); !errors.Is(err, ErrLockBusy) {
		t.Fatalf("second Lock = %v, want ErrLockBusy", err)
	}
	if err := a.Unlock("m"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock("m"); err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if err := b.Unlock("m"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock("m"); err == nil {
		t.Error("Unlock of a lock not held succeeded")
	}

	// A holder whose lock expired does not release the next holder's.
	a.LockTTL = 50 * time.Millisecond
	if err := a.Lock("x"); err != nil {
		t.Fatal(err)
	}
	b.LockWait = 2 * time.Second
	if err := b.Lock("x"); err != nil {
		t.Fatalf("Lock after the holder's lock expired: %v", err)
	}
	if err := a.Unlock("x"); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Client.Get(context.Background(), "tt:breaker:x").Result(); v == "" {
		t.Fatal("the expired holder's Unlock released the new holder's lock")
	}
	if err := b.Unlock("x"); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCompareAndSet(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	a := NewStore(db.Client, "p:")
	b := NewStore(db.NewClient(t), "p:")
	if d, err := a.GetData("s"); d != nil || err != nil {
		t.Fatalf("GetData of nothing = %q, %v", d, err)
	}
	if _, err := b.GetData("s"); err != nil {
		t.Fatal(err)
	}
	if err := a.SetData("s", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	// b read before a wrote: its write would undo a's.
	if err := b.SetData("s", []byte("v1'")); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale SetData = %v, want ErrConflict", err)
	}
	if d, _ := b.GetData("s"); string(d) != "v1" {
		t.Fatalf("GetData = %q, want v1", d)
	}
	if err := b.SetData("s", []byte("v2")); err != nil {
		t.Fatalf("SetData after a fresh read: %v", err)
	}
	if err := b.SetData("s", []byte("v3")); err != nil {
		t.Fatalf("SetData after its own write: %v", err)
	}
	if ttl := db.Client.PTTL(context.Background(), "p:s").Val(); ttl <= 0 || ttl > 24*time.Hour {
		t.Errorf("state TTL %s", ttl)
	}
}

var (
	errServer = errors.New("503")
	errClient = errors.New("400")
	errCancel = errors.New("canceled")
)

func testSettings(failures uint32, openFor time.Duration) Settings {
	return Settings{
		Failures:   failures,
		OpenFor:    openFor,
		TrialTTL:   10 * time.Second,
		IsFailure:  func(err error) bool { return errors.Is(err, errServer) },
		IsExcluded: func(err error) bool { return errors.Is(err, errCancel) },
	}
}

func allow(t *testing.T, b *Breaker) func(error) {
	t.Helper()
	done, err := b.Allow(context.Background())
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return done
}

func wantOpen(t *testing.T, b *Breaker, halfOpen bool) *OpenError {
	t.Helper()
	_, err := b.Allow(context.Background())
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrOpen) || oe.HalfOpen != halfOpen {
		t.Fatalf("Allow = %v, want an OpenError (half-open %v)", err, halfOpen)
	}
	return oe
}

func state(t *testing.T, b *Breaker) gobreaker.State {
	t.Helper()
	st, err := b.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestBreakerLifecycleSharedByTwoProcesses(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	openFor := 300 * time.Millisecond
	var changes []string
	var mu sync.Mutex
	s1 := testSettings(3, openFor)
	s1.OnStateChange = func(name string, from, to gobreaker.State) {
		mu.Lock()
		changes = append(changes, from.String()+"→"+to.String())
		mu.Unlock()
	}
	w1, err := NewSet(NewStore(db.Client, "tt:breaker:"), s1).Get("sim/sim-a")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := NewSet(NewStore(db.NewClient(t), "tt:breaker:"), testSettings(3, openFor)).Get("sim/sim-a")
	if err != nil {
		t.Fatal(err)
	}

	// Client errors count as answers and cancellations not at all; the
	// breaker opens when failures are both at least 3 and at least half of
	// the window's requests (counted from the window's first failure),
	// whichever process reports them.
	allow(t, w1)(errServer)
	for range 4 {
		allow(t, w1)(nil)
	}
	allow(t, w1)(errClient)
	allow(t, w1)(errCancel)
	allow(t, w2)(errServer)
	allow(t, w2)(errServer)
	if st := state(t, w2); st != gobreaker.StateClosed {
		t.Fatalf("state %s after 3 failures in 8 requests, want closed", st)
	}
	allow(t, w2)(errServer)
	if st := state(t, w2); st != gobreaker.StateClosed {
		t.Fatalf("state %s after 4 failures in 9 requests, want closed", st)
	}
	allow(t, w2)(errServer)
	if st := state(t, w1); st != gobreaker.StateOpen {
		t.Fatalf("state %s after 5 failures in 10 requests, want open", st)
	}
	// Both fail fast, saying how long.
	for _, b := range []*Breaker{w1, w2} {
		if oe := wantOpen(t, b, false); oe.RetryAfter <= 0 || oe.RetryAfter > openFor {
			t.Errorf("open error %v: RetryAfter %s", oe, oe.RetryAfter)
		}
	}

	// After openFor, one trial request goes through; the others still wait.
	deadline := time.Now().Add(5 * time.Second)
	var trial func(error)
	for trial == nil {
		done, err := w2.Allow(context.Background())
		switch {
		case err == nil:
			trial = done
		case !errors.Is(err, ErrOpen):
			t.Fatal(err)
		case time.Now().After(deadline):
			t.Fatal("the breaker never half-opened")
		default:
			time.Sleep(20 * time.Millisecond) // waiting for openFor to pass, bounded
		}
	}
	wantOpen(t, w1, true)
	wantOpen(t, w2, true)
	// A failed trial opens it again.
	trial(errServer)
	if st := state(t, w1); st != gobreaker.StateOpen {
		t.Fatalf("state %s after a failed trial, want open", st)
	}
	wantOpen(t, w2, false)

	// The next trial succeeds: closed for everyone.
	deadline = time.Now().Add(5 * time.Second)
	trial = nil
	for trial == nil {
		done, err := w1.Allow(context.Background())
		switch {
		case err == nil:
			trial = done
		case time.Now().After(deadline):
			t.Fatalf("no second trial: %v", err)
		default:
			time.Sleep(20 * time.Millisecond) // waiting for openFor to pass, bounded
		}
	}
	trial(nil)
	trial(errServer) // done counts once
	for _, b := range []*Breaker{w1, w2} {
		if st := state(t, b); st != gobreaker.StateClosed {
			t.Fatalf("state %s after a successful trial, want closed", st)
		}
		allow(t, b)(nil)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) == 0 {
		t.Error("OnStateChange never called")
	}
}

func TestBreakerCancelledTrialFreesTheSlot(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	b, err := NewSet(NewStore(db.Client, "tt:breaker:"), testSettings(1, 100*time.Millisecond)).Get("p/m")
	if err != nil {
		t.Fatal(err)
	}
	allow(t, b)(errServer)
	wantOpen(t, b, false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		done, err := b.Allow(context.Background())
		if err == nil {
			done(errCancel) // excluded: neither closes nor opens it
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never half-opened")
		}
		time.Sleep(20 * time.Millisecond) // waiting for the open time, bounded
	}
	if st := state(t, b); st != gobreaker.StateHalfOpen {
		t.Fatalf("state %s after a cancelled trial, want half-open", st)
	}
	allow(t, b)(nil) // the slot is free for the next trial
	if st := state(t, b); st != gobreaker.StateClosed {
		t.Fatalf("state %s, want closed", st)
	}
}

func TestBreakerCountsEveryConcurrentOutcome(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	const procs, goroutines, each = 2, 8, 10
	var bs []*Breaker
	for p := range procs {
		rdb := db.Client
		if p > 0 {
			rdb = db.NewClient(t)
		}
		b, err := NewSet(NewStore(rdb, "tt:breaker:"), testSettings(1000, time.Minute)).Get("p/m")
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	var wg sync.WaitGroup
	for _, b := range bs {
		for range goroutines {
			wg.Go(func() {
				for range each {
					done, err := b.Allow(context.Background())
					if err != nil {
						t.Error(err)
						return
					}
					done(errServer)
				}
			})
		}
	}
	wg.Wait()
	raw, err := db.Client.Get(context.Background(), "tt:breaker:gobreaker:state:p/m").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var st gobreaker.SharedState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if want := uint32(procs * goroutines * each); st.Counts.ConsecutiveFailures != want {
		t.Errorf("%d consecutive failures recorded, want %d: updates were lost", st.Counts.ConsecutiveFailures, want)
	}
}
