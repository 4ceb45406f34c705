package worker

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a batcher's send that keeps what it got and signals each
// send (the batcher's timer sends from its own goroutine).
type recorder struct {
	mu   sync.Mutex
	sent []string
	err  error
	got  chan string
}

func newRecorder() *recorder { return &recorder{got: make(chan string, 64)} }

func (r *recorder) send(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, s)
	r.got <- s
	return r.err
}

func (r *recorder) batches() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sent...)
}

// never is a batching whose interval never passes within a test: only the
// size of a batch decides.
var never = Batching{Interval: time.Hour, Bytes: 40}

func TestBatcherFirstPieceAtOnceThenBatchesBySize(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	b := newBatcher(never, r.send)
	defer b.close()
	if err := b.flush(); err != nil || len(r.batches()) != 0 {
		t.Fatalf("flush of nothing: %v, sent %q; want nothing sent", err, r.batches())
	}
	if err := b.add("p00 "); err != nil {
		t.Fatal(err)
	}
	if got := r.batches(); len(got) != 1 || got[0] != "p00 " {
		t.Fatalf("after the first piece sent %q, want it sent at once", got)
	}
	// 25 more pieces of 4 bytes: two full batches of 40 bytes, 20 left.
	var want strings.Builder
	want.WriteString("p00 ")
	for i := 10; i < 35; i++ {
		p := "p" + strconv.Itoa(i) + " "
		want.WriteString(p)
		if err := b.add(p); err != nil {
			t.Fatal(err)
		}
	}
	got := r.batches()
	if len(got) != 3 || len(got[1]) != 40 || len(got[2]) != 40 {
		t.Fatalf("sent %q after 26 pieces, want the first and two batches of 40 bytes", got)
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	got = r.batches()
	if len(got) != 4 || len(got[3]) != 20 {
		t.Fatalf("flush sent %q, want the 20 bytes left", got[3:])
	}
	if s := strings.Join(got, ""); s != want.String() {
		t.Errorf("sent text %q, want %q", s, want.String())
	}
	if err := b.flush(); err != nil || len(r.batches()) != 4 {
		t.Errorf("second flush: %v, %d batches; want nothing more sent", err, len(r.batches()))
	}
}

func TestBatcherFlushesOnAddAfterTheInterval(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	b := newBatcher(never, r.send)
	defer b.close()
	_ = b.add("a")
	_ = b.add("b")
	if got := r.batches(); len(got) != 1 {
		t.Fatalf("sent %q, want only the first piece yet", got)
	}
	b.mu.Lock()
	b.last = time.Now().Add(-time.Hour) // the interval has passed
	b.mu.Unlock()
	_ = b.add("c")
	if got := r.batches(); len(got) != 2 || got[1] != "bc" {
		t.Fatalf("sent %q, want [a bc]", got)
	}
}

// Text of a stream that pauses goes out when its interval has passed,
// without waiting for the next piece.
func TestBatcherFlushesWaitingTextWhenTheStreamPauses(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	b := newBatcher(Batching{Interval: time.Millisecond, Bytes: 1 << 20}, r.send)
	defer b.close()
	_ = b.add("a")
	<-r.got
	b.mu.Lock()
	b.last = time.Now() // so that "b" waits for the timer, however slow the machine
	b.mu.Unlock()
	if err := b.add("b"); err != nil {
		t.Fatal(err)
	}
	if s := <-r.got; s != "b" {
		t.Fatalf("timer sent %q, want b", s)
	}
	if err := b.flush(); err != nil || len(r.batches()) != 2 {
		t.Fatalf("flush after the timer: %v, batches %q; want nothing more", err, r.batches())
	}
}

// After close nothing is sent, not even by a timer that fires late.
func TestBatcherSendsNothingAfterClose(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	b := newBatcher(never, r.send)
	_ = b.add("a")
	_ = b.add("b") // waits, its timer armed
	b.mu.Lock()
	gen := b.gen
	b.mu.Unlock()
	b.close()
	b.onTimer(gen) // as if the timer had fired just as close ran
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if got := r.batches(); len(got) != 1 {
		t.Fatalf("sent %q after close, want only the first piece", got)
	}
}

func TestBatcherReturnsSendError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	r := newRecorder()
	r.err = boom
	b := newBatcher(never, r.send)
	defer b.close()
	if err := b.add("a"); !errors.Is(err, boom) {
		t.Fatalf("add of the first piece: %v, want the send error", err)
	}
	if err := b.add("b"); err != nil {
		t.Fatalf("add without a flush: %v, want nil", err)
	}
	if err := b.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush: %v, want the send error", err)
	}
	if err := b.add(strings.Repeat("x", 40)); !errors.Is(err, boom) {
		t.Fatalf("add that fills a batch: %v, want the send error", err)
	}
}

// A timed flush's failure comes back from the next add or flush: the
// stream stops as if its own call had failed.
func TestBatcherReturnsATimedFlushError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	r := newRecorder()
	b := newBatcher(never, r.send)
	defer b.close()
	_ = b.add("a")
	r.mu.Lock()
	r.err = boom
	r.mu.Unlock()
	_ = b.add("b")
	b.mu.Lock()
	gen := b.gen
	b.mu.Unlock()
	b.onTimer(gen)
	if err := b.add("c"); !errors.Is(err, boom) {
		t.Fatalf("add after a failed timed flush: %v, want its error", err)
	}
	if err := b.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush after a failed timed flush: %v, want its error", err)
	}
}
