// Package backlog estimates how long a new job's member calls wait for
// provider capacity: the member calls already waiting or running on the
// user member queue (the backlog), against the providers' cluster-wide
// in-flight caps (the capacity), at the duration of a typical member call.
//
// One reading of the queue serves every request of a process for at most
// Options.MaxAge; the calls this process counts (Take) since that reading
// are added to it, so that a burst of submissions to one process sees its
// own growth before the next reading, and the others' growth within
// MaxAge.
package backlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/timetravel-ai/timetravel/internal/monitoring"
)

// Defaults of Options.
const (
	// DefaultMaxAge is how long one reading of the queue serves.
	DefaultMaxAge = 200 * time.Millisecond
	// DefaultTypicalMaxAge is how long one reading of the typical call
	// serves: it moves slowly, and its reading is the larger one.
	DefaultTypicalMaxAge = 10 * time.Second
	// DefaultWindow is how far back finished jobs count for the typical
	// call.
	DefaultWindow = 15 * time.Minute
	// DefaultCall is the typical call when no job finished within the
	// window (a new deployment, or one idle for a while): a streamed
	// answer of a few hundred tokens takes seconds.
	DefaultCall = 10 * time.Second
	// samplesRead bounds the finished jobs the typical call is read from
	// (the newest of monitoring.Key).
	samplesRead = 200
	// readTimeout bounds one reading: it is shared by every request that
	// waits for it, whatever their own contexts.
	readTimeout = time.Second
)

