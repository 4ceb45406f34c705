// Package limit enforces limits shared by every process of the service, on
// Redis: a counting semaphore with expiring leases (requests in flight) and
// per-minute rate limits (requests and tokens), and Gate, which combines
// them for one provider. Waiting for capacity is bounded and never spins:
// waiters wake up when a lease is released (Pub/Sub) or after a jittered
// backoff.
package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrFull: the semaphore had no free slot within the wait allowed.
var ErrFull = errors.New("all slots taken")

// ReleasedChannel is the Pub/Sub channel on which a released lease is
// announced; the message is the semaphore's name.
const ReleasedChannel = "tt:limit:released"

// Waker signals announcements about a name (events.Hub implements it on a
// Pub/Sub channel): the channel receives a value after each announcement,
// several announcements possibly sharing one.
type Waker interface {
	Watch(name string) (<-chan struct{}, func())
}

// DefaultLeaseTTL is how long a lease lives without renewal: short, so
// that the slots of a worker that died come back within seconds (its
// replacement needs them at once), and three renewals long, so that a
// Redis outage of a few seconds does not lose the leases of live holders.
const DefaultLeaseTTL = 6 * time.Second

// Semaphore caps the leases held at once on one name, across all processes
// that share the Redis. A lease expires TTL after its last renewal, so that
// a crashed holder frees its slot by itself; a live holder renews it every
// TTL/3. The cap is never exceeded while holders renew in time.
type Semaphore struct {
	rdb  redis.UniversalClient
	name string
	key  string
	cap  int
	ttl  time.Duration
	wake Waker
	log  *slog.Logger
}

// SemaphoreOptions tune a Semaphore; the zero value is usable.
type SemaphoreOptions struct {
	// TTL is the lease lifetime without renewal (default DefaultLeaseTTL).
	TTL time.Duration
	// Wake, when set, wakes waiters as soon as a lease of this name is
	// released (a Waker on ReleasedChannel). Without it they poll with a
	// jittered backoff of up to 250 ms.
	Wake Waker
	// Log receives warnings about lost leases; nil discards them.
	Log *slog.Logger
}

// NewSemaphore returns the semaphore of name with capacity slots. Its
// Redis key is tt:limit:{name}:inflight.
func NewSemaphore(rdb redis.UniversalClient, name string, capacity int, o SemaphoreOptions) *Semaphore {
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Semaphore{rdb: rdb, name: name, key: "tt:limit:{" + name + "}:inflight", cap: max(capacity, 1), ttl: o.TTL, wake: o.Wake, log: o.Log}
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Cap returns its capacity.
func (s *Semaphore) Cap() int { return s.cap }

// acquireScript: KEYS[1] the lease set; ARGV[1] cap, ARGV[2] ttl ms,
// ARGV[3] lease id. Adds this lease if there is room. Times are Redis' own,
// so that processes' clocks do not matter. Returns 1, or 0 when full.
//
// Expired leases are dropped only when the set counts cap members or more:
// below that there is room whether or not some of them expired, so the
// decision is the one a count of the live leases gives, and the common
// admission costs 5 commands (the script, ZCARD, TIME, ZADD, PEXPIRE), a
// refusal 4. The set never holds more than cap members for long: the
// first acquire that finds it full drops the expired ones. A lease that
// expired keeps its member until then, so a holder that renews it late
// gets it back if no one needed its slot (its request is still running).
var acquireScript = redis.NewScript(`
local n = redis.call('ZCARD', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if n >= tonumber(ARGV[1]) then
  n = n - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if n >= tonumber(ARGV[1]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// renewScript: KEYS[1] the lease set; ARGV[1] ttl ms, ARGV[2] lease id.
// Extends a lease that is still there. Returns 1, or 0 when it is gone.
// ZADD XX CH tells whether the lease is there (it changes its expiry)
// without a ZSCORE first; only when it changed nothing (gone, or renewed
// within the same millisecond) does ZSCORE tell which.
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[2]) == 0 and
   not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`)

// TryAcquire takes a lease if a slot is free now; it returns ErrFull
// otherwise.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Lease, error) {
	id := newID()
	ok, err := acquireScript.Run(ctx, s.rdb, []string{s.key}, s.cap, s.ttl.Milliseconds(), id).Int()
	if err != nil {
		return nil, fmt.Errorf("semaphore %s: acquire: %w", s.name, err)
	}
	if ok == 0 {
		return nil, ErrFull
	}
	return s.newLease(id), nil
}

