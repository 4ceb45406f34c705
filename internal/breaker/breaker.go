package breaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// ErrOpen: the breaker refused the request without sending it.
var ErrOpen = errors.New("circuit breaker open")

// OpenError is a refusal: the breaker is open, or half-open with its one
// trial request already in flight.
type OpenError struct {
	Name     string
	HalfOpen bool
	// RetryAfter is how long until the breaker lets a trial request
	// through (an estimate when half-open).
	RetryAfter time.Duration
}

func (e *OpenError) Error() string {
	if e.HalfOpen {
		return fmt.Sprintf("circuit breaker for %s is half-open with a trial request in flight", e.Name)
	}
	return fmt.Sprintf("circuit breaker for %s is open for another %s", e.Name, e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrOpen) true.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// RetryHint returns RetryAfter.
func (e *OpenError) RetryHint() time.Duration { return e.RetryAfter }

// State is a breaker's state: closed, half-open or open.
type State = gobreaker.State

// Settings configure the breakers of a Set.
type Settings struct {
	// Failures is the number of failures within one Window that, when they
	// are also at least FailureRatio of the window's requests, opens a
	// breaker. A ratio rather than a run of consecutive failures: under
	// concurrency, failures (fast) are reported before the successes (slow)
	// of requests sent at the same moment, so a modest error rate produces
	// runs of failures without the provider being down.
	Failures uint32
	// FailureRatio is the share of a window's requests that must have failed
	// (default 0.5).
	FailureRatio float64
	// Window is how long a closed breaker accumulates counts before they
	// start again from zero (default 30 s).
	Window time.Duration
	// OpenFor is how long a breaker stays open before it lets one trial
	// request through (half-open): its success closes the breaker, its
	// failure opens it again.
	OpenFor time.Duration
	// TrialTTL bounds how long a trial request holds the half-open slot if
	// its process dies before it reports; at least the longest request.
	TrialTTL time.Duration
	// IsFailure tells the errors that count towards opening; other errors
	// count as successes (the provider answered). Nil: every error.
	IsFailure func(error) bool
	// IsExcluded tells the errors that count as neither (e.g. the caller
	// cancelled). Nil: none.
	IsExcluded func(error) bool
	// OnStateChange, if set, is called when this process moves a breaker
	// from one state to another.
	OnStateChange func(name string, from, to gobreaker.State)
}

// Set holds one Breaker per name, all on one Store. It is safe for
// concurrent use.
type Set struct {
	store    *Store
	settings Settings
	mu       sync.Mutex
	m        map[string]*Breaker
}

// NewSet returns a Set of breakers with the given settings.
func NewSet(store *Store, s Settings) *Set {
	if s.Failures == 0 {
		s.Failures = 5
	}
	if s.OpenFor <= 0 {
		s.OpenFor = 30 * time.Second
	}
	if s.FailureRatio <= 0 || s.FailureRatio > 1 {
		s.FailureRatio = 0.5
	}
	if s.Window <= 0 {
		s.Window = 30 * time.Second
	}
	if s.TrialTTL <= 0 {
		s.TrialTTL = 2 * time.Minute
	}
	return &Set{store: store, settings: s, m: map[string]*Breaker{}}
}

// Get returns the breaker of name, creating its shared state if it has
// none yet.
func (s *Set) Get(name string) (*Breaker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.m[name]; ok {
		return b, nil
	}
	b := &Breaker{name: name, store: s.store, settings: s.settings}
	if err := b.init(); err != nil {
		return nil, err
	}
	s.m[name] = b
	return b, nil
}

// Breaker is one circuit breaker whose state all processes share. Requests
// go through it in two short steps, Allow and the done function it returns,
// so that no lock is held while a request runs. A process serialises its
// own steps on one breaker; across processes the Store's lock and
// compare-and-set keep every counted outcome.
//
// Outcomes count in the state they are reported in: a request admitted while
// the breaker was closed and ending after it opened does not count, one
// ending while it is half-open does (its answer is as good a trial as any).
type Breaker struct {
	name     string
	store    *Store
	settings Settings

	mu  sync.Mutex
	dcb *gobreaker.DistributedCircuitBreaker[struct{}]
}

// maxConflicts bounds the repeats of a step whose write met a concurrent
// update.
const maxConflicts = 8

func (b *Breaker) init() error {
	st := b.settings
	dcb, err := gobreaker.NewDistributedCircuitBreaker[struct{}](b.store, gobreaker.Settings{
		Name:        b.name,
		MaxRequests: 1,
		Timeout:     st.OpenFor,
		Interval:    st.Window,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			answered := c.Requests - min(c.TotalExclusions, c.Requests) // cancellations do not count
			return c.TotalFailures >= st.Failures && float64(c.TotalFailures) >= st.FailureRatio*float64(answered)
		},
		IsSuccessful: func(err error) bool {
			return err == nil || (st.IsFailure != nil && !st.IsFailure(err))
		},
		IsExcluded: func(err error) bool {
			return err != nil && st.IsExcluded != nil && st.IsExcluded(err)
		},
		OnStateChange: st.OnStateChange,
	})
	if err != nil {
		return fmt.Errorf("breaker %s: %w", b.name, err)
	}
	b.dcb = dcb
	return nil
}

