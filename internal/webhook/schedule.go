package webhook

import (
	"time"
)

// Schedule is the delay before each retry, after the first attempt, as the
// Standard Webhooks specification suggests: 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h, 10 h. MaxRetries is its length.
var Schedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// MaxRetries bounds the attempts of one delivery (plus the first).
var MaxRetries = len(Schedule)

// RetryDelay is the wait before retry n (0-based): the schedule's, or the
// receiver's Retry-After when that is longer (capped at the schedule's last).
func RetryDelay(n int, retryAfter time.Duration) time.Duration {
	d := Schedule[min(max(n, 0), len(Schedule)-1)]
	if retryAfter > d {
		d = min(retryAfter, Schedule[len(Schedule)-1])
	}
	return d
}
