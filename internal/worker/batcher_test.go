package worker

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// recorder is a batcher's send that keeps what it got.
type recorder struct {
	sent []string
	err  error
}

func (r *recorder) send(s string) error {
	r.sent = append(r.sent, s)
	return r.err
}

// noTimeFlush makes the batcher's interval flush impossible until its next
// flush, so that only the piece count decides (no dependence on speed).
func noTimeFlush(b *batcher) { b.last = time.Now().Add(time.Hour) }

func TestBatcherFirstPieceAtOnceThenBatches(t *testing.T) {
	t.Parallel()
	r := &recorder{}
	b := newBatcher(r.send)
	if err := b.flush(); err != nil || len(r.sent) != 0 {
		t.Fatalf("flush of nothing: %v, sent %q; want nothing sent", err, r.sent)
	}
	if err := b.add("p0 "); err != nil {
		t.Fatal(err)
	}
	if len(r.sent) != 1 || r.sent[0] != "p0 " {
		t.Fatalf("after the first piece sent %q, want it sent at once", r.sent)
	}
	noTimeFlush(b)

	// 70 more pieces: two full batches of flushPieces, 6 left over.
	var want strings.Builder
	want.WriteString("p0 ")
	for i := 1; i <= 70; i++ {
		p := "p" + strconv.Itoa(i) + " "
		want.WriteString(p)
		if err := b.add(p); err != nil {
			t.Fatal(err)
		}
		noTimeFlush(b) // a batch flush resets the clock
	}
	if len(r.sent) != 3 {
		t.Fatalf("sent %d batches after 71 pieces, want 3 (1 + 2 of %d)", len(r.sent), flushPieces)
	}
	for i, s := range r.sent[1:] {
		if n := strings.Count(s, " "); n != flushPieces {
			t.Errorf("batch %d has %d pieces, want %d", i+1, n, flushPieces)
		}
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if len(r.sent) != 4 || strings.Count(r.sent[3], " ") != 6 {
		t.Fatalf("flush sent %q, want the 6 pieces left", r.sent[3:])
	}
	if got := strings.Join(r.sent, ""); got != want.String() {
		t.Errorf("sent text %q, want %q", got, want.String())
	}
	if err := b.flush(); err != nil || len(r.sent) != 4 {
		t.Errorf("second flush: %v, %d batches; want nothing more sent", err, len(r.sent))
	}
}

func TestBatcherFlushesAfterInterval(t *testing.T) {
	t.Parallel()
	r := &recorder{}
	b := newBatcher(r.send)
	_ = b.add("a")
	noTimeFlush(b)
	_ = b.add("b")
	if len(r.sent) != 1 {
		t.Fatalf("sent %q, want only the first piece yet", r.sent)
	}
	b.last = time.Now().Add(-flushInterval) // the interval has passed
	_ = b.add("c")
	if len(r.sent) != 2 || r.sent[1] != "bc" {
		t.Fatalf("sent %q, want [a bc]", r.sent)
	}
}

func TestBatcherReturnsSendError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	r := &recorder{err: boom}
	b := newBatcher(r.send)
	if err := b.add("a"); !errors.Is(err, boom) {
		t.Fatalf("add of the first piece: %v, want the send error", err)
	}
	noTimeFlush(b)
	if err := b.add("b"); err != nil {
		t.Fatalf("add without a flush: %v, want nil", err)
	}
	if err := b.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush: %v, want the send error", err)
	}
	noTimeFlush(b)
	for range flushPieces - 1 {
		_ = b.add("x")
	}
	if err := b.add("x"); !errors.Is(err, boom) {
		t.Fatalf("add that fills a batch: %v, want the send error", err)
	}
}
