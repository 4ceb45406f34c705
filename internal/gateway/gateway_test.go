package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/breaker"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// sim runs the simulator for one test: models sim-a and sim-b answer in
// 50 ms, a 429 asks for 200 ms.
type sim struct {
	*llmsim.Server
	url string
}

func newSim(t *testing.T) *sim {
	t.Helper()
	s := llmsim.New(llmsim.Config{
		TTFT:       10 * time.Millisecond,
		Latency:    map[string]time.Duration{"sim-a": 50 * time.Millisecond, "sim-b": 50 * time.Millisecond, "sim-slow": time.Second},
		RetryAfter: 200 * time.Millisecond,
	})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close) // first: ends hanging answers
	return &sim{Server: s, url: srv.URL}
}

// fault scripts the next count requests of model.
func (s *sim) fault(t *testing.T, model string, kind llmsim.FaultKind, count int) {
	t.Helper()
	if err := s.SetRuntimeFaults(llmsim.FaultRule{Model: model, Faults: []llmsim.Fault{{Kind: kind, Rate: 1}}, Count: count}); err != nil {
		t.Fatal(err)
	}
}

func (s *sim) requests(model string) int64 { return s.Stats().Models[model].Requests }

// testPolicy retries fast.
var testPolicy = llm.Policy{MaxAttempts: 3, Base: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxWait: time.Second}

func testConfig(s *sim) config.LLM {
	return config.LLM{
		BaseURL: s.url + "/v1", APIType: "openai",
		// Timeouts far above the simulator's latencies: a loaded machine
		// must not turn an answer into a timeout. Tests of timeouts set
		// their own.
		Timeout: 10 * time.Second, FirstTokenTimeout: 10 * time.Second,
		MaxInFlight: 8, MaxAttempts: 3, RetryMaxWait: time.Second, CapacityWait: 300 * time.Millisecond,
		BreakerFailures: 100, BreakerOpenFor: 300 * time.Millisecond, BreakerTrials: 1,
		Fallbacks: map[string][]string{},
	}
}

func newGateway(t *testing.T, rdb redis.UniversalClient, cfg config.LLM) *Gateway {
	t.Helper()
	p := testPolicy
	return New(cfg, Options{Redis: rdb, Policy: &p, Log: slog.New(slog.DiscardHandler)})
}

func req(model string) llm.Request {
	return llm.Request{Model: model, System: "As of 2024-05-01.", User: "What are the best AI models?", MaxTokens: 50}
}

func stream(g *Gateway, model string) (llm.Response, error) {
	return g.Stream(context.Background(), req(model), func(string) error { return nil })
}

func TestFaultsAreRetried(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		kind      llmsim.FaultKind
		count     int
		stream    bool
		requests  int64
		minTaking time.Duration
	}{
		{"429 honours Retry-After", llmsim.FaultRateLimit, 2, true, 3, 400 * time.Millisecond},
		{"500", llmsim.FaultServerError, 2, true, 3, 0},
		{"503", llmsim.FaultUnavailable, 1, false, 2, 0},
		{"hang past the first-token timeout", llmsim.FaultHang, 1, true, 2, time.Second},
		{"hang of a non-streaming call", llmsim.FaultHang, 1, false, 2, 0},
		{"broken answer of a non-streaming call", llmsim.FaultBreak, 1, false, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t)
			cfg := testConfig(s)
			if tt.kind == llmsim.FaultHang {
				// The hanging request ends at the timeout; the next one,
				// answered in 50 ms, has far more than it needs.
				if tt.stream {
					cfg.FirstTokenTimeout = time.Second
				} else {
					cfg.Timeout = time.Second
				}
			}
			g := newGateway(t, redistest.New(t).Client, cfg)
			s.fault(t, "sim-a", tt.kind, tt.count)
			start := time.Now()
			var resp llm.Response
			var err error
			if tt.stream {
				resp, err = stream(g, "sim-a")
			} else {
				resp, err = g.Complete(context.Background(), req("sim-a"))
			}
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if resp.Attempts != int(tt.requests) || resp.Requested != "sim-a" || resp.Text == "" {
				t.Errorf("response: %d attempts, model %q, text %q; want %d attempts by sim-a", resp.Attempts, resp.Requested, resp.Text, tt.requests)
			}
			if n := s.requests("sim-a"); n != tt.requests {
				t.Errorf("the simulator got %d requests, want %d", n, tt.requests)
			}
			if d := time.Since(start); d < tt.minTaking {
				t.Errorf("the call took %s, want at least %s (the waits asked for)", d, tt.minTaking)
			}
		})
	}
}

