// Package breaker keeps circuit breakers whose state every process shares,
// on Redis, used in two short steps (admit a request, then record its
// outcome) so that nothing is held while the request runs.
//
// A breaker is closed, open or half-open:
//
//   - Closed, it judges a sliding window (Settings.Window, in 1 s buckets)
//     of the requests it admitted. Each request counts in the bucket of its
//     admission, once admitted, and its failure counts in the same bucket
//     when it ends, so that failures and requests are one population: a
//     failure that ends before the slow successes of requests sent with it
//     is weighed against them, not against the successes that happen to
//     have ended. Requests still running count as not failed. Excluded
//     outcomes count in neither. A request that outlives the window counts
//     again, with its outcome, in the bucket where it ends (a failure slower
//     than the window would never count otherwise). The breaker opens when,
//     once an outcome is recorded, the window holds at least MinRequests
//     requests, at least Failures failures, and failures are at least
//     FailureRatio of the requests.
//   - Every transition starts a new generation: the outcome of a request
//     admitted before it counts for nothing (it was sent to a provider in
//     another state).
//   - Open, it refuses every request for OpenFor (an *OpenError saying how
//     long), then half-opens.
//   - Half-open, it admits Trials trial requests at a time. A trial's
//     success closes it, its failure opens it again, an excluded outcome
//     frees its slot; so does TrialTTL passing without an outcome (its
//     process died).
//   - Closing starts a ramp of Ramp: the share of Allow calls admitted in
//     each second rises linearly from a tenth to all, and the calls refused
//     get an *OpenError with a short, jittered retry hint, so that the work
//     that waited for the breaker comes back spread out instead of all at
//     once. The ramp's admissions are judged by the same window and rule.
//
// Cost: Allow is one Redis round trip (a Lua script); recording an outcome
// is at most one more, and none for the success of a request admitted
// closed within the window (its admission already counted it). A breaker's
// key expires when unused. Times are the processes' clocks, assumed to
// agree within well under a second.
//
// If Redis is unreachable, Allow admits (fail open: the breaker must not
// stop all provider work when only its store is down) and outcomes go
// unrecorded; this is logged at most once every 10 s per breaker.
//
// Why not gobreaker (v2, which this package used before): its counts belong
// to the generation, or rolling bucket, current when an outcome is
// recorded; an outcome cannot be attributed to its request's admission,
// and a request in flight is not part of the population, so its ratio
// overstates fast failures. Its DistributedCircuitBreaker also reads and
// writes the whole state under a lock (several round trips per outcome),
// and it has no gradual release after closing. The state machine here is
// small and lives in two Lua scripts (see store.go).
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// ErrOpen: the breaker refused the request without sending it. Every
// refusal is an *OpenError, which errors.Is matches with ErrOpen.
var ErrOpen = errors.New("circuit breaker open")

// OpenError is a refusal: the breaker is open, half-open with its trial
// requests in flight, or ramping up after closing and this call was not
// among the share admitted.
type OpenError struct {
	Name     string
	HalfOpen bool
	// Ramping: the breaker has just closed and admits a rising share of
	// the calls; trying again after RetryAfter is likely to be admitted.
	Ramping bool
	// RetryAfter is how long until trying again makes sense: the rest of
	// the open time, or a short jittered wait when half-open or ramping.
	RetryAfter time.Duration
}

