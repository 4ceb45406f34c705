package quota

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// seed puts members with their expiries (offsets from start) in key.
func seed(t *testing.T, rdb *redis.Client, key string, members map[string]time.Duration) {
	t.Helper()
	for m, d := range members {
		if err := rdb.ZAdd(context.Background(), key, redis.Z{Score: float64(start.Add(d).UnixMilli()), Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func members(t *testing.T, rdb *redis.Client, key string) []string {
	t.Helper()
	m, err := rdb.ZRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestAdmitRunning(t *testing.T) {
	t.Parallel()
	const owner = "0123456789abcdef"
	errStore := errors.New("store out of reach")
	tests := []struct {
		name  string
		limit int
		held  map[string]time.Duration // jobs running, by deadline
		// ended answers for the jobs it is asked about (nil: no ended).
		ended   map[string]bool
		endErr  error
		allowed bool
		asked   []string // the jobs ended was asked about
		after   []string // the running jobs afterwards
		// remaining and reset of the decision
		remaining int64
		reset     time.Duration
		wantErr   error
	}{
		{
			name: "below the limit", limit: 2, held: map[string]time.Duration{"a": time.Minute},
			ended: map[string]bool{}, allowed: true, after: []string{"a", "new"}, remaining: 0, reset: time.Minute,
		},
		{
			name: "at the limit, nobody ended", limit: 1, held: map[string]time.Duration{"a": time.Minute},
			allowed: false, after: []string{"a"}, reset: time.Minute,
		},
		{
			name: "at the limit, asked who ended", limit: 2, held: map[string]time.Duration{"a": time.Minute, "b": 2 * time.Minute},
			ended: map[string]bool{"a": false, "b": false}, allowed: false, asked: []string{"a", "b"}, after: []string{"a", "b"}, reset: time.Minute,
		},
		{
			name: "at the limit, one ended without a release", limit: 2, held: map[string]time.Duration{"a": time.Minute, "b": 2 * time.Minute},
			ended: map[string]bool{"a": true, "b": false}, allowed: true, asked: []string{"a", "b"}, after: []string{"b", "new"}, remaining: 0, reset: 2 * time.Minute,
		},
		{
			name: "expired deadlines do not count", limit: 1, held: map[string]time.Duration{"a": -time.Second},
			ended: map[string]bool{}, allowed: true, after: []string{"new"}, remaining: 0, reset: time.Hour,
		},
		{
			name: "a job admitted again is the same job", limit: 1, held: map[string]time.Duration{"new": time.Minute},
			ended: map[string]bool{}, allowed: true, after: []string{"new"}, remaining: 0, reset: time.Hour,
		},
		{
			name: "no limit still records", limit: 0, held: map[string]time.Duration{"a": time.Minute, "b": time.Minute},
			ended: map[string]bool{}, allowed: true, after: []string{"a", "b", "new"},
		},
		{
			name: "ended's error", limit: 1, held: map[string]time.Duration{"a": time.Minute},
			ended: map[string]bool{}, endErr: errStore, asked: []string{"a"}, after: []string{"a"}, wantErr: errStore,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, db := newQuota(t, start)
			seed(t, db.Client, runningKey(owner), tt.held)
			var asked []string
			var ended func(context.Context, []string) ([]bool, error)
			if tt.ended != nil {
				ended = func(_ context.Context, ids []string) ([]bool, error) {
					asked = append(asked, ids...)
					out := make([]bool, len(ids))
					for i, id := range ids {
						out[i] = tt.ended[id]
					}
					return out, tt.endErr
				}
			}
			d, err := q.AdmitRunning(context.Background(), owner, "new", tt.limit, start.Add(time.Hour), ended)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			slices.Sort(asked)
			if !slices.Equal(asked, tt.asked) {
				t.Errorf("ended asked about %v, want %v", asked, tt.asked)
			}
			if got := members(t, db.Client, runningKey(owner)); !slices.Equal(got, tt.after) {
				t.Errorf("running %v, want %v", got, tt.after)
			}
			if err != nil {
				return
			}
			want := Decision{Allowed: tt.allowed, Limit: LimitRunning, Quota: int64(tt.limit), Remaining: tt.remaining, Reset: tt.reset}
			if tt.limit <= 0 {
				want = Decision{Allowed: true, Limit: LimitRunning}
			}
			if !tt.allowed {
				want.RetryAfter = tt.reset
			}
			if d != want {
				t.Errorf("decision %+v, want %+v", d, want)
			}
		})
	}
}

func TestRunningSetExpiresWithItsLastJob(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	if _, err := q.AdmitRunning(ctx, "k", "a", 3, start.Add(10*time.Minute), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.AdmitRunning(ctx, "k", "b", 3, start.Add(time.Minute), nil); err != nil {
		t.Fatal(err)
	}
	ttl, err := db.Client.PTTL(ctx, runningKey("k")).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Measured on the server's clock, which has moved on a little.
	if ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Errorf("the set lives %s, want 10m (until its last job's deadline)", ttl)
	}
}

func TestReleaseRunning(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if d, err := q.AdmitRunning(ctx, "k", id, 3, start.Add(time.Hour), nil); err != nil || !d.Allowed {
			t.Fatalf("admit %s: %+v, %v", id, d, err)
		}
	}
	if d, _ := q.AdmitRunning(ctx, "k", "d", 3, start.Add(time.Hour), nil); d.Allowed {
		t.Fatal("a fourth job admitted under a limit of 3")
	}
	if err := q.ReleaseRunning(ctx, "k", "a", "b", "unknown"); err != nil {
		t.Fatal(err)
	}
	if err := q.ReleaseRunning(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if d, err := q.AdmitRunning(ctx, "k", "d", 3, start.Add(time.Hour), nil); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("after releasing two: %+v, %v", d, err)
	}
	if got := members(t, db.Client, runningKey("k")); !slices.Equal(got, []string{"c", "d"}) {
		t.Errorf("running %v", got)
	}
}

func TestAdmitStored(t *testing.T) {
	t.Parallel()
	const owner = "0123456789abcdef"
	tests := []struct {
		name             string
		perOwner, global int
		own, all         map[string]time.Duration // stored before
		allowed          bool
		limit            string
		remaining        int64
		ownAfter         []string
		allAfter         []string
	}{
		{
			name: "room in both: the tighter shows", perOwner: 5, global: 3,
			own: map[string]time.Duration{"a": time.Hour}, all: map[string]time.Duration{"a": time.Hour, "x": time.Hour},
			allowed: true, limit: LimitStoredGlobal, remaining: 0,
			ownAfter: []string{"a", "new"}, allAfter: []string{"a", "new", "x"},
		},
		{
			name: "the owner's cap refuses", perOwner: 1, global: 10,
			own: map[string]time.Duration{"a": time.Hour}, all: map[string]time.Duration{"a": time.Hour},
			limit: LimitStored, ownAfter: []string{"a"}, allAfter: []string{"a"},
		},
		{
			name: "the global cap refuses: the owner's record is taken back", perOwner: 10, global: 2,
			own: map[string]time.Duration{"a": time.Hour}, all: map[string]time.Duration{"a": time.Hour, "x": time.Hour},
			limit: LimitStoredGlobal, ownAfter: []string{"a"}, allAfter: []string{"a", "x"},
		},
		{
			name: "expired jobs do not count", perOwner: 1, global: 1,
			own: map[string]time.Duration{"a": -time.Millisecond}, all: map[string]time.Duration{"x": -time.Millisecond},
			allowed: true, limit: LimitStored, remaining: 0, ownAfter: []string{"new"}, allAfter: []string{"new"},
		},
		{
			name: "no caps: recorded all the same", perOwner: 0, global: 0,
			own: map[string]time.Duration{"a": time.Hour}, all: map[string]time.Duration{"a": time.Hour},
			allowed: true, limit: LimitStored, ownAfter: []string{"a", "new"}, allAfter: []string{"a", "new"},
		},
		{
			name: "only a global cap", perOwner: 0, global: 5,
			allowed: true, limit: LimitStoredGlobal, remaining: 4, ownAfter: []string{"new"}, allAfter: []string{"new"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, db := newQuota(t, start)
			seed(t, db.Client, storedKey(owner), tt.own)
			seed(t, db.Client, storedGlobalKey, tt.all)
			d, err := q.AdmitStored(context.Background(), owner, "new", tt.perOwner, tt.global, start.Add(2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allowed || d.Limit != tt.limit || d.Remaining != tt.remaining {
				t.Errorf("decision %+v, want allowed %v by %s, %d remaining", d, tt.allowed, tt.limit, tt.remaining)
			}
			if !d.Allowed && d.RetryAfter <= 0 {
				t.Errorf("refused without a retry hint: %+v", d)
			}
			if got := members(t, db.Client, storedKey(owner)); !slices.Equal(got, tt.ownAfter) {
				t.Errorf("the owner's stored jobs %v, want %v", got, tt.ownAfter)
			}
			if got := members(t, db.Client, storedGlobalKey); !slices.Equal(got, tt.allAfter) {
				t.Errorf("all stored jobs %v, want %v", got, tt.allAfter)
			}
		})
	}
}

// A job the owner had stored already keeps its record when the global cap
// refuses it again.
func TestAdmitStoredAgainKeepsTheRecord(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	if d, err := q.AdmitStored(ctx, "k", "j", 5, 0, start.Add(time.Hour)); err != nil || !d.Allowed {
		t.Fatalf("%+v, %v", d, err)
	}
	// The global cap is lowered below what is stored, then "j" comes again.
	seed(t, db.Client, storedGlobalKey, map[string]time.Duration{"x": time.Hour, "y": time.Hour})
	if err := db.Client.ZRem(ctx, storedGlobalKey, "j").Err(); err != nil {
		t.Fatal(err)
	}
	d, err := q.AdmitStored(ctx, "k", "j", 5, 2, start.Add(time.Hour))
	if err != nil || d.Allowed || d.Limit != LimitStoredGlobal {
		t.Fatalf("%+v, %v; want refused globally", d, err)
	}
	if got := members(t, db.Client, storedKey("k")); !slices.Equal(got, []string{"j"}) {
		t.Errorf("the owner's stored jobs %v, want [j]", got)
	}
	if err := q.ReleaseStored(ctx, "k", "j", "x"); err != nil {
		t.Fatal(err)
	}
	if got := members(t, db.Client, storedKey("k")); len(got) != 0 {
		t.Errorf("after release: %v", got)
	}
	if got := members(t, db.Client, storedGlobalKey); !slices.Equal(got, []string{"y"}) {
		t.Errorf("after release, all stored: %v", got)
	}
}
