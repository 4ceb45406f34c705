package breaker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

// TestBreakerCommandCost bounds the Redis commands (scripts' included)
// that an admission and an outcome cost, so that a change that makes them
// dearer shows. The steps run in order on one breaker.
func TestBreakerCommandCost(t *testing.T) {
	t.Parallel()
	c := redistest.Own(t, allowScript, recordScript)
	ctx := context.Background()
	clk := testclock.New(epoch)
	set := NewSet(NewStore(c, KeyPrefix), Settings{Now: clk.Now, Failures: 2, MinRequests: 2, Ramp: -1})
	b, _ := set.Get("p/m")
	var done []func(error)
	admit := func(t *testing.T) {
		d, err := b.Allow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, d)
	}
	outcome := func(err error) func(t *testing.T) {
		return func(*testing.T) {
			done[0](err)
			done = done[1:]
		}
	}
	refused := func(t *testing.T) {
		if _, err := b.Allow(ctx); !errors.Is(err, ErrOpen) {
			t.Fatalf("Allow = %v, want ErrOpen", err)
		}
	}
	nothing := func(*testing.T) {}
	tests := []struct {
		name  string
		setup func(t *testing.T)
		call  func(t *testing.T)
		max   int64
	}{
		{"allow: new breaker", nothing, admit, 4},
		{"allow: closed, expiry renewed in this bucket", nothing, admit, 3},
		{"allow: closed, next bucket", func(*testing.T) { clk.Advance(time.Second) }, admit, 4},
		{"success", nothing, outcome(nil), 0},
		{"failure", nothing, outcome(errServer), 3},
		{"failure that opens", admit, outcome(errServer), 5},
		{"allow: open", nothing, refused, 2},
	}
	for _, tt := range tests {
		// Not parallel: the steps share the breaker, and the server's
		// counts are shared by its clients.
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			n, by := redistest.CommandsOf(t, c, func() { tt.call(t) })
			t.Logf("%d commands %v", n, by)
			if n > tt.max {
				t.Errorf("%d commands %v, want at most %d", n, by, tt.max)
			}
		})
	}
	if st, err := b.State(); err != nil || st != StateOpen {
		t.Errorf("state %v (%v), want open", st, err)
	}
}

// The hash's expiry is renewed by transitions, and by other writes at most
// once a bucket width: it lives at most the hash TTL after its last write,
// and at least that less a width.
func TestBreakerExpiryRenewal(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	clk := testclock.New(epoch)
	set := NewSet(NewStore(db.Client, KeyPrefix), Settings{Now: clk.Now, Failures: 1, MinRequests: 1, FailureRatio: 0.1, Ramp: -1})
	b, _ := set.Get("p/m")
	key := set.store.key("p/m")
	steps := []struct {
		name    string
		advance time.Duration
		outcome error // of the request admitted
		renewed bool
	}{
		{"first admission", 0, nil, true},
		{"within the width", 400 * time.Millisecond, nil, false},
		{"still within it", 500 * time.Millisecond, nil, false},
		{"a width after the renewal", 100 * time.Millisecond, nil, true},
		{"a failure opens it (a transition)", 10 * time.Millisecond, errServer, true},
	}
	for _, st := range steps {
		// Shrink the TTL so that a renewal shows in it.
		if err := db.Client.PExpire(ctx, key, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(st.advance)
		done, err := b.Allow(ctx)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		done(st.outcome)
		ttl := db.Client.PTTL(ctx, key).Val()
		if renewed := ttl > time.Minute; renewed != st.renewed || ttl > set.keyTTL {
			t.Errorf("%s: expires in %s, want renewed %t (to %s)", st.name, ttl, st.renewed, set.keyTTL)
		}
		pe, _ := db.Client.HGet(ctx, key, "pe").Int64()
		if st.renewed && pe != clk.Now().UnixMilli() {
			t.Errorf("%s: renewal noted at %d, want %d", st.name, pe, clk.Now().UnixMilli())
		}
	}
	if s, err := b.State(); err != nil || s != StateOpen {
		t.Errorf("state %v (%v), want open", s, err)
	}
}
