package quota

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/testclock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// newQuota returns quotas on a database of their own, on a clock the test
// moves, which starts at start.
func newQuota(t *testing.T, start time.Time) (*Quota, *testclock.Clock, redistest.DB) {
	t.Helper()
	db := redistest.New(t)
	c := testclock.New(start)
	q := New(db.Client)
	q.now = c.Now
	return q, c, db
}

// start is a time the tests' clocks start at: an hour before a UTC
// midnight.
var start = time.Date(2031, 3, 4, 23, 0, 0, 0, time.UTC)

func TestSetHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		d                    Decision
		policy, limit, retry string
	}{
		{
			name:   "allowed, with a window",
			d:      Decision{Allowed: true, Limit: LimitSubmissions, Quota: 10, Remaining: 7, Window: time.Minute, Reset: 18*time.Second + time.Millisecond},
			policy: `"submissions_per_minute";q=10;w=60`, limit: `"submissions_per_minute";r=7;t=19`,
		},
		{
			name:   "refused: Retry-After rounded up",
			d:      Decision{Limit: LimitTokens, Quota: 1000, Window: 24 * time.Hour, Reset: 90 * time.Minute, RetryAfter: 90*time.Minute + time.Millisecond},
			policy: `"tokens_per_day";q=1000;w=86400`, limit: `"tokens_per_day";r=0;t=5400`, retry: "5401",
		},
		{
			name:   "refused now: Retry-After at least 1",
			d:      Decision{Limit: LimitRunning, Quota: 2, Remaining: 0},
			policy: `"running_jobs";q=2`, limit: `"running_jobs";r=0;t=0`, retry: "1",
		},
		{
			name: "no limit: nothing",
			d:    Decision{Allowed: true, Limit: LimitStored},
		},
		{
			name:   "negative remaining shows 0",
			d:      Decision{Allowed: true, Limit: LimitSSE, Quota: 3, Remaining: -1},
			policy: `"sse_connections";q=3`, limit: `"sse_connections";r=0;t=0`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			tt.d.SetHeaders(h)
			for field, want := range map[string]string{"RateLimit-Policy": tt.policy, "RateLimit": tt.limit, "Retry-After": tt.retry} {
				if got := h.Get(field); got != want {
					t.Errorf("%s: %q, want %q", field, got, want)
				}
			}
		})
	}
}

func TestAllowSubmission(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		perMinute int
		calls     int
		allowed   int // the first allowed calls pass, the rest are refused
	}{
		{"no limit", 0, 5, 5},
		{"a burst of the minute's worth", 3, 5, 3},
		{"one a minute", 1, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _, _ := newQuota(t, start)
			for i := range tt.calls {
				d, err := q.AllowSubmission(ctx, "key1", tt.perMinute)
				if err != nil {
					t.Fatal(err)
				}
				if want := i < tt.allowed; d.Allowed != want {
					t.Fatalf("call %d: allowed %v, want %v (%+v)", i, d.Allowed, want, d)
				}
				if d.Limit != LimitSubmissions || d.Quota != int64(tt.perMinute) {
					t.Errorf("call %d: %+v", i, d)
				}
				if tt.perMinute <= 0 {
					continue
				}
				if d.Window != time.Minute {
					t.Errorf("call %d: window %s", i, d.Window)
				}
				if d.Allowed && d.Remaining != int64(tt.perMinute-i-1) {
					t.Errorf("call %d: remaining %d, want %d", i, d.Remaining, tt.perMinute-i-1)
				}
				// GCRA refills one every minute/perMinute: a refused call
				// waits for the next, which the test is far too quick
				// to see come.
				if !d.Allowed && (d.RetryAfter <= 0 || d.RetryAfter > time.Minute/time.Duration(tt.perMinute)) {
					t.Errorf("call %d: retry after %s", i, d.RetryAfter)
				}
			}
			// Another owner has a budget of its own.
			if d, err := q.AllowSubmission(ctx, "key2", tt.perMinute); err != nil || !d.Allowed {
				t.Errorf("another owner: %+v, %v", d, err)
			}
		})
	}
}

func TestNoOwner(t *testing.T) {
	t.Parallel()
	q, _, _ := newQuota(t, start)
	ctx := context.Background()
	_, err1 := q.AllowSubmission(ctx, "", 5)
	_, err2 := q.AdmitRunning(ctx, "", "job", 1, start.Add(time.Hour), nil)
	_, err3 := q.ReserveTokens(ctx, "", 0, 10)
	_, err4 := q.Usage(ctx, "", 0)
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, ErrNoOwner) {
			t.Errorf("check %d: %v, want ErrNoOwner", i+1, err)
		}
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	q, c, _ := newQuota(t, start)
	ctx := context.Background()
	const owner = "0123456789abcdef"

	u, err := q.Usage(ctx, owner, 0)
	if err != nil {
		t.Fatal(err)
	}
	if u != (Usage{SubmissionsRemaining: -1}) {
		t.Errorf("fresh owner without a submission limit: %+v", u)
	}

	for range 2 {
		if _, err := q.AllowSubmission(ctx, owner, 5); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"j1", "j2"} {
		if _, err := q.AdmitRunning(ctx, owner, id, 0, start.Add(time.Minute), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"j1", "j2", "j3"} {
		if _, err := q.AdmitStored(ctx, owner, id, 0, 0, start.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := q.ReserveTokens(ctx, owner, 0, 120)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, 70); err != nil {
		t.Fatal(err)
	}

	want := Usage{SubmissionsRemaining: 3, RunningJobs: 2, StoredJobs: 3, TokensToday: 70}
	for range 2 { // a peek takes nothing
		if u, err = q.Usage(ctx, owner, 5); err != nil {
			t.Fatal(err)
		}
		if u != want {
			t.Errorf("usage %+v, want %+v", u, want)
		}
	}

	// The running jobs' deadlines pass; the day ends.
	c.Advance(time.Hour + time.Second)
	if u, err = q.Usage(ctx, owner, 5); err != nil {
		t.Fatal(err)
	}
	if u.RunningJobs != 0 || u.StoredJobs != 0 || u.TokensToday != 0 {
		t.Errorf("usage after the deadlines and the day: %+v", u)
	}
}
