package worker

import (
	"strings"
	"time"
)

// Batching of streamed text: the first piece goes out at once (time to first
// text), later ones every flushInterval or flushPieces pieces, whichever comes
// first, so that Redis work per job stays bounded.
const (
	flushInterval = 50 * time.Millisecond
	flushPieces   = 32
)

// batcher gathers text pieces and hands them to send in batches. Not safe for
// concurrent use.
type batcher struct {
	send   func(string) error
	buf    strings.Builder
	pieces int
	last   time.Time
	sent   bool
}

func newBatcher(send func(string) error) *batcher { return &batcher{send: send} }

// add takes one piece and flushes when a batch is due.
func (b *batcher) add(s string) error {
	b.buf.WriteString(s)
	b.pieces++
	if !b.sent || b.pieces >= flushPieces || time.Since(b.last) >= flushInterval {
		return b.flush()
	}
	return nil
}

// flush sends what is gathered, if anything.
func (b *batcher) flush() error {
	if b.buf.Len() == 0 {
		return nil
	}
	err := b.send(b.buf.String())
	b.buf.Reset()
	b.pieces = 0
	b.last = time.Now()
	b.sent = true
	return err
}
