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
//   - inside a task, for answers (RetryBadAnswer): an answer that the
//     request's validator rejected (ErrBadAnswer) is asked for again at
//     once, BadAnswerRetries times per call, over and above MaxAttempts;
//   - on the queue (QueueDelay): when the task gives the work back (the
//     attempts are spent, the provider asked for a longer wait, the
//     breakers stayed open or there was no capacity for the whole capacity
//     wait), asynq runs it again after QueueDelay.
//
// Errors that another attempt cannot fix (4xx other than 408 and 429,
// cancellation) are never retried, and unusable answers only as
// RetryBadAnswer says.
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
	// BadAnswerRetries is how many times one call asks again after an
	// unusable answer (ErrBadAnswer: rejected by the request's Validate, or
	// without choices): 1 (DefaultPolicy) checks at most two answers per
	// call; 0 fails the call on the first. An unusable answer says the
	// provider works (no breaker counts it) but the model misread the
	// prompt, which a second answer often does not.
	BadAnswerRetries int
}

// DefaultPolicy returns the policy with the given attempts and in-task wait
// bound, backoffs from 250 ms to 2 s, and one retry of a rejected answer.
func DefaultPolicy(maxAttempts int, maxWait time.Duration) Policy {
	return Policy{MaxAttempts: max(maxAttempts, 1), Base: 250 * time.Millisecond, MaxBackoff: 2 * time.Second, MaxWait: maxWait, BadAnswerRetries: 1}
}

// RetryBadAnswer tells whether a call whose validator has rejected
// rejected answers so far (this one included) asks for another: while
// rejected is at most BadAnswerRetries. The new request goes at once (the
// provider answered; there is nothing to wait out) to the same model.
func (p Policy) RetryBadAnswer(rejected int) bool {
	return rejected >= 1 && rejected <= p.BadAnswerRetries
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
		// Nothing was sent, and the gateway has already waited its capacity
		// wait for the limits or the breakers: waiting longer inside the
		// task would only hold its worker slot. The hint says when to come
		// back.
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
	// breakerRecheck caps the wait of work handed back by an open breaker:
	// its remaining open time only says when a trial may go; the work must
	// be back soon after that trial closes it, not up to half an open time
	// later, or a provider outage costs the jobs that much more.
	breakerRecheck = 5 * time.Second
)

// QueueDelay is the wait before asynq runs a task again after it gave the
// work back with err, retried times so far. A hand-back with nothing sent
// (ErrNoCapacity, or ErrCircuitOpen after the breaker wait): the hint
// (default 1 s; a breaker's remaining open time, at most 5 s) plus up to half of it
// again, so that waiting tasks do not come back together. Otherwise an
// exponential backoff from 1 s with jitter, capped at 30 s, and never
// shorter than a hint (a provider's Retry-After), itself capped at 2 min.
func QueueDelay(retried int, err error) time.Duration {
	hint, hinted := RetryAfter(err)
	if errors.Is(err, ErrNoCapacity) || errors.Is(err, ErrCircuitOpen) {
		// A hand-back uses no queue retry, so retried does not grow: the
		// hint and the jitter alone spread the waiting tasks.
		hint = min(hint, queueMaxHinted)
		if errors.Is(err, ErrCircuitOpen) {
			hint = min(hint, breakerRecheck)
		}
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
