// Package limit enforces limits shared by every process of the service, on
// Redis: a counting semaphore with expiring leases (requests in flight) and
// per-minute rate limits (requests and tokens), and Gate, which combines
// them for one provider. Waiting for capacity is fair, bounded and never
// spins: waiters stand in a line on Redis, ordered by the deadline of the
// work they are for (urgent work first), and keep their place however
// long they wait; they try again when leases are released (Pub/Sub) or
// after a jittered backoff, and give up only when the line stops moving.
package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
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
	// keys: the leases, the line of waiters, the waiters' expiries (the
	// order of acquireScript's KEYS).
	keys     []string
	cap      int
	reserved int
	ttl      time.Duration
	wake     Waker
	log      *slog.Logger
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
	// Reserved is the number of slots only urgent waiters (Order.Urgent)
	// may take; at most the capacity less one.
	Reserved int
}

// NewSemaphore returns the semaphore of name with capacity slots. Its
// Redis keys are tt:limit:{name}:inflight (the leases), tt:limit:{name}:line
// and tt:limit:{name}:line:alive (the waiters).
func NewSemaphore(rdb redis.UniversalClient, name string, capacity int, o SemaphoreOptions) *Semaphore {
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	capacity = max(capacity, 1)
	prefix := "tt:limit:{" + name + "}:"
	return &Semaphore{
		rdb: rdb, name: name,
		keys: []string{prefix + "inflight", prefix + "line", prefix + "line:alive"},
		cap:  capacity, reserved: min(max(o.Reserved, 0), capacity-1),
		ttl: o.TTL, wake: o.Wake, log: o.Log,
	}
}

// Order places a call in the line of a Semaphore: urgent calls first, then
// by due time, the earliest first (the deadline of the job the call is
// for, so that the line is served earliest deadline first, which for jobs
// of one deadline is the order they arrived in). Calls of the same due
// time are served together, in no particular order.
type Order struct {
	// Due is when the call's work must be done; zero: when it starts to
	// wait, plus DefaultDue.
	Due time.Time
	// Urgent calls (the aggregation of a job whose members are done) go
	// before every call that is not, and may take the reserved slots.
	Urgent bool
}

// DefaultDue is the due time, counted from the start of its wait, of a
// call that names none: later than any job's deadline of the defaults, so
// that work with a deadline goes first.
const DefaultDue = 10 * time.Minute

// urgentLead is how far ahead of its due time an urgent call is placed:
// more than any due time can differ, so that it goes before every call
// that is not urgent.
const urgentLead = 1 << 40 // ms, about 35 years

// score is the place of o in the line: lower first. Milliseconds since
// 1970 are exact in a float64 (and in Redis' sorted set scores).
func (o Order) score(now time.Time) float64 {
	due := o.Due
	if due.IsZero() {
		due = now.Add(DefaultDue)
	}
	ms := due.UnixMilli()
	if o.Urgent {
		ms -= urgentLead
	}
	return float64(ms)
}

type orderKey struct{}

// WithOrder returns ctx placing the capacity waits of the calls made with
// it by o.
func WithOrder(ctx context.Context, o Order) context.Context {
	return context.WithValue(ctx, orderKey{}, o)
}

// OrderFrom returns the Order ctx carries (WithOrder), or the zero Order.
func OrderFrom(ctx context.Context) Order {
	o, _ := ctx.Value(orderKey{}).(Order)
	return o
}

// leaseKey is the sorted set of the leases held.
func (s *Semaphore) leaseKey() string { return s.keys[0] }

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Cap returns its capacity.
func (s *Semaphore) Cap() int { return s.cap }