// Poll bounds between two tries of a waiter that hears no release.
const (
	minPoll = 10 * time.Millisecond
	maxPoll = 250 * time.Millisecond
)

// Acquire takes a lease, waiting up to maxWait for a slot: it tries again
// when a lease of this name is released (with a Waker) or after a jittered
// backoff from 10 ms to 250 ms. It returns ErrFull when the wait is over,
// or ctx's error.
func (s *Semaphore) Acquire(ctx context.Context, maxWait time.Duration) (*Lease, error) {
	var wake <-chan struct{}
	if s.wake != nil {
		// Watch before the first try, so that no release falls between.
		ch, stop := s.wake.Watch(s.name)
		defer stop()
		wake = ch
	}
	deadline := time.Now().Add(maxWait)
	poll := minPoll
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l, err := s.TryAcquire(ctx)
		if !errors.Is(err, ErrFull) {
			return l, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, ErrFull
		}
		timer.Reset(min(poll/2+mrand.N(poll/2+1), left))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("semaphore %s: wait: %w", s.name, context.Cause(ctx))
		case <-wake:
			// Every waiter of the name wakes; spread their tries a little.
			// (Since Go 1.23 Reset leaves no stale tick to drain.)
			timer.Reset(mrand.N(2 * time.Millisecond))
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("semaphore %s: wait: %w", s.name, context.Cause(ctx))
			case <-timer.C:
			}
		case <-timer.C:
			poll = min(poll*2, maxPoll)
		}
	}
}

// Held returns how many unexpired leases are held now.
func (s *Semaphore) Held(ctx context.Context) (int, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("semaphore %s: %w", s.name, err)
	}
	n, err := s.rdb.ZCount(ctx, s.key, fmt.Sprint(t.UnixMilli()+1), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("semaphore %s: %w", s.name, err)
	}
	return int(n), nil
}

// Lease is one held slot. It is renewed in the background until Release.
type Lease struct {
	s    *Semaphore
	id   string
	stop chan struct{}
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	lost bool
}

func (s *Semaphore) newLease(id string) *Lease {
	l := &Lease{s: s, id: id, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew()
	return l
}

func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.s.ttl/3)
		ok, err := renewScript.Run(ctx, l.s.rdb, []string{l.s.key}, l.s.ttl.Milliseconds(), l.id).Int()
		cancel()
		switch {
		case err != nil:
			l.s.log.Warn("semaphore: renew lease", "semaphore", l.s.name, "err", err)
		case ok == 0:
			l.mu.Lock()
			l.lost = true
			l.mu.Unlock()
			l.s.log.Warn("semaphore: lease expired before renewal; its slot may be taken", "semaphore", l.s.name)
			return
		}
	}
}

// Lost reports whether the lease expired before it could be renewed.
func (l *Lease) Lost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Release frees the slot and wakes the waiters of the name. It stops the
// renewal before it returns and is safe to call more than once; only the
// first call does anything.
func (l *Lease) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		// Two plain commands in one round trip instead of a script that
		// runs the same two (one command less for Redis). The announcement
		// goes out even when the lease had expired and was dropped
		// already: a waiter woken for nothing finds the semaphore full and
		// waits again.
		var rem *redis.IntCmd
		_, e := l.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			rem = p.ZRem(ctx, l.s.key, l.id)
			p.Publish(ctx, ReleasedChannel, l.s.name)
			return nil
		})
		if e != nil && (rem == nil || rem.Err() != nil) {
			err = fmt.Errorf("semaphore %s: release: %w", l.s.name, e)
			return
		}
		if e != nil {
			// The slot is free; only the waiters' wake-up is lost, and
			// they poll.
			err = fmt.Errorf("semaphore %s: released, but announcing it failed: %w", l.s.name, e)
		}
	})
	return err
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
