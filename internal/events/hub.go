package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// readBatch is how many entries one XRANGE reads.
const readBatch = 512

// maxCarried bounds the announced events a follower keeps while it is busy
// (a slow client); past it, the follower reads the stream instead.
const maxCarried = 256

// Hub delivers job events to followers in one process. It holds one Pub/Sub
// connection whatever the number of followers; reads share the client's pool.
// The zero value is not usable; create it with NewHub and start Run.
type Hub struct {
	rdb     redis.UniversalClient
	channel string
	log     *slog.Logger

	mu   sync.Mutex
	subs map[string]map[*watch]struct{}

	// reads coalesces identical stream reads: the followers of a job that
	// are caught up wake together on one announcement and ask for the same
	// entries, so they share one XRANGE.
	reads singleflight.Group
}

// NewHub returns a Hub that listens on channel (Channel for job events;
// each message is a job id) and reads streams from rdb. It delivers nothing
// live until Run is started; followers then fall back to their recheck
// interval.
func NewHub(rdb redis.UniversalClient, channel string, log *slog.Logger) *Hub {
	return &Hub{rdb: rdb, channel: channel, log: log, subs: map[string]map[*watch]struct{}{}}
}

// watch is one watcher of a job: a signal, and for a follower the events
// that announcements carried since it last looked.
type watch struct {
	ch chan struct{}
	// carry: keep the events announcements carry (Follow); other watchers
	// only want the signal.
	carry bool

	mu      sync.Mutex
	carried []Announced
	// reread: an announcement came without its event, or carried events
	// overflowed: the stream must be read.
	reread bool
}

// signal wakes the watcher without blocking: a pending signal covers this
// one.
func (w *watch) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// note records one announcement for a follower: its event, or that the
// stream must be read.
func (w *watch) note(a *Announced) {
	if !w.carry {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.reread:
	case a == nil || len(w.carried) >= maxCarried:
		w.reread, w.carried = true, nil
	default:
		w.carried = append(w.carried, *a)
	}
}

// take returns and clears what note recorded.
func (w *watch) take() ([]Announced, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, r := w.carried, w.reread
	w.carried, w.reread = nil, false
	return c, r
}

// Run listens for new-event announcements until ctx ends. On every
// (re)subscription it wakes all followers, so that announcements missed while
// disconnected cost a re-read, never a lost event.
func (h *Hub) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		h.log.Warn("event hub: subscription lost; resubscribing", "err", err, "backoff", backoff)
		h.wakeAll()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
	return nil
}

func (h *Hub) listen(ctx context.Context) error {
	ps := h.rdb.Subscribe(ctx, h.channel)
	defer ps.Close()
	// Receive honours deadlines but not cancellation: closing unblocks it.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			h.wakeAll()
		case *redis.Message:
			h.wake(m.Payload)
		}
	}
}

// wake signals the watchers of the job msg announces, handing followers
// the announced event when msg carries one. The event is decoded only when
// a follower of that job is here: every process receives every job's
// events.
func (h *Hub) wake(msg string) {
	id, _, _ := strings.Cut(msg, "\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	var (
		a       *Announced
		decoded bool
	)
	for w := range h.subs[id] {
		if w.carry && !decoded {
			_, a = ParseAnnouncement(msg)
			decoded = true
		}
		w.note(a)
		w.signal()
	}
}

// wakeAll signals every watcher, and makes followers read their streams:
// announcements may have been missed.
func (h *Hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.subs {
		for w := range set {
			w.note(nil)
			w.signal()
		}
	}
}

// Watch returns a channel that receives a signal after each announcement
// for jobID (several announcements may share one signal, and one is sent on
// every resubscription), and a function that stops the watch. Signals never
// block the Hub.
func (h *Hub) Watch(jobID string) (<-chan struct{}, func()) {
	w := h.subscribe(jobID, false)
	return w.ch, func() { h.unsubscribe(jobID, w) }
}

func (h *Hub) subscribe(jobID string, carry bool) *watch {
	w := &watch{ch: make(chan struct{}, 1), carry: carry}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[jobID]
	if set == nil {
		set = map[*watch]struct{}{}
		h.subs[jobID] = set
	}
	set[w] = struct{}{}
	return w
}

func (h *Hub) unsubscribe(jobID string, w *watch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if set := h.subs[jobID]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(h.subs, jobID)
		}
	}
}

// Followers reports how many followers are attached.
func (h *Hub) Followers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.subs {
		n += len(set)
	}
	return n
}

// FollowOptions tunes Follow.
type FollowOptions struct {
	// After is the id of the last event the client has; empty means from
	// the start. Events are delivered strictly after it.
	After string
	// Idle is called when nothing happened for Heartbeat (to send a
	// heartbeat); an error from it ends Follow.
	Idle func() error
	// Heartbeat is the idle interval; zero means 15 s. The stream is also
	// re-read at this interval, whatever the announcements say.
	Heartbeat time.Duration
}

