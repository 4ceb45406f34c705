package limit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Rate is a per-minute limit shared by all processes (GCRA, with
// github.com/go-redis/redis_rate): a bucket of one minute's worth of units,
// refilled continuously. A nil *Rate is no limit.
type Rate struct {
	lim   *redis_rate.Limiter
	key   string
	limit redis_rate.Limit
}

// NewRate returns the limit of perMinute units on key, or nil (no limit)
// when perMinute is 0 or less.
func NewRate(rdb redis.UniversalClient, key string, perMinute int) *Rate {
	if perMinute <= 0 {
		return nil
	}
	return &Rate{lim: redis_rate.NewLimiter(rdb), key: key, limit: redis_rate.PerMinute(perMinute)}
}

// Per returns the units per minute; 0 for no limit.
func (r *Rate) Per() int {
	if r == nil {
		return 0
	}
	return r.limit.Rate
}

// clamp bounds a request to what the bucket can ever hold: a request larger
// than a minute's worth would never pass otherwise.
func (r *Rate) clamp(n int) int { return min(max(n, 0), r.limit.Burst) }

// Take spends n units now if the budget has them, and reports how long
// until it would otherwise (nothing is spent then). n is bounded by a
// minute's worth.
func (r *Rate) Take(ctx context.Context, n int) (ok bool, wait time.Duration, err error) {
	if r == nil || n <= 0 {
		return true, 0, nil
	}
	res, err := r.lim.AllowN(ctx, r.key, r.limit, r.clamp(n))
	if err != nil {
		return false, 0, fmt.Errorf("rate %s: %w", r.key, err)
	}
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, max(res.RetryAfter, time.Millisecond), nil
}

// Adjust corrects an earlier Take by delta units: a positive delta spends
// more (as much as the budget has: usage already happened), a negative one
// gives units back. Both are best effort: the budget never goes above full.
func (r *Rate) Adjust(ctx context.Context, delta int) error {
	if r == nil || delta == 0 {
		return nil
	}
	var err error
	if delta > 0 {
		_, err = r.lim.AllowAtMost(ctx, r.key, r.limit, r.clamp(delta))
	} else {
		_, err = r.lim.AllowN(ctx, r.key, r.limit, -r.clamp(-delta))
	}
	if err != nil {
		return fmt.Errorf("rate %s: adjust by %d: %w", r.key, delta, err)
	}
	return nil
}