func (e *OpenError) Error() string {
	switch {
	case e.Ramping:
		return fmt.Sprintf("circuit breaker for %s is letting requests back gradually; try again in %s", e.Name, e.RetryAfter.Round(time.Millisecond))
	case e.HalfOpen:
		return fmt.Sprintf("circuit breaker for %s is half-open with its trial requests in flight", e.Name)
	}
	return fmt.Sprintf("circuit breaker for %s is open for another %s", e.Name, e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// RetryHint returns RetryAfter (llm.RetryAfter reads it).
func (e *OpenError) RetryHint() time.Duration { return e.RetryAfter }

// State is a breaker's state: closed, half-open or open. A breaker ramping
// up after closing is closed.
type State int8

// The states; String gives "closed", "half-open" and "open".
const (
	StateClosed State = iota
	StateHalfOpen
	StateOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return "unknown state " + strconv.Itoa(int(s))
}

// Settings configure the breakers of a Set. Processes sharing a breaker
// must use the same settings.
type Settings struct {
	// Failures is the least number of failures in the window that opens a
	// breaker (default 5).
	Failures uint32
	// MinRequests is the least number of requests in the window (admitted,
	// excluded outcomes not counted) before the failure ratio is judged:
	// a ratio over few requests says little. Default Failures, the least
	// population in which Failures failures can occur; raise it so that a
	// handful of failures among few requests does not open the breaker.
	MinRequests uint32
	// FailureRatio is the share of the window's requests that must have
	// failed (default 0.5).
	FailureRatio float64
	// Window is the sliding window the ratio is judged over (default 30 s),
	// in buckets of 1 s (of Window/120 beyond 2 min, to bound the cost of
	// judging it), rounded up to whole buckets. Make it longer than most
	// requests take: requests still running count as not failed.
	Window time.Duration
	// OpenFor is how long a breaker stays open before it half-opens
	// (default 30 s).
	OpenFor time.Duration
	// Trials is the number of trial requests a half-open breaker admits at
	// a time (default 1).
	Trials uint32
	// TrialTTL bounds how long a trial holds its slot if its process dies
	// before it reports (default 2 min); at least the longest request, or a
	// slow trial's outcome is lost and another trial admitted.
	TrialTTL time.Duration
	// Ramp is how long, after closing, admission takes to rise from a tenth
	// of the calls to all of them (default OpenFor). Negative: none, all
	// calls are admitted at once on closing.
	Ramp time.Duration
	// IsFailure tells the errors that count towards opening; other errors
	// count as successes (the provider answered). Nil: every error.
	IsFailure func(error) bool
	// IsExcluded tells the errors that count as neither (e.g. the caller
	// cancelled, or no request was sent). Nil: none.
	IsExcluded func(error) bool
	// OnStateChange, if set, is called when this process sees a breaker's
	// shared state differ from the one it saw last (from), whichever
	// process made the transition; a process sees the state on each Allow,
	// recorded outcome and State. Calls for one breaker are serialised; it
	// must not block or call the breaker.
	OnStateChange func(name string, from, to State)
	// Logger receives the breaker's warnings (its store unreachable). Nil:
	// none.
	Logger *slog.Logger
	// Now is the clock (nil: time.Now); tests set it to move time without
	// sleeping.
	Now func() time.Time
}

const (
	// rampStart is the share of calls admitted when a ramp starts: the first
	// call of each second always is.
	rampStart = 0.1
	// logEvery spaces the warnings about an unreachable store.
	logEvery = 10 * time.Second
	// halfOpenRetry is the wait hinted to a call refused while the trials
	// run (jittered; at most OpenFor).
	halfOpenRetry = time.Second
	// maxBuckets bounds the window's buckets.
	maxBuckets = 120
)

// Set holds one Breaker per name, all on one Store. It is safe for
// concurrent use.
type Set struct {
	store    *Store
	settings Settings
	// width and buckets divide the window.
	width   time.Duration
	buckets int64
	keyTTL  time.Duration

	mu sync.Mutex
	m  map[string]*Breaker
}

// NewSet returns a Set of breakers with the given settings, defaults
// filled in.
func NewSet(store *Store, s Settings) *Set {
	if s.Failures == 0 {
		s.Failures = 5
	}
	if s.MinRequests == 0 {
		s.MinRequests = s.Failures
	}
	if s.FailureRatio <= 0 || s.FailureRatio > 1 {
		s.FailureRatio = 0.5
	}
	if s.Window <= 0 {
		s.Window = 30 * time.Second
	}
	if s.OpenFor <= 0 {
		s.OpenFor = 30 * time.Second
	}
	if s.Trials == 0 {
		s.Trials = 1
	}
	if s.TrialTTL <= 0 {
		s.TrialTTL = 2 * time.Minute
	}
	if s.Ramp == 0 {
		s.Ramp = s.OpenFor
	}
	if s.Ramp < 0 {
		s.Ramp = 0
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	width := max(time.Second, (s.Window/maxBuckets+time.Second-1)/time.Second*time.Second)
	buckets := int64((s.Window + width - 1) / width)
	return &Set{
		store: store, settings: s, width: width, buckets: buckets,
		// Long enough for every phase to run its course untouched: the
		// window's counts, the open time, a trial's slot, the ramp; the
		// minute is a margin, which also covers the up to one bucket width
		// by which the store may renew the expiry late (see store.go).
		keyTTL: time.Duration(buckets)*width + s.OpenFor + s.TrialTTL + s.Ramp + time.Minute,
		m:      map[string]*Breaker{},
	}
}

// Get returns the breaker of name. The error is always nil (the shared
// state is created by the first request); it is kept for callers written
// when creating a breaker could fail.
func (s *Set) Get(name string) (*Breaker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.m[name]; ok {
		return b, nil
	}
	b := &Breaker{name: name, set: s, seen: StateClosed}
	s.m[name] = b
	return b, nil
}

// Breaker is one circuit breaker whose state all processes share (see the
// package doc). It is safe for concurrent use.
type Breaker struct {
	name string
	set  *Set

	seenMu  sync.Mutex
	seen    State // the shared state as this process last saw it
	seenGen int64

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// admission is what the outcome of an admitted request is recorded against.
type admission struct {
	gen    int64
	bucket int64 // closed: the bucket of its admission
	trial  int64 // half-open: its trial slot, else 0
	token  string
}

// Allow admits one request, or refuses it with an *OpenError (ErrOpen):
// while the breaker is open, half-open with its trials taken, or ramping
// and this call is not in the share admitted. On admission the caller must
// call done once with the request's outcome (later calls do nothing); done
// never fails, and costs no round trip for a success of a closed breaker.
// If the store is unreachable Allow admits, and done records nothing. The
// only other error is ctx's, when the caller gave up first.
func (b *Breaker) Allow(ctx context.Context) (done func(error), err error) {
	s := b.set
	st := s.settings
	now := st.Now()
	rctx, cancel := context.WithTimeout(ctx, s.store.OpTimeout)
	defer cancel()
	token := newToken()
	v, err := allowScript.Run(rctx, s.store.rdb, []string{s.store.key(b.name)},
		now.UnixMilli(), s.width.Milliseconds(), s.buckets, st.Trials, st.TrialTTL.Milliseconds(),
		token, rampStart, s.keyTTL.Milliseconds()).Result()
	var r result
	if err == nil {
		r, err = parseAllow(v)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		b.storeFailed("admit", err)
		return func(error) {}, nil
	}
	b.observe(r.gen, r.state)
	switch r.code {
	case 1:
		return b.doneFunc(ctx, admission{gen: r.gen, bucket: r.x}), nil
	case 2:
		return b.doneFunc(ctx, admission{gen: r.gen, trial: r.x, token: token}), nil
	}
	switch r.state {
	case StateOpen:
		return nil, &OpenError{Name: b.name, RetryAfter: max(time.Duration(r.x)*time.Millisecond, time.Millisecond)}
	case StateHalfOpen:
		return nil, &OpenError{Name: b.name, HalfOpen: true, RetryAfter: jitter(min(halfOpenRetry, st.OpenFor))}
	}
	// Ramping: come back within a tenth of the ramp, each caller at its own
	// time, when a larger share is admitted.
	step := min(max(st.Ramp/10, 100*time.Millisecond), 5*time.Second)
	return nil, &OpenError{Name: b.name, Ramping: true, RetryAfter: jitter(step)}
}

// jitter returns a random wait in [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Millisecond
	}
	return d/2 + mrand.N(d)
}

// outcome kinds, as the record script takes them.
const (
	success  = "s"
	failure  = "f"
	excluded = "x"
)

// classify tells what outcome counts as.
func (b *Breaker) classify(outcome error) string {
	st := b.set.settings
	switch {
	case outcome == nil:
		return success
	case st.IsExcluded != nil && st.IsExcluded(outcome):
		return excluded
	case st.IsFailure == nil || st.IsFailure(outcome):
		return failure
	}
	return success
}

// doneFunc returns the function that records the outcome of a.
func (b *Breaker) doneFunc(ctx context.Context, a admission) func(error) {
	// The outcome is recorded even when the request's context has ended
	// (a cancellation is an outcome too), within the store's own timeout.
	ctx = context.WithoutCancel(ctx)
	var once sync.Once
	return func(outcome error) {
		once.Do(func() { b.record(ctx, a, outcome) })
	}
}

// record writes one outcome, unless there is nothing to write.
func (b *Breaker) record(ctx context.Context, a admission, outcome error) {
	s := b.set
	st := s.settings
	kind := b.classify(outcome)
	now := st.Now()
	if a.trial == 0 && kind == success && now.UnixMilli()/s.width.Milliseconds()-a.bucket < s.buckets {
		return // its admission counted it, as not failed
	}
	ctx, cancel := context.WithTimeout(ctx, s.store.OpTimeout)
	defer cancel()
	v, err := recordScript.Run(ctx, s.store.rdb, []string{s.store.key(b.name)},
		now.UnixMilli(), s.width.Milliseconds(), s.buckets, a.gen, a.bucket, kind, a.trial, a.token,
		st.MinRequests, st.Failures, st.FailureRatio, st.OpenFor.Milliseconds(), st.Ramp.Milliseconds(),
		st.Trials, s.keyTTL.Milliseconds()).Result()
	var r result
	if err == nil {
		r, err = parseRecord(v)
	}
	if err != nil {
		b.storeFailed("record an outcome", err)
		return
	}
	b.observe(r.gen, r.state)
}

// State returns the breaker's state now, as every process sees it: an open
// breaker past its open time reads half-open (the next Allow moves it). It
// fails only when the store does.
func (b *Breaker) State() (State, error) {
	s := b.set
	ctx, cancel := context.WithTimeout(context.Background(), s.store.OpTimeout)
	defer cancel()
	st, gen, until, err := s.store.read(ctx, b.name)
	if err != nil {
		return 0, fmt.Errorf("breaker %s: %w", b.name, err)
	}
	if st == StateOpen && s.settings.Now().UnixMilli() >= until {
		st = StateHalfOpen
	}
	if gen > 0 {
		b.observe(gen, st)
	}
	return st, nil
}

// observe notes the shared state seen at gen and reports a change. Replies
// can arrive out of order: one from an older generation is ignored.
func (b *Breaker) observe(gen int64, st State) {
	b.seenMu.Lock()
	defer b.seenMu.Unlock()
	if gen < b.seenGen {
		return
	}
	b.seenGen = gen
	if st == b.seen {
		return
	}
	from := b.seen
	b.seen = st
	if f := b.set.settings.OnStateChange; f != nil {
		f(b.name, from, st)
	}
}

// storeFailed logs that the store could not be used, at most once every
// logEvery per breaker (with the number of failures not logged), so that an
// unreachable Redis does not log once per request.
func (b *Breaker) storeFailed(op string, err error) {
	now := time.Now()
	b.logMu.Lock()
	if !b.lastLog.IsZero() && now.Sub(b.lastLog) < logEvery {
		b.suppressed++
		b.logMu.Unlock()
		return
	}
	n := b.suppressed
	b.lastLog, b.suppressed = now, 0
	b.logMu.Unlock()
	b.set.settings.Logger.Warn("circuit breaker store unreachable: requests are admitted without the breaker",
		"breaker", b.name, "op", op, "err", err, "not_logged", n)
}
