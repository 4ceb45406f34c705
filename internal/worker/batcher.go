package worker

import (
	"strings"
	"sync"
	"time"
)

// Batching is how streamed text is gathered into events: the first piece of
// an answer goes out at once (time to first text); later ones when Interval
// has passed since the last batch or Bytes are waiting, whichever comes
// first. Text never waits longer than Interval, even when the model pauses.
// Each batch is one event, so this bounds the Redis and SSE work per job;
// the defaults keep the text moving twenty times a second.
type Batching struct {
	Interval time.Duration
	Bytes    int
}

// DefaultBatching is the batching of NewHandlers.
var DefaultBatching = Batching{Interval: 50 * time.Millisecond, Bytes: 1024}

// batcher gathers text pieces and hands them to send in batches. add and
// flush may not be called concurrently with each other (one stream feeds a
// batcher); the timer that flushes text a paused stream left waiting runs
// under the batcher's lock, so sends never overlap.
type batcher struct {
	send func(string) error
	cfg  Batching

	mu   sync.Mutex
	buf  strings.Builder
	last time.Time
	sent bool
	// timer flushes waiting text when no piece comes to do it; gen tells a
	// timer that was superseded (stopped too late) from the current one.
	timer *time.Timer
	gen   int
	// closed: the stream is over; a late timer sends nothing.
	closed bool
	// err is a timed flush's failure, returned by the next add or flush.
	err error
}

func newBatcher(cfg Batching, send func(string) error) *batcher {
	if cfg.Interval < 0 {
		cfg.Interval = 0
	}
	if cfg.Bytes <= 0 {
		cfg.Bytes = DefaultBatching.Bytes
	}
	return &batcher{send: send, cfg: cfg}
}

// add takes one piece and flushes when a batch is due; otherwise it makes
// sure a timer will.
func (b *batcher) add(s string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	b.buf.WriteString(s)
	wait := b.cfg.Interval - time.Since(b.last)
	if !b.sent || b.buf.Len() >= b.cfg.Bytes || wait <= 0 {
		return b.flushLocked()
	}
	if b.timer == nil {
		gen := b.gen
		b.timer = time.AfterFunc(wait, func() { b.onTimer(gen) })
	}
	return nil
}

// onTimer flushes the text that waited a whole interval.
func (b *batcher) onTimer(gen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.gen || b.closed || b.err != nil {
		return
	}
	b.timer = nil
	b.err = b.flushLocked()
}

// flush sends what is gathered, if anything, and returns a timed flush's
// failure if there was one.
func (b *batcher) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	return b.flushLocked()
}

// close ends the batcher: nothing is sent after it returns (text not
// flushed is dropped; flush first to keep it).
func (b *batcher) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.stopTimer()
}

func (b *batcher) stopTimer() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.gen++
}

func (b *batcher) flushLocked() error {
	b.stopTimer()
	if b.buf.Len() == 0 || b.closed {
		return nil
	}
	err := b.send(b.buf.String())
	b.buf.Reset()
	b.last = time.Now()
	b.sent = true
	return err
}