// Options configure an Estimator.
type Options struct {
	// Redis holds the queue and the monitoring samples. Required.
	Redis redis.UniversalClient
	// Queue is the asynq queue of the member calls counted (the user
	// lane's member queue). Required.
	Queue string
	// Capacity is how many member calls run at once cluster-wide: the sum
	// of the providers' in-flight caps. At least 1.
	Capacity int
	// DefaultCall is the typical call when no job finished recently
	// (default DefaultCall).
	DefaultCall time.Duration
	// MaxAge is how long one reading of the queue serves (default
	// DefaultMaxAge); TypicalMaxAge, one reading of the typical call
	// (default DefaultTypicalMaxAge); Window, how far back finished jobs
	// count for it (default DefaultWindow).
	MaxAge, TypicalMaxAge, Window time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Reading is the state of the backlog at one moment.
type Reading struct {
	// Calls counts the member calls waiting or running: the queue's
	// pending, active, retry and scheduled tasks when it was read, and
	// the calls this process counted since.
	Calls int64
	// Capacity is how many calls run at once cluster-wide.
	Capacity int
	// Typical is the median duration of the member calls of the jobs that
	// finished recently (their own durations, without their waits for
	// capacity), or the default when none did (FromSamples false).
	Typical     time.Duration
	FromSamples bool
	// At is when the queue was read.
	At time.Time
}

// Wait returns the expected wait, from now, of the last of n more member
// calls queued behind r.Calls: zero while a slot is free for it, then
// typical/capacity for each call ahead of it beyond the capacity (slots
// free at capacity/typical calls a unit of time, the running calls being
// at all stages of their work). n 0 is the wait of a call that would be
// queued now.
func (r Reading) Wait(n int) time.Duration {
	c := int64(max(r.Capacity, 1))
	ahead := r.Calls + int64(max(n, 1)) - c
	if ahead <= 0 {
		return 0
	}
	w := float64(ahead) * float64(r.Typical) / float64(c)
	if w >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(w)
}

// Estimator reads the backlog. It is safe for concurrent use.
type Estimator struct {
	o     Options
	added atomic.Int64 // member calls counted by Take (minus Return), ever
	// pending counts the calls counted by Take and not queued yet (Queued,
	// Return): a reading of the queue does not see them, and they may be
	// queued long after it (a burst's jobs take turns to queue theirs).
	pending atomic.Int64
	group   singleflight.Group

	mu       sync.Mutex
	last     queueReading
	typical  time.Duration
	fromData bool
	typAt    time.Time
}

type queueReading struct {
	calls int64
	added int64 // e.added when the reading began
	at    time.Time
}

// New returns an Estimator. It panics without Redis or Queue, a wiring
// mistake.
func New(o Options) *Estimator {
	if o.Redis == nil || o.Queue == "" {
		panic("backlog.New: Options.Redis and Options.Queue are required")
	}
	o.Capacity = max(o.Capacity, 1)
	if o.DefaultCall <= 0 {
		o.DefaultCall = DefaultCall
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.TypicalMaxAge <= 0 {
		o.TypicalMaxAge = DefaultTypicalMaxAge
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Estimator{o: o}
}

// Estimate is the backlog a job's n member calls join: the reading before
// they were counted, and the expected wait of the last of them.
type Estimate struct {
	Reading
	Wait time.Duration
}

// Read returns the backlog now: a reading of at most MaxAge ago (or a new
// one, shared by every caller that asks meanwhile) plus the calls counted
// since. An error means the queue could not be read; nothing is counted.
func (e *Estimator) Read(ctx context.Context) (Reading, error) {
	r, base, err := e.read(ctx)
	if err != nil {
		return Reading{}, err
	}
	r.Calls += e.added.Load() - base
	return r, nil
}

// Take counts n member calls this process is about to queue and returns
// the backlog they join (the calls counted before them included) and the
// expected wait of the last of them. Calls not queued after all (the job
// was refused) are given back with Return. On error nothing is counted.
func (e *Estimator) Take(ctx context.Context, n int) (Estimate, error) {
	r, base, err := e.read(ctx)
	if err != nil {
		return Estimate{}, err
	}
	// Counting first makes concurrent Takes see each other: each one's
	// calls are ahead of the next one's.
	e.pending.Add(int64(n))
	mine := e.added.Add(int64(n))
	r.Calls += mine - int64(n) - base
	return Estimate{Reading: r, Wait: r.Wait(n)}, nil
}

// Queued says that n calls counted by Take are on the queue now: a reading
// of the queue counts them from then on.
func (e *Estimator) Queued(n int) { e.pending.Add(-int64(n)) }

// Return gives back n calls counted by Take that were not queued.
func (e *Estimator) Return(n int) {
	e.pending.Add(-int64(n))
	e.added.Add(-int64(n))
}

// read returns the newest reading, without the calls counted since, and
// the count of calls (e.added) it was taken at, after reading the queue
// (and the typical call) again when it is too old.
func (e *Estimator) read(ctx context.Context) (Reading, int64, error) {
	now := e.o.Now()
	e.mu.Lock()
	r, base, fresh := e.reading(), e.last.added, !e.last.at.IsZero() && now.Sub(e.last.at) < e.o.MaxAge
	e.mu.Unlock()
	if fresh {
		return r, base, nil
	}
	ch := e.group.DoChan("read", func() (any, error) {
		// The reading is everyone's: no one caller's cancellation ends it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		return nil, e.refresh(rctx)
	})
	select {
	case <-ctx.Done():
		return Reading{}, 0, fmt.Errorf("read the backlog: %w", ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return Reading{}, 0, res.Err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reading(), e.last.added, nil
}

// reading is the newest reading; e.mu held.
func (e *Estimator) reading() Reading {
	typ := e.typical
	if typ <= 0 {
		typ = e.o.DefaultCall
	}
	return Reading{Calls: e.last.calls, Capacity: e.o.Capacity, Typical: typ, FromSamples: e.fromData, At: e.last.at}
}

// refresh reads the queue (one pipelined round trip: its keys share their
// hash tag, so one Redis Cluster node answers) and, when its reading is
// older than TypicalMaxAge, the typical call.
func (e *Estimator) refresh(ctx context.Context) error {
	now := e.o.Now()
	// A caller that found the reading old may start its flight just after
	// another flight renewed it: that reading serves.
	e.mu.Lock()
	fresh := !e.last.at.IsZero() && now.Sub(e.last.at) < e.o.MaxAge
	e.mu.Unlock()
	if fresh {
		return nil
	}
	added := e.added.Load()
	// Calls counted before the reading but queued after it: counted as
	// the reading's. (Some may reach the queue while it is read, and count
	// twice until the next reading: an overestimate, the safe side.)
	notYet := e.pending.Load()
	calls, err := e.queued(ctx)
	calls += notYet
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.last = queueReading{calls: calls, added: added, at: now}
	stale := e.typAt.IsZero() || now.Sub(e.typAt) >= e.o.TypicalMaxAge
	e.mu.Unlock()
	if !stale {
		return nil
	}
	typ, ok, err := e.readTypical(ctx, now)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.typAt = now
	if err != nil {
		// The queue's reading stands; the previous typical call (or the
		// default) serves until the next reading of it.
		return nil
	}
	e.typical, e.fromData = typ, ok
	return nil
}

// queued counts the queue's member tasks waiting or running: pending and
// active (lists), retry and scheduled (sorted sets; a task handed back for
// want of capacity waits in retry).
func (e *Estimator) queued(ctx context.Context) (int64, error) {
	prefix := "asynq:{" + e.o.Queue + "}:"
	var lens [4]*redis.IntCmd
	_, err := e.o.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		lens[0] = p.LLen(ctx, prefix+"pending")
		lens[1] = p.LLen(ctx, prefix+"active")
		lens[2] = p.ZCard(ctx, prefix+"retry")
		lens[3] = p.ZCard(ctx, prefix+"scheduled")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read the backlog of queue %s: %w", e.o.Queue, err)
	}
	var n int64
	for _, c := range lens {
		n += c.Val()
	}
	return n, nil
}

// readTypical returns the median duration of the member calls of the jobs
// that finished within the window (the newest samplesRead of them); false
// when there were none.
func (e *Estimator) readTypical(ctx context.Context, now time.Time) (time.Duration, bool, error) {
	raw, err := e.o.Redis.LRange(ctx, monitoring.Key, 0, samplesRead-1).Result()
	if err != nil {
		return 0, false, fmt.Errorf("read the recent member durations: %w", err)
	}
	since := now.Add(-e.o.Window).UnixMilli()
	var ms []int64
	for _, r := range raw {
		var s monitoring.Sample
		if json.Unmarshal([]byte(r), &s) != nil || s.At < since {
			continue
		}
		ms = append(ms, s.Members...)
	}
	if len(ms) == 0 {
		return 0, false, nil
	}
	sort.Slice(ms, func(a, b int) bool { return ms[a] < ms[b] })
	mid := len(ms) / 2
	med := ms[mid]
	if len(ms)%2 == 0 {
		med = (ms[mid-1] + ms[mid]) / 2
	}
	return time.Duration(med) * time.Millisecond, true, nil
}
