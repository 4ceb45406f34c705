package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// answer is one scripted answer of a fakeProvider.
type answer struct {
	// text is streamed through onText (in one piece), then answered.
	text string
	// err ends the request, after its text.
	err error
	// block holds the request until its context ends; then it ends with
	// err, or when err is nil with what llm.Client would return.
	block bool
}

// fakeProvider answers each request with the next answer of its script;
// the last one repeats. It reports every request on entered (buffered: a
// test reads what it waits for).
type fakeProvider struct {
	entered chan llm.Request

	mu       sync.Mutex
	script   []answer
	requests int
}

func newFakeProvider(script ...answer) *fakeProvider {
	return &fakeProvider{entered: make(chan llm.Request, 1000), script: script}
}

// set replaces the script.
func (f *fakeProvider) set(script ...answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = script
}

func (f *fakeProvider) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *fakeProvider) next(r llm.Request) answer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	var a answer
	if len(f.script) > 0 {
		a = f.script[0]
		if len(f.script) > 1 {
			f.script = f.script[1:]
		}
	}
	f.entered <- r
	return a
}

func (f *fakeProvider) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	a := f.next(r)
	resp := llm.Response{Model: r.Model, Requested: r.Model, Attempts: 1}
	if a.text != "" {
		resp.Text = a.text
		if err := onText(a.text); err != nil {
			return resp, err // as llm.Client does: the caller's error as is
		}
	}
	return f.end(ctx, a, resp)
}

func (f *fakeProvider) Complete(ctx context.Context, r llm.Request) (llm.Response, error) {
	a := f.next(r)
	return f.end(ctx, a, llm.Response{Model: r.Model, Requested: r.Model, Attempts: 1, Text: a.text})
}

func (f *fakeProvider) end(ctx context.Context, a answer, resp llm.Response) (llm.Response, error) {
	if a.block {
		<-ctx.Done()
		if a.err == nil {
			// As llm.Client: the cause when it is a timeout (the
			// gateway's own cut), else the context's error.
			if cause := context.Cause(ctx); errors.Is(cause, llm.ErrTimeout) {
				return resp, cause
			}
			return resp, ctx.Err()
		}
	}
	if a.err == nil {
		resp.PromptTokens, resp.CompletionTokens = 1, 1
	}
	return resp, a.err
}

// fakeBundle is a gateway in front of a fakeProvider, on a database of
// its own.
type fakeBundle struct {
	g *Gateway
	f *fakeProvider
	// waits receives a value each time a call or an admission starts
	// waiting for a breaker.
	waits chan struct{}
}

// setupFake returns a gateway whose default provider is a fakeProvider.
// Its breakers open on the first counted failure and stay open for an
// hour, and rejected answers are asked again once; tweak adjusts both
// before the gateway is made.
func setupFake(t *testing.T, tweak func(*config.LLM, *llm.Policy)) fakeBundle {
	t.Helper()
	cfg := testConfig(&sim{url: "http://127.0.0.1:1"})
	cfg.BreakerFailures = 1
	cfg.BreakerOpenFor = time.Hour
	cfg.CapacityWait = time.Minute
	p := testPolicy
	p.BadAnswerRetries = 1
	if tweak != nil {
		tweak(&cfg, &p)
	}
	f := newFakeProvider()
	g := New(cfg, Options{
		Redis: redistest.New(t).Client, Policy: &p, Log: slog.New(slog.DiscardHandler),
		Callers: map[string]Caller{config.DefaultProvider: f},
	})
	waits := make(chan struct{}, 100)
	g.waiting = func() {
		select {
		case waits <- struct{}{}:
		default:
		}
	}
	return fakeBundle{g: g, f: f, waits: waits}
}

var models atomic.Int64

// uniqueModel names a model no other test, nor another run of the same
// test (go test -count), uses: the collectors are the process'.
func uniqueModel(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, models.Add(1))
}

// requestsOf reads metrics.LLMRequests for the default provider's model.
// Tests use models of their own (uniqueModel).
func requestsOf(t *testing.T, model, outcome string) float64 {
	t.Helper()
	// prometheus/testutil.ToFloat64 does the same, but needs a module
	// go.mod does not list.
	var m dto.Metric
	if err := metrics.LLMRequests.WithLabelValues(config.DefaultProvider, model, outcome).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// noWait asks calls to fail at once rather than wait for capacity or a
// breaker.
func noWait() context.Context { return llm.WithCapacityWait(context.Background(), 0) }

// admits tells whether the breaker of model lets a request through now:
// a call that may not wait succeeds, or is refused by the breaker.
func (b fakeBundle) admits(t *testing.T, model string) bool {
	t.Helper()
	b.f.set(answer{text: "fine"})
	_, err := b.g.Complete(noWait(), llm.Request{Model: model, User: "still there?"})
	switch {
	case err == nil:
		return true
	case errors.Is(err, llm.ErrCircuitOpen):
		return false
	}
	t.Fatalf("probing the breaker of %s: %v", model, err)
	return false
}