func TestAttemptsAreBounded(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	g := newGateway(t, redistest.New(t).Client, testConfig(s))
	s.fault(t, "sim-a", llmsim.FaultUnavailable, 0)
	resp, err := stream(g, "sim-a")
	var se *llm.StatusError
	if !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("error = %v, want the 503", err)
	}
	if !strings.Contains(err.Error(), "sim-a (3 attempts)") {
		t.Errorf("error %q does not say what was tried", err)
	}
	if resp.Attempts != 3 || s.requests("sim-a") != 3 {
		t.Errorf("%d attempts, %d requests; want 3 and 3", resp.Attempts, s.requests("sim-a"))
	}
	if !llm.Retryable(err) {
		t.Error("a 503 after the attempts is not retryable (the task's next run may try again)")
	}
}

func TestFallbackWhenRetriesAreSpent(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.Fallbacks = map[string][]string{"sim-a": {"sim-b"}}
	g := newGateway(t, redistest.New(t).Client, cfg)
	s.fault(t, "sim-a", llmsim.FaultServerError, 0)
	resp, err := stream(g, "sim-a")
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if resp.Requested != "sim-b" || resp.Model != "sim-b" || resp.Attempts != 4 {
		t.Errorf("answered by %q (%q) after %d attempts; want sim-b after 4", resp.Requested, resp.Model, resp.Attempts)
	}
	if a, b := s.requests("sim-a"), s.requests("sim-b"); a != 3 || b != 1 {
		t.Errorf("requests: sim-a %d, sim-b %d; want 3 and 1", a, b)
	}
}

func TestLongRetryAfterGoesToTheFallbackOrBack(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	// The simulator asks for 200 ms; the gateway waits at most 100 ms.
	p := testPolicy
	p.MaxWait = 100 * time.Millisecond
	rdb := redistest.New(t).Client
	g := New(cfg, Options{Redis: rdb, Policy: &p})
	s.fault(t, "sim-a", llmsim.FaultRateLimit, 0)
	resp, err := stream(g, "sim-a")
	if d, ok := llm.RetryAfter(err); !ok || d != 200*time.Millisecond {
		t.Fatalf("error %v with hint %s, want the 429 and its Retry-After", err, d)
	}
	if resp.Attempts != 1 || s.requests("sim-a") != 1 {
		t.Errorf("%d attempts, %d requests; want 1: the long wait is the queue's", resp.Attempts, s.requests("sim-a"))
	}
	cfg.Fallbacks = map[string][]string{"sim-a": {"sim-b"}}
	g = New(cfg, Options{Redis: rdb, Policy: &p})
	resp, err = stream(g, "sim-a")
	if err != nil || resp.Requested != "sim-b" {
		t.Fatalf("with a fallback: %+v, %v; want sim-b to answer", resp, err)
	}
}

func TestBrokenStreamAfterTextIsNotRetriedInProcess(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	g := newGateway(t, redistest.New(t).Client, testConfig(s))
	s.fault(t, "sim-a", llmsim.FaultBreak, 1)
	var text strings.Builder
	resp, err := g.Stream(context.Background(), req("sim-a"), func(p string) error {
		text.WriteString(p)
		return nil
	})
	if !errors.Is(err, llm.ErrBrokenStream) || !llm.Retryable(err) {
		t.Fatalf("error = %v, want a retryable broken stream", err)
	}
	if resp.Attempts != 1 || s.requests("sim-a") != 1 || text.Len() == 0 {
		t.Errorf("%d attempts, %d requests, %d characters passed on; want 1, 1 and some", resp.Attempts, s.requests("sim-a"), text.Len())
	}
}