// Follow replays jobID's events after opts.After and then delivers new ones
// as they are written, each exactly once and in stream order, until it has
// delivered the terminal event (then it returns nil), emit or Idle fails, or
// ctx ends.
//
// A new event whose announcement carries it (Announced) is delivered
// without reading the stream when it directly follows the last one
// delivered; anything else (a gap, an announcement without its event, a
// resubscription) is read from the stream.
func (h *Hub) Follow(ctx context.Context, jobID string, emit func(Event) error, opts FollowOptions) error {
	hb := opts.Heartbeat
	if hb <= 0 {
		hb = 15 * time.Second
	}
	// Subscribe before the first read so that no announcement can fall
	// between reading and waiting.
	w := h.subscribe(jobID, true)
	defer h.unsubscribe(jobID, w)

	key := StreamKey(jobID)
	last := opts.After
	timer := time.NewTimer(hb)
	defer timer.Stop()
	read := true // the first look reads the stream (the replay)
	var carried []Announced
	for {
		n, done, err := h.deliver(ctx, key, &last, carried, read, emit)
		if err != nil || done {
			return err
		}
		if n > 0 {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(hb)
		}
		carried, read = nil, false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.ch:
			carried, read = w.take()
		case <-timer.C:
			if opts.Idle != nil {
				if err := opts.Idle(); err != nil {
					return err
				}
			}
			timer.Reset(hb)
			read = true // the periodic re-read
		}
	}
}

// deliver emits the carried events that continue the stream after *last
// (in order; those at or before *last were delivered already), and reads
// the stream when one does not continue it or when read is set. It
// reports how many it emitted and whether the terminal event was one.
func (h *Hub) deliver(ctx context.Context, key string, last *string, carried []Announced, read bool, emit func(Event) error) (int, bool, error) {
	total := 0
	for _, a := range carried {
		if *last != "" && !Before(*last, a.Event.ID) {
			continue
		}
		if a.Prev != *last {
			// A gap: the stream has what came in between, and what this
			// and later announcements carried.
			read = true
			break
		}
		if err := emit(a.Event); err != nil {
			return total, false, err
		}
		*last = a.Event.ID
		total++
		if a.Event.Terminal() {
			return total, true, nil
		}
	}
	if !read {
		return total, false, nil
	}
	n, done, err := h.drain(ctx, key, last, emit)
	return total + n, done, err
}

// drain delivers every entry after *last, advancing *last.
func (h *Hub) drain(ctx context.Context, key string, last *string, emit func(Event) error) (int, bool, error) {
	total := 0
	for {
		start := "-"
		if *last != "" {
			start = "(" + *last
		}
		msgs, err := h.readRange(ctx, key, start)
		if err != nil {
			return total, false, fmt.Errorf("read events of %s: %w", key, err)
		}
		for _, m := range msgs {
			ev, err := decode(m)
			if err != nil {
				return total, false, err
			}
			if err := emit(ev); err != nil {
				return total, false, err
			}
			*last = m.ID
			total++
			if ev.Terminal() {
				return total, true, nil
			}
		}
		if len(msgs) < readBatch {
			return total, false, nil
		}
	}
}

// readRange reads up to readBatch entries of key from start, sharing the
// read with concurrent callers asking for the same range. The returned slice
// is shared: callers must not modify it.
//
// The read runs on a goroutine of its own (DoChan): the Redis client's call
// path is deep, and run on the follower's goroutine it would grow that
// goroutine's stack for as long as the client stays connected, which at
// thousands of SSE clients is most of the api's memory.
func (h *Hub) readRange(ctx context.Context, key, start string) ([]redis.XMessage, error) {
	ch := h.reads.DoChan(key+" "+start, func() (any, error) {
		// Detached from one caller's cancellation: others may be waiting.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return h.rdb.XRangeN(rctx, key, start, "+", readBatch).Result()
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]redis.XMessage), nil
	}
}

// Read returns the events of jobID after the given id (all when empty),
// without following.
func Read(ctx context.Context, rdb redis.UniversalClient, jobID, after string) ([]Event, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	msgs, err := rdb.XRange(ctx, StreamKey(jobID), start, "+").Result()
	if err != nil {
		return nil, fmt.Errorf("read events of job %s: %w", jobID, err)
	}
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := decode(m)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func decode(m redis.XMessage) (Event, error) {
	t, _ := m.Values["t"].(string)
	d, _ := m.Values["d"].(string)
	if t == "" {
		return Event{}, errors.New("event " + m.ID + " has no type")
	}
	if d == "" {
		d = "{}"
	}
	return Event{ID: m.ID, Type: t, Data: json.RawMessage(d)}, nil
}