// stateKey and trialKey are gobreaker's state key and the half-open slot.
func (b *Breaker) stateKey() string { return "gobreaker:state:" + b.name }
func (b *Breaker) trialKey() string { return "trial:" + b.name }

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// Allow admits one request, or refuses it with an *OpenError (ErrOpen)
// while the breaker is open, or half-open with its trial request taken.
// On admission the caller must call done exactly once with the request's
// outcome. A closed breaker costs one Redis read.
func (b *Breaker) Allow(ctx context.Context) (done func(error), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	shared, err := b.read()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	switch {
	case shared.State == gobreaker.StateClosed:
		return b.doneFunc(""), nil
	case shared.State == gobreaker.StateOpen && now.Before(shared.Expiry):
		return nil, &OpenError{Name: b.name, RetryAfter: shared.Expiry.Sub(now)}
	}
	// Open past its time, or half-open: gobreaker moves the state on.
	state, err := b.step(func() (gobreaker.State, error) { return b.dcb.State() })
	if err != nil {
		return nil, err
	}
	switch state {
	case gobreaker.StateClosed:
		return b.doneFunc(""), nil
	case gobreaker.StateOpen:
		shared, _ := b.read()
		return nil, &OpenError{Name: b.name, RetryAfter: max(shared.Expiry.Sub(time.Now()), time.Millisecond)}
	}
	token, err := b.store.setNX(ctx, b.trialKey(), b.settings.TrialTTL)
	if err != nil {
		return nil, fmt.Errorf("breaker %s: take the trial: %w", b.name, err)
	}
	if token == "" {
		return nil, &OpenError{Name: b.name, HalfOpen: true, RetryAfter: time.Second}
	}
	return b.doneFunc(token), nil
}

// doneFunc records one outcome and frees the trial slot it held, if any.
func (b *Breaker) doneFunc(trial string) func(error) {
	var once sync.Once
	return func(outcome error) {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if trial == "" && !b.failure(outcome) {
				// While a closed breaker's window has no failure, successes
				// change nothing that matters: one read instead of a locked
				// write. From the window's first failure on, every outcome
				// is written, so the failure ratio is taken over the
				// requests since then (never lower than the true ratio).
				if st, err := b.read(); err == nil && st.State == gobreaker.StateClosed && st.Counts.TotalFailures == 0 {
					return
				}
			}
			_, _ = b.step(func() (gobreaker.State, error) {
				ran := false
				_, err := b.dcb.Execute(func() (struct{}, error) {
					ran = true
					return struct{}{}, outcome
				})
				switch {
				case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
					return 0, nil // the state moved on; this outcome does not count
				case errors.Is(err, ErrConflict), errors.Is(err, gobreaker.ErrNoSharedState), !ran:
					return 0, err // nothing written: step repeats or gives up
				}
				return 0, nil // counted (err is the outcome itself)
			})
			if trial != "" {
				ctx, cancel := context.WithTimeout(context.Background(), b.store.OpTimeout)
				defer cancel()
				_ = b.store.delIf(ctx, b.trialKey(), trial)
			}
		})
	}
}

// failure tells whether outcome counts towards opening.
func (b *Breaker) failure(outcome error) bool {
	if outcome == nil || (b.settings.IsExcluded != nil && b.settings.IsExcluded(outcome)) {
		return false
	}
	return b.settings.IsFailure == nil || b.settings.IsFailure(outcome)
}

// step runs one gobreaker operation, again when its write met a concurrent
// update or the shared state had expired. Callers hold b.mu.
func (b *Breaker) step(op func() (gobreaker.State, error)) (gobreaker.State, error) {
	var err error
	for range maxConflicts {
		var st gobreaker.State
		st, err = op()
		switch {
		case errors.Is(err, ErrConflict):
			continue
		case errors.Is(err, gobreaker.ErrNoSharedState):
			if err = b.init(); err != nil {
				return 0, err
			}
			continue
		case err != nil:
			return 0, fmt.Errorf("breaker %s: %w", b.name, err)
		}
		return st, nil
	}
	return 0, fmt.Errorf("breaker %s: %w", b.name, err)
}

// read returns the shared state as stored (a missing one reads closed).
func (b *Breaker) read() (gobreaker.SharedState, error) {
	var st gobreaker.SharedState
	raw, err := b.store.GetData(b.stateKey())
	if err != nil || len(raw) == 0 {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("breaker %s: decode state: %w", b.name, err)
	}
	return st, nil
}

// State returns the breaker's state now, as every process sees it.
func (b *Breaker) State() (gobreaker.State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.step(func() (gobreaker.State, error) { return b.dcb.State() })
}