// fakeCaller answers every request with err.
type fakeCaller struct {
	mu  sync.Mutex
	n   int
	err error
}

func (f *fakeCaller) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	return f.Complete(ctx, r)
}

func (f *fakeCaller) Complete(context.Context, llm.Request) (llm.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return llm.Response{}, f.err
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	for _, code := range []int{400, 401, 404, 422} {
		f := &fakeCaller{err: &llm.StatusError{StatusCode: code, Message: "no"}}
		cfg := testConfig(&sim{url: "http://127.0.0.1:1"})
		cfg.Fallbacks = map[string][]string{"m": {"n"}}
		cfg.BreakerFailures = 1
		g := New(cfg, Options{Redis: redistest.New(t).Client, Policy: &testPolicy, Callers: map[string]Caller{config.DefaultProvider: f}})
		for range 3 {
			resp, err := g.Complete(context.Background(), req("m"))
			var se *llm.StatusError
			if !errors.As(err, &se) || se.StatusCode != code || resp.Attempts != 1 {
				t.Fatalf("%d: %+v, %v; want the error after 1 attempt", code, resp, err)
			}
		}
		// Three calls, one request each, no fallback, and the breaker (of
		// threshold 1) did not open: client errors do not trip it.
		if f.n != 3 {
			t.Errorf("%d: %d requests, want 3", code, f.n)
		}
	}
}

// An open breaker refuses across processes without sending anything; a
// call that may not wait (a capacity wait of zero) fails at once, and one
// that may waits until the breaker lets requests through again.
func TestBreakerRefusesAndRecovers(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.MaxAttempts = 1
	cfg.BreakerFailures = 2
	cfg.BreakerOpenFor = 500 * time.Millisecond
	p := testPolicy
	p.MaxAttempts = 1
	db := redistest.New(t)
	g1 := New(cfg, Options{Redis: db.Client, Policy: &p})
	// Another worker process: its own client and gateway.
	g2 := New(cfg, Options{Redis: db.NewClient(t), Policy: &p})
	noWait := llm.WithCapacityWait(context.Background(), 0)

	s.fault(t, "sim-a", llmsim.FaultUnavailable, 0)
	for range 2 {
		if _, err := stream(g1, "sim-a"); err == nil {
			t.Fatal("a call succeeded against a failing model")
		}
	}
	if n := s.requests("sim-a"); n != 2 {
		t.Fatalf("%d requests before the breaker opened, want 2", n)
	}
	// Open: neither process sends anything.
	for _, g := range []*Gateway{g1, g2} {
		resp, err := g.Stream(noWait, req("sim-a"), func(string) error { return nil })
		if !errors.Is(err, llm.ErrCircuitOpen) || resp.Attempts != 0 {
			t.Fatalf("call while open: %+v, %v; want ErrCircuitOpen with no attempt", resp, err)
		}
		if d, ok := llm.RetryAfter(err); !ok || d <= 0 {
			t.Errorf("open error without a hint: %s, %v", d, ok)
		}
		if _, _, err := g.Admit(noWait, req("sim-a")); !errors.Is(err, llm.ErrCircuitOpen) {
			t.Errorf("Admit while open = %v", err)
		}
	}
	if n := s.requests("sim-a"); n != 2 {
		t.Fatalf("%d requests while the breaker was open, want still 2", n)
	}
	// The provider recovers. A call that may wait (far longer than the
	// open time) is let through as the breaker's trial, which closes it.
	s.ClearRuntimeFaults()
	wait := llm.WithCapacityWait(context.Background(), time.Minute)
	if _, err := g2.Stream(wait, req("sim-a"), func(string) error { return nil }); err != nil {
		t.Fatalf("a call waiting out the open time: %v", err)
	}
	if _, err := g1.Stream(wait, req("sim-a"), func(string) error { return nil }); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if n := s.requests("sim-a"); n != 4 {
		t.Errorf("%d requests in all, want 4 (2 failures, the trial, one more)", n)
	}
}

