package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func newInflight(t *testing.T) (*Inflight, *redis.Client) {
	t.Helper()
	db := redistest.New(t)
	return NewInflight(db.Client), db.Client
}

func TestClaimFirstWinsSecondJoins(t *testing.T) {
	t.Parallel()
	f, _ := newInflight(t)
	ctx := context.Background()
	before := time.Now()
	h, ok, err := f.Claim(ctx, "fp", "job-1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("first Claim = %+v, %v, %v; want ok", h, ok, err)
	}
	h, ok, err = f.Claim(ctx, "fp", "job-2", time.Minute)
	if err != nil || ok {
		t.Fatalf("second Claim = %+v, %v, %v; want the first holder", h, ok, err)
	}
	if h.JobID != "job-1" {
		t.Errorf("holder %q, want job-1", h.JobID)
	}
	// Since is the first claim's time, to the millisecond.
	if h.Since.Before(before.Truncate(time.Millisecond)) || h.Since.After(time.Now()) {
		t.Errorf("holder since %s, want between %s and now", h.Since, before)
	}
	// Another fingerprint is free.
	if _, ok, err := f.Claim(ctx, "other", "job-2", time.Minute); err != nil || !ok {
		t.Errorf("Claim of another fingerprint = %v, %v; want ok", ok, err)
	}
	// The holder claiming again does not win a second time.
	if h, ok, err := f.Claim(ctx, "fp", "job-1", time.Minute); err != nil || ok || h.JobID != "job-1" {
		t.Errorf("holder's second Claim = %+v, %v, %v; want not ok, itself as holder", h, ok, err)
	}
}

func TestClaimConcurrentOneWinner(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	const n = 50
	// Two "processes": two clients, two registries.
	regs := []*Inflight{NewInflight(db.Client), NewInflight(db.NewClient(t))}
	type result struct {
		id  string
		h   Holder
		ok  bool
		err error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			id := fmt.Sprintf("job-%02d", i)
			h, ok, err := regs[i%2].Claim(context.Background(), "same", id, time.Minute)
			results[i] = result{id, h, ok, err}
		})
	}
	close(start)
	wg.Wait()
	winner := ""
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("%s: %v", r.id, r.err)
		}
		if r.ok {
			if winner != "" {
				t.Fatalf("both %s and %s won the claim", winner, r.id)
			}
			winner = r.id
		}
	}
	if winner == "" {
		t.Fatal("nobody won the claim")
	}
	for _, r := range results {
		if !r.ok && r.h.JobID != winner {
			t.Errorf("%s sees holder %q, want the winner %s", r.id, r.h.JobID, winner)
		}
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	f, rdb := newInflight(t)
	ctx := context.Background()
	key := "tt:inflight:fp"
	if _, ok, err := f.Claim(ctx, "fp", "job-1", time.Minute); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	// Not the holder, nor a job whose id the holder's starts with.
	for _, other := range []string{"job-2", "job-", "job", ""} {
		if err := f.Release(ctx, "fp", other); err != nil {
			t.Fatalf("Release by %q: %v", other, err)
		}
		if h, ok, _ := f.Claim(ctx, "fp", "job-3", time.Minute); ok || h.JobID != "job-1" {
			t.Fatalf("after Release by %q: holder %+v (won: %v), want job-1 still", other, h, ok)
		}
	}
	if err := f.Release(ctx, "fp", "job-1"); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Fatal("the holder's Release left the entry")
	}
	if _, ok, err := f.Claim(ctx, "fp", "job-3", time.Minute); err != nil || !ok {
		t.Fatalf("Claim after Release = %v, %v; want ok", ok, err)
	}
	// Releasing what nobody holds is fine.
	if err := f.Release(ctx, "nothing", "job-1"); err != nil {
		t.Errorf("Release of a free fingerprint: %v", err)
	}
}

func TestReleaseEmptyFingerprintIsNoOp(t *testing.T) {
	t.Parallel()
	f, rdb := newInflight(t)
	ctx := context.Background()
	// An entry under the empty fingerprint (which Release must not touch).
	if _, ok, err := f.Claim(ctx, "", "job-1", time.Minute); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	if err := f.Release(ctx, "", "job-1"); err != nil {
		t.Fatalf("Release(\"\") = %v", err)
	}
	if n := rdb.Exists(ctx, "tt:inflight:").Val(); n != 1 {
		t.Error("Release with an empty fingerprint removed an entry")
	}
}

func TestClaimSetsTTL(t *testing.T) {
	t.Parallel()
	f, rdb := newInflight(t)
	ctx := context.Background()
	tests := []struct {
		fp  string
		ttl time.Duration
	}{
		{"a", time.Minute},
		{"b", 10 * time.Second},
		{"c", 0}, // the least lifetime, not none
	}
	for _, tt := range tests {
		if _, ok, err := f.Claim(ctx, tt.fp, "job-1", tt.ttl); err != nil || !ok {
			t.Fatalf("Claim(%s) = %v, %v", tt.fp, ok, err)
		}
		got := rdb.PTTL(ctx, "tt:inflight:"+tt.fp).Val()
		switch {
		case tt.ttl == 0:
			// 1 ms: gone, or about to be; never an entry without expiry.
			if got == -1 {
				t.Errorf("%s: no expiry", tt.fp)
			}
		case got <= 0 || got > tt.ttl || got < tt.ttl-5*time.Second:
			t.Errorf("%s: PTTL %s, want about %s", tt.fp, got, tt.ttl)
		}
	}
}
