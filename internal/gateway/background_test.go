package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestBackgroundCap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		maxInFlight int
		share       float64
		want        int
	}{
		{64, 0.25, 16},
		{4, 0.5, 2},
		{3, 0.1, 1}, // rounded down to 0: at least one
		{10, 0, 10}, // 0: no cap of its own
		{10, 1.5, 10},
		{10, -0.5, 10},
		{10, 1, 10},
		{10, 0.99, 9},
		{1, 0.25, 1},
	}
	for _, tt := range tests {
		if got := BackgroundCap(tt.maxInFlight, tt.share); got != tt.want {
			t.Errorf("BackgroundCap(%d, %g) = %d, want %d", tt.maxInFlight, tt.share, got, tt.want)
		}
	}
}

// blockingCaller holds every background request until release is closed
// or sends to it; other requests are answered at once. It counts the
// requests in flight.
type blockingCaller struct {
	entered chan struct{} // one value per background request that arrives
	release chan struct{}

	mu                   sync.Mutex
	calls, bgCalls       int
	inFlight, bgInFlight int
	peak, bgPeak         int
}

func newBlockingCaller() *blockingCaller {
	return &blockingCaller{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (f *blockingCaller) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	return f.Complete(ctx, r)
}

func (f *blockingCaller) Complete(ctx context.Context, r llm.Request) (llm.Response, error) {
	bg := llm.Background(ctx)
	f.mu.Lock()
	f.calls++
	f.inFlight++
	f.peak = max(f.peak, f.inFlight)
	if bg {
		f.bgCalls++
		f.bgInFlight++
		f.bgPeak = max(f.bgPeak, f.bgInFlight)
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		if bg {
			f.bgInFlight--
		}
		f.mu.Unlock()
	}()
	if bg {
		f.entered <- struct{}{}
		select {
		case <-f.release:
		case <-ctx.Done():
			return llm.Response{}, ctx.Err()
		}
	}
	return llm.Response{Model: r.Model, Text: "ok", PromptTokens: 1, CompletionTokens: 1}, nil
}

func (f *blockingCaller) stats() (calls, bgCalls, bgInFlight, bgPeak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.bgCalls, f.bgInFlight, f.bgPeak
}

// backgroundBundle is a gateway whose default provider has 4 requests in
// flight, half of them for background work, in front of a blockingCaller.
type backgroundBundle struct {
	g      *Gateway
	caller *blockingCaller
	db     redistest.DB
}

func setupBackground(t *testing.T) backgroundBundle {
	t.Helper()
	db := redistest.New(t)
	// Capacity waiters wake on releases, as in the worker.
	hub := events.NewHub(db.Client, limit.ReleasedChannel, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	f := newBlockingCaller()
	cfg := testConfig(&sim{url: "http://127.0.0.1:1"})
	cfg.MaxInFlight = 4
	cfg.CapacityWait = 5 * time.Second
	g := New(cfg, Options{
		Redis: db.Client, Wake: hub, Policy: &testPolicy, Log: slog.New(slog.DiscardHandler),
		Callers: map[string]Caller{config.DefaultProvider: f}, BackgroundShare: 0.5,
	})
	if c := g.providers[0].background.Cap(); c != 2 {
		t.Fatalf("background cap %d, want 2", c)
	}
	return backgroundBundle{g: g, caller: f, db: db}
}

// waitEntered waits for n background requests to reach the caller.
func (b backgroundBundle) waitEntered(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-b.caller.entered:
		case <-ctx.Done():
			t.Fatalf("background requests did not reach the provider: %v", ctx.Err())
		}
	}
}