func TestOpenBreakerFallsBack(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.BreakerFailures = 1
	cfg.BreakerOpenFor = time.Minute
	cfg.Fallbacks = map[string][]string{"sim-a": {"sim-b"}}
	g := newGateway(t, redistest.New(t).Client, cfg)
	s.fault(t, "sim-a", llmsim.FaultUnavailable, 1)
	resp, err := stream(g, "sim-a") // opens sim-a's breaker, answered by sim-b
	if err != nil || resp.Requested != "sim-b" || resp.Attempts != 2 {
		t.Fatalf("first call: %+v, %v", resp, err)
	}
	resp, err = stream(g, "sim-a")
	if err != nil || resp.Requested != "sim-b" || resp.Attempts != 1 {
		t.Fatalf("second call: %+v, %v; want sim-b at once", resp, err)
	}
	if a := s.requests("sim-a"); a != 1 {
		t.Errorf("sim-a got %d requests, want 1 (its breaker is open)", a)
	}
	// Admit picks the fallback too, and the call uses that admission.
	ctx, release, err := g.Admit(context.Background(), req("sim-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	resp, err = g.Stream(ctx, req("sim-a"), func(string) error { return nil })
	if err != nil || resp.Requested != "sim-b" {
		t.Fatalf("admitted call: %+v, %v", resp, err)
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.MaxInFlight = 1
	cfg.CapacityWait = 100 * time.Millisecond
	db := redistest.New(t)
	g := newGateway(t, db.Client, cfg)

	ctx, release, err := g.Admit(context.Background(), req("sim-a"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = g.Admit(context.Background(), req("sim-b"))
	if !errors.Is(err, llm.ErrNoCapacity) || !errors.Is(err, limit.ErrNoCapacity) {
		t.Fatalf("second Admit = %v, want no capacity", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("Admit gave up after %s, want the capacity wait", d)
	}
	resp, err := g.Complete(context.Background(), req("sim-b"))
	if !errors.Is(err, llm.ErrNoCapacity) || resp.Attempts != 0 || s.requests("sim-b") != 0 {
		t.Fatalf("call without capacity: %+v, %v; want ErrNoCapacity, nothing sent", resp, err)
	}
	// The admitted call runs on its admission and frees it.
	if _, err := g.Complete(ctx, req("sim-a")); err != nil {
		t.Fatal(err)
	}
	release() // after the call: nothing
	if _, err := g.Complete(context.Background(), req("sim-b")); err != nil {
		t.Fatalf("after the admitted call: %v", err)
	}
	// An admission not used is freed by its release.
	_, release, err = g.Admit(context.Background(), req("sim-a"))
	if err != nil {
		t.Fatal(err)
	}
	release()
	release()
	if _, err := g.Complete(context.Background(), req("sim-b")); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if held, _ := limit.NewSemaphore(db.Client, config.DefaultProvider, 1, limit.SemaphoreOptions{}).Held(context.Background()); held != 0 {
		t.Errorf("%d slots held at the end", held)
	}
}

func TestCapOverConcurrentCalls(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.MaxInFlight = 3
	cfg.CapacityWait = 5 * time.Second
	db := redistest.New(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		// Two "processes", each with its own client and gateway.
		rdb := db.Client
		if i%2 == 1 {
			opt, _ := redis.ParseURL(db.URL)
			c := redis.NewClient(opt)
			defer c.Close()
			rdb = c
		}
		g := newGateway(t, rdb, cfg)
		wg.Go(func() {
			if _, err := stream(g, "sim-a"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Stats().Models["sim-a"]
	// The cap is never passed. (Whether it is reached depends on how the
	// 20 goroutines are scheduled, which a loaded machine does not promise.)
	if st.PeakInFlight < 1 || st.PeakInFlight > 3 || st.Requests != 20 {
		t.Errorf("simulator: %d requests, peak %d in flight; want 20, never more than the cap 3", st.Requests, st.PeakInFlight)
	}
}

func TestProvidersAreRoutedByModel(t *testing.T) {
	t.Parallel()
	a, b := newSim(t), newSim(t)
	cfg := testConfig(a)
	cfg.Providers = []config.Provider{
		{Name: "pa", BaseURL: a.url + "/v1", APIType: "openai", MaxInFlight: 2},
		{Name: "pb", BaseURL: b.url + "/v1", APIType: "openai", MaxInFlight: 2, Models: []string{"sim-b"}},
	}
	g := newGateway(t, redistest.New(t).Client, cfg)
	for _, m := range []string{"sim-a", "sim-b", "other"} {
		if _, err := g.Complete(context.Background(), req(m)); err != nil {
			t.Fatal(err)
		}
	}
	if a.Stats().Total.Requests != 2 || a.requests("sim-a") != 1 || a.requests("other") != 1 || b.Stats().Total.Requests != 1 || b.requests("sim-b") != 1 {
		t.Errorf("provider a got %+v, b got %+v", a.Stats().Models, b.Stats().Models)
	}
}

func TestCallerCancelDoesNotTrip(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.BreakerFailures = 1
	db := redistest.New(t)
	g := newGateway(t, db.Client, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := g.Stream(ctx, req("sim-slow"), func(string) error { return nil })
		done <- err
	}()
	if err := s.WaitInFlight(context.Background(), "sim-slow", 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	b, err := breaker.NewSet(breaker.NewStore(db.Client, "tt:breaker:"), breaker.Settings{}).Get(config.DefaultProvider + "/sim-slow")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.State(); err != nil || st.String() != "closed" {
		t.Errorf("breaker %v (%v) after a cancelled call, want closed", st, err)
	}
}

func TestRequestsPerMinute(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.RPM = 2
	cfg.CapacityWait = 100 * time.Millisecond
	g := newGateway(t, redistest.New(t).Client, cfg)
	for range 2 {
		if _, err := g.Complete(context.Background(), req("sim-a")); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := g.Complete(context.Background(), req("sim-a"))
	if !errors.Is(err, llm.ErrNoCapacity) || resp.Attempts != 0 {
		t.Fatalf("third call in a minute with RPM 2: %+v, %v; want ErrNoCapacity", resp, err)
	}
	if d, ok := llm.RetryAfter(err); !ok || d < 20*time.Second || d > 31*time.Second {
		t.Errorf("hint %s, %v; want about 30s (one request every 30s)", d, ok)
	}
	if !strings.Contains(err.Error(), "2 requests per minute") {
		t.Errorf("error %q does not name the limit", err)
	}
	if n := s.requests("sim-a"); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// A request cut short by the caller's deadline ends as a retryable timeout
// of ours, not the caller's bare deadline, and does not count against the
// provider.
func TestCallerDeadlineLeavesAMarginAndARetryableError(t *testing.T) {
	t.Parallel()
	s := newSim(t)
	cfg := testConfig(s)
	cfg.BreakerFailures = 1
	cfg.FirstTokenTimeout = 0
	db := redistest.New(t)
	g := newGateway(t, db.Client, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), deadlineMargin+300*time.Millisecond)
	defer cancel()
	resp, err := g.Stream(ctx, req("sim-slow"), func(string) error { return nil })
	if !errors.Is(err, llm.ErrTimeout) || !llm.Retryable(err) || ctx.Err() != nil {
		t.Fatalf("error %v (context %v); want a retryable timeout before the caller's deadline", err, ctx.Err())
	}
	if resp.Attempts != 1 {
		t.Errorf("%d attempts; want one request, cut short", resp.Attempts)
	}
	b, err := breaker.NewSet(breaker.NewStore(db.Client, "tt:breaker:"), breaker.Settings{}).Get(config.DefaultProvider + "/sim-slow")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.State(); err != nil || st.String() != "closed" {
		t.Errorf("breaker %v (%v), want closed: our own deadline is no provider failure", st, err)
	}
}
