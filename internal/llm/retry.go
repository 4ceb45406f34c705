package llm

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Policy is the retry policy of every LLM call, in one place. Retries happen
// at two levels, and both ask the policy:
//
//   - inside a task (Next): a failed request is tried again after a short
//     wait, at most MaxAttempts requests per model and call, when the wait
//     (an exponential backoff with jitter, or the provider's Retry-After) is
//     at most MaxWait;
//   - on the queue (QueueDelay): when the task gives the work back (the
//     attempts are spent, the provider asked for a longer wait, the breaker
//     is open, or there was no capacity), asynq runs it again after
//     QueueDelay.
//
// Errors that another attempt cannot fix (4xx other than 408 and 429,
// unusable answers, cancellation) are never retried.
type Policy struct {
	// MaxAttempts bounds the requests of one call to one model within a
	// task run; at least 1.
	MaxAttempts int
	// Base is the first in-task backoff; it doubles with each attempt up to
	// MaxBackoff. Each wait is drawn between half and all of it.
	Base, MaxBackoff time.Duration
	// MaxWait is the longest wait inside a task; a longer one (a provider's
	// Retry-After) makes the call give up and the task go back to the queue.
	MaxWait time.Duration
}

// DefaultPolicy returns the policy with the given attempts and in-task wait
// bound, and backoffs from 250 ms to 2 s.
func DefaultPolicy(maxAttempts int, maxWait time.Duration) Policy {
	return Policy{MaxAttempts: max(maxAttempts, 1), Base: 250 * time.Millisecond, MaxBackoff: 2 * time.Second, MaxWait: maxWait}
}

// Decision is what to do after a failed attempt.
type Decision struct {
	// Retry: another attempt may succeed.
	Retry bool
	// Delay is the wait before it.
	Delay time.Duration
	// Now: the next attempt should happen inside this task, after Delay;
	// false with Retry means the task should hand the work back.
	Now bool
}

// Next decides after attempt (from 1) of a call to one model failed with err.
func (p Policy) Next(err error, attempt int) Decision {
	if err == nil || !Retryable(err) {
		return Decision{}
	}
	if errors.Is(err, ErrNoCapacity) || errors.Is(err, ErrCircuitOpen) {
		// Nothing was sent; waiting inside the task would only hold its
		// worker slot. The hint says when to come back.
		d, _ := RetryAfter(err)
		return Decision{Retry: true, Delay: d}
	}
	d, hinted := RetryAfter(err)
	if hinted {
		d = jitterUp(d, 0.2)
	} else {
		d = p.backoff(attempt)
	}
	return Decision{Retry: true, Delay: d, Now: attempt < p.MaxAttempts && d <= p.MaxWait}
}

// backoff is the in-task wait after attempt n: Base·2^(n-1), capped at
// MaxBackoff, drawn uniformly from its upper half.
func (p Policy) backoff(n int) time.Duration {
	d := p.Base << min(max(n-1, 0), 16)
	if d <= 0 || d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// Queue delays: asynq schedules in whole seconds.
const (
	queueBase      = time.Second
	queueMaxDelay  = 30 * time.Second
	queueMaxHinted = 2 * time.Minute
)

// QueueDelay is the wait before asynq runs a task again after it gave the
// work back with err, retried times so far. No capacity: the hint (default
// 1 s) plus up to half of it again, so that waiting tasks do not come back
// together. Otherwise an exponential backoff from 1 s with jitter, capped at
// 30 s, and never shorter than a hint (a provider's Retry-After, a breaker's
// remaining open time), itself capped at 2 min.
func QueueDelay(retried int, err error) time.Duration {
	hint, hinted := RetryAfter(err)
	if errors.Is(err, ErrNoCapacity) {
		if !hinted {
			hint = queueBase
		}
		return max(jitterUp(hint, 0.5), queueBase)
	}
	d := queueBase << min(max(retried, 0), 5)
	d = min(d+rand.N(d/2+1), queueMaxDelay)
	if hinted {
		d = max(d, min(jitterUp(hint, 0.2), queueMaxHinted))
	}
	return d
}

// jitterUp returns d plus a random part of up to frac of d.
func jitterUp(d time.Duration, frac float64) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(time.Duration(float64(d)*frac)+1)
}