// held returns the slots held of the provider's cap and of its background
// share.
func (b backgroundBundle) held(t *testing.T) (all, background int) {
	t.Helper()
	ctx := context.Background()
	all, err := limit.NewSemaphore(b.db.Client, config.DefaultProvider, 4, limit.SemaphoreOptions{}).Held(ctx)
	if err != nil {
		t.Fatal(err)
	}
	background, err = limit.NewSemaphore(b.db.Client, config.DefaultProvider+":background", 2, limit.SemaphoreOptions{}).Held(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return all, background
}

func TestBackgroundCallsNeverExceedTheirShare(t *testing.T) {
	t.Parallel()
	b := setupBackground(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	bg := llm.WithBackground(ctx)

	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := b.g.Complete(bg, req("m")); err != nil {
				errs <- err
			}
		})
	}
	// Two run; each one that ends lets exactly one more in.
	b.waitEntered(ctx, t, 2)
	for range n - 2 {
		b.caller.release <- struct{}{}
		b.waitEntered(ctx, t, 1)
	}
	close(b.caller.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("background call: %v", err)
	}
	calls, bgCalls, _, bgPeak := b.caller.stats()
	if calls != n || bgCalls != n {
		t.Errorf("%d requests (%d background), want %d background", calls, bgCalls, n)
	}
	if bgPeak != 2 {
		t.Errorf("%d background requests were in flight at once, want the share: 2", bgPeak)
	}
	if all, background := b.held(t); all != 0 || background != 0 {
		t.Errorf("%d slots and %d background slots held at the end, want none", all, background)
	}
}

func TestBackgroundShareLeavesRoomForOtherWork(t *testing.T) {
	t.Parallel()
	b := setupBackground(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a timing
	defer cancel()
	bg := llm.WithBackground(ctx)

	// Two background calls take the whole share.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			if _, err := b.g.Complete(bg, req("m")); err != nil {
				errs <- err
			}
		})
	}
	b.waitEntered(ctx, t, 2)
	if all, background := b.held(t); all != 2 || background != 2 {
		t.Fatalf("%d slots and %d background slots held, want 2 and 2", all, background)
	}

	// A third is refused once its short wait is over, having sent nothing,
	// although the provider has room.
	start := time.Now()
	resp, err := b.g.Complete(llm.WithCapacityWait(bg, 50*time.Millisecond), req("m"))
	if !errors.Is(err, llm.ErrNoCapacity) || resp.Attempts != 0 {
		t.Fatalf("third background call: %+v, %v; want ErrNoCapacity with no attempt", resp, err)
	}
	// Not the gateway's capacity wait of 5 s: the context's 50 ms.
	if d := time.Since(start); d < 50*time.Millisecond || d >= 5*time.Second {
		t.Errorf("the third background call gave up after %s, want the 50ms wait", d)
	}
	if !strings.Contains(err.Error(), "background") {
		t.Errorf("error %q does not say the background share is full", err)
	}
	if _, _, err := b.g.Admit(llm.WithCapacityWait(bg, 50*time.Millisecond), req("m")); !errors.Is(err, llm.ErrNoCapacity) {
		t.Errorf("background Admit with the share taken = %v, want ErrNoCapacity", err)
	}

	// Other work still gets through, at once.
	// (With 50 ms to wait, an answer means it did not wait for the share.)
	resp, err = b.g.Complete(llm.WithCapacityWait(ctx, 50*time.Millisecond), req("m"))
	if err != nil || resp.Text != "ok" {
		t.Fatalf("other work while the share is taken: %+v, %v", resp, err)
	}
	calls, bgCalls, bgInFlight, _ := b.caller.stats()
	if calls != 3 || bgCalls != 2 || bgInFlight != 2 {
		t.Errorf("provider saw %d requests, %d background, %d of them in flight; want 3, 2, 2", calls, bgCalls, bgInFlight)
	}

	// Once the background calls end their slots are free again.
	close(b.caller.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("background call: %v", err)
	}
	if all, background := b.held(t); all != 0 || background != 0 {
		t.Errorf("%d slots and %d background slots held after the calls, want none", all, background)
	}
	for i := range 2 {
		if _, err := b.g.Complete(llm.WithCapacityWait(bg, 50*time.Millisecond), req("m")); err != nil {
			t.Errorf("background call %d after the share was freed: %v", i, err)
		}
	}
}