// acquireScript: KEYS[1] the lease set, KEYS[2] the line (waiters by
// their Order's score), KEYS[3] the waiters' expiries; ARGV[1] the slots
// this waiter may use (the cap, less the reserve for a waiter that is not
// urgent), ARGV[2] lease ttl ms, ARGV[3] lease id (also the waiter's
// ticket), ARGV[4] the waiter's score, ARGV[5] ticket ttl ms, or 0 for a
// try that does not wait. Times are Redis' own, so that processes' clocks
// do not matter.
//
// A lease is granted when the free slots outnumber the waiters ahead in
// the line (lower scores): capacity goes to the line in its order, never
// to whoever tries first. A refused waiter gets (or keeps) its place in
// the line, which it must renew within the ticket ttl (a waiter that died
// loses it). Returns {1} when granted, else {0, waiters ahead, free slots}.
//
// Expired leases and dead waiters are dropped only when they could change
// a refusal: the common admission (nobody waiting, room) costs 6 commands
// (the script, ZCARD, TIME, ZCOUNT, ZADD, PEXPIRE). The lease set never
// holds more than cap members for long: the first acquire that finds it
// full drops the expired ones. A lease that expired keeps its member until
// then, so a holder that renews it late gets it back if no one needed its
// slot (its request is still running).
var acquireScript = redis.NewScript(`
local usable = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ahead = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[4])
if n + ahead >= usable then
  if n >= usable then
    n = n - redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  end
  if ahead > 0 then
    local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
    if #dead > 0 then
      redis.call('ZREM', KEYS[2], unpack(dead))
      redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
      ahead = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[4])
    end
  end
  if n + ahead >= usable then
    local ttl = tonumber(ARGV[5])
    if ttl > 0 then
      redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
      redis.call('ZADD', KEYS[3], now + ttl, ARGV[3])
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('PEXPIRE', KEYS[3], ttl)
    end
    return {0, ahead, usable - n}
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if tonumber(ARGV[5]) > 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return {1}
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

// TryAcquire takes a lease if a slot is free now for a call placed by
// ctx's Order (WithOrder) and nobody waits ahead of it; it returns ErrFull
// otherwise, without joining the line.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Lease, error) {
	id := newID()
	r, err := s.try(ctx, id, OrderFrom(ctx), time.Now(), 0)
	if err != nil {
		return nil, err
	}
	if !r.granted {
		return nil, ErrFull
	}
	return s.newLease(id), nil
}

// ticketTTL is how long a waiter keeps its place in the line without
// trying again; a waiter tries at least every maxPoll, so only a waiter
// that died (or stalled for seconds) loses its place.
const ticketTTL = 3 * time.Second

// try is one run of acquireScript for lease id, placed by o; with a
// ticket TTL it joins (or stays in) the line when refused.
type tryResult struct {
	granted bool
	// ahead is the number of waiters ahead in the line; free, the slots
	// free for this waiter (0 or less: none). Set when refused.
	ahead, free int
}

func (s *Semaphore) try(ctx context.Context, id string, o Order, now time.Time, ticket time.Duration) (tryResult, error) {
	usable := s.cap
	if !o.Urgent {
		usable -= s.reserved
	}
	score := strconv.FormatFloat(o.score(now), 'f', -1, 64)
	v, err := acquireScript.Run(ctx, s.rdb, s.keys, usable, s.ttl.Milliseconds(), id, score, ticket.Milliseconds()).Int64Slice()
	if err != nil {
		return tryResult{}, fmt.Errorf("semaphore %s: acquire: %w", s.name, err)
	}
	if len(v) == 3 && v[0] == 0 {
		return tryResult{ahead: int(v[1]), free: int(v[2])}, nil
	}
	return tryResult{granted: len(v) >= 1 && v[0] == 1}, nil
}

// leave takes a waiter that gives up out of the line, with a context of
// its own (ctx may have ended); a failure only costs the others the wait
// until its ticket expires.
func (s *Semaphore) leave(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.keys[1], id)
		p.ZRem(ctx, s.keys[2], id)
		return nil
	})
	if err != nil {
		s.log.Warn("semaphore: leave the line", "semaphore", s.name, "err", err)
	}
}

// Poll bounds between two tries of a waiter that hears no release.
const (
	minPoll = 10 * time.Millisecond
	maxPoll = 250 * time.Millisecond
)

// Acquire takes a lease, waiting in the semaphore's line for a slot: the
// line is served in the order of ctx's Order (WithOrder), so a waiter
// keeps its place however long it waits, and a newcomer never takes a
// slot that a waiter ahead of it is owed. The waiter gives up with ErrFull
// when the line has not moved for maxWait (no lease of the name released,
// nobody ahead of it served): a long wait behind a moving line is not
// given up, a provider that frees nothing is. It returns ctx's error when
// ctx ends first. Either way it leaves the line.
//
// A waiter tries again when it has heard about as many releases (Waker)
// as it needs to reach a free slot, and at least every maxPoll (which
// keeps its place in the line), so that a long line does not try on every
// release.
func (s *Semaphore) Acquire(ctx context.Context, maxWait time.Duration) (*Lease, error) {
	var wake <-chan struct{}
	if s.wake != nil {
		// Watch before the first try, so that no release falls between.
		ch, stop := s.wake.Watch(s.name)
		defer stop()
		wake = ch
	}
	id, o, joined := newID(), OrderFrom(ctx), false
	start := time.Now()
	giveUp := start.Add(maxWait)
	poll := minPoll
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	bestAhead := -1
	for {
		r, err := s.try(ctx, id, o, start, ticketTTL)
		if err != nil {
			if joined {
				s.leave(id)
			}
			return nil, err
		}
		if r.granted {
			return s.newLease(id), nil
		}
		joined = true
		if bestAhead < 0 || r.ahead < bestAhead {
			// The line moved: the wait starts again.
			bestAhead = r.ahead
			giveUp = time.Now().Add(maxWait)
		}
		// Releases this waiter needs before a slot is its own.
		need := max(r.ahead-max(r.free, 0)+1, 1)
		heard := 0
	wait:
		for {
			left := time.Until(giveUp)
			if left <= 0 {
				s.leave(id)
				return nil, ErrFull
			}
			timer.Reset(min(poll/2+mrand.N(poll/2+1), left))
			select {
			case <-ctx.Done():
				s.leave(id)
				return nil, fmt.Errorf("semaphore %s: wait: %w", s.name, context.Cause(ctx))
			case <-wake:
				// A release moves the line. Several may share one signal:
				// count each as two, so that a waiter tries early rather
				// than late.
				giveUp = time.Now().Add(maxWait)
				heard += 2
				if heard < need {
					continue
				}
				// Every waiter that was owed a slot wakes; spread their
				// tries a little. (Since Go 1.23 Reset leaves no stale
				// tick to drain.)
				timer.Reset(mrand.N(2 * time.Millisecond))
				select {
				case <-ctx.Done():
					s.leave(id)
					return nil, fmt.Errorf("semaphore %s: wait: %w", s.name, context.Cause(ctx))
				case <-timer.C:
				}
				break wait
			case <-timer.C:
				poll = min(poll*2, maxPoll)
				break wait
			}
		}
	}
}

// Held returns how many unexpired leases are held now.
func (s *Semaphore) Held(ctx context.Context) (int, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("semaphore %s: %w", s.name, err)
	}
	n, err := s.rdb.ZCount(ctx, s.leaseKey(), fmt.Sprint(t.UnixMilli()+1), "+inf").Result()
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
		ok, err := renewScript.Run(ctx, l.s.rdb, []string{l.s.leaseKey()}, l.s.ttl.Milliseconds(), l.id).Int()
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
			rem = p.ZRem(ctx, l.s.leaseKey(), l.id)
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
