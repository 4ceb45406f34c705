// Package gateway is how a worker process calls LLMs: every call goes
// through the model's provider (from configuration), its circuit breaker,
// its cluster-wide capacity (in-flight cap, requests and tokens per minute),
// the retry policy and the model's fallbacks, in that order, and the
// response says which model answered after how many requests.
//
// Guarantees:
//   - No request is sent while the model's breaker is open, nor beyond the
//     provider's limits (see package limit).
//   - One call sends at most Policy.MaxAttempts requests per model of its
//     chain (the model, then its fallbacks); waits between them are at most
//     Policy.MaxWait, and each wait for capacity at most the capacity wait.
//   - A call that has passed text to its caller is never retried: the text
//     cannot be taken back. It fails, and the task's next run starts over.
//   - Errors that another attempt cannot fix (4xx but 408 and 429) end the
//     call at once, without fallback.
//   - Without capacity the call fails with llm.ErrNoCapacity, having sent
//     nothing on that attempt: the task should go back to the queue.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/timetravel-ai/timetravel/internal/breaker"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// Caller sends one request to one provider (an *llm.Client).
type Caller interface {
	Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error)
	Complete(ctx context.Context, r llm.Request) (llm.Response, error)
}

type provider struct {
	name   string
	client Caller
	gate   *limit.Gate
	// background caps the requests of background work in flight at the
	// provider, across the cluster: its share of the gate's cap.
	background *limit.Semaphore
}

// Gateway is safe for concurrent use; create one per process.
type Gateway struct {
	providers    []*provider
	byModel      map[string]*provider
	fallbacks    map[string][]string
	breakers     *breaker.Set
	policy       llm.Policy
	capacityWait time.Duration
	log          *slog.Logger
}

// Options are the parts of a Gateway that do not come from configuration.
type Options struct {
	// Redis holds the limits and the breakers' state.
	Redis redis.UniversalClient
	// Wake wakes capacity waiters when a slot is freed: a Waker on
	// limit.ReleasedChannel (an events.Hub). Nil: waiters poll.
	Wake limit.Waker
	// Log receives the gateway's logs; calls log to llm.LoggerFrom(ctx).
	Log *slog.Logger
	// Policy overrides the retry policy made from the configuration.
	Policy *llm.Policy
	// LeaseTTL overrides limit.DefaultLeaseTTL (tests).
	LeaseTTL time.Duration
	// Callers overrides the provider clients, by provider name (tests).
	Callers map[string]Caller
	// BackgroundShare is the share of each provider's in-flight cap that
	// background work (llm.WithBackground) may use, at least one request;
	// 0 means 1 (no cap of its own).
	BackgroundShare float64
}

// New returns the Gateway of the providers, fallbacks, limits and breaker
// settings of cfg (config.LoadFrom resolved them). The provider clients
// share one pooled transport.
func New(cfg config.LLM, o Options) *Gateway {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	policy := llm.DefaultPolicy(cfg.MaxAttempts, cfg.RetryMaxWait)
	if o.Policy != nil {
		policy = *o.Policy
	}
	g := &Gateway{
		byModel:      map[string]*provider{},
		fallbacks:    cfg.Fallbacks,
		policy:       policy,
		capacityWait: cfg.CapacityWait,
		log:          o.Log,
	}
	providers := cfg.Providers
	if len(providers) == 0 {
		providers = []config.Provider{{
			Name: config.DefaultProvider, BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, APIType: cfg.APIType,
			APIVersion: cfg.APIVersion, MaxInFlight: cfg.MaxInFlight, RPM: cfg.RPM, TPM: cfg.TPM,
		}}
	}
	transport := llm.NewTransport()
	for _, pc := range providers {
		client := o.Callers[pc.Name]
		if client == nil {
			client = llm.NewClient(llm.Options{
				BaseURL: pc.BaseURL, APIKey: pc.APIKey, APIType: pc.APIType, APIVersion: pc.APIVersion,
				Timeout: cfg.Timeout, FirstTokenTimeout: cfg.FirstTokenTimeout, Transport: transport,
			})
		}
		semOpts := limit.SemaphoreOptions{TTL: o.LeaseTTL, Wake: o.Wake, Log: o.Log}
		p := &provider{
			name:       pc.Name,
			client:     client,
			gate:       limit.NewGate(o.Redis, pc.Name, limit.Limits{MaxInFlight: pc.MaxInFlight, RPM: pc.RPM, TPM: pc.TPM}, semOpts),
			background: limit.NewSemaphore(o.Redis, pc.Name+":background", BackgroundCap(pc.MaxInFlight, o.BackgroundShare), semOpts),
		}
		g.providers = append(g.providers, p)
		for _, m := range pc.Models {
			g.byModel[m] = p
		}
	}
	g.breakers = breaker.NewSet(breaker.NewStore(o.Redis, "tt:breaker:"), breaker.Settings{
		Failures:     uint32(max(cfg.BreakerFailures, 1)),
		FailureRatio: cfg.BreakerFailureRatio,
		Window:       cfg.BreakerWindow,
		OpenFor:      cfg.BreakerOpenFor,
		TrialTTL:     cfg.Timeout + 30*time.Second,
		IsFailure:    countsAsFailure,
		IsExcluded:   excluded,
		OnStateChange: func(name string, from, to breaker.State) {
			o.Log.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			prov, model, _ := strings.Cut(name, "/")
			metrics.BreakerState.WithLabelValues(prov, model).Set(metrics.BreakerStateValue(to.String()))
		},
	})
	return g
}

// BackgroundCap is the number of requests background work may have in
// flight at a provider whose cap is maxInFlight: share of it, rounded
// down, at least 1.
func BackgroundCap(maxInFlight int, share float64) int {
	if share <= 0 || share > 1 {
		share = 1
	}
	return max(int(float64(maxInFlight)*share), 1)
}

// errNotSent is the outcome of an admission that sent no request.
var errNotSent = errors.New("request not sent")

// countsAsFailure tells the outcomes that count towards opening a breaker:
// throttling, server errors, timeouts, broken streams, network errors.
// Client errors (400, 401, 404, ...) mean the provider works.
func countsAsFailure(err error) bool {
	return llm.Retryable(err) && !errors.Is(err, llm.ErrNoCapacity) && !errors.Is(err, llm.ErrCircuitOpen)
}

// excluded tells the outcomes that say nothing about the provider: no
// request sent, or the caller gave up (cancellation, its own deadline, a
// request cut short of it).
func excluded(err error) bool {
	if errors.Is(err, errNotSent) || errors.Is(err, errOutOfTime) {
		return true
	}
	if errors.Is(err, llm.ErrTimeout) {
		return false
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// route returns the provider of model: the one that lists it, else the
// first.
func (g *Gateway) route(model string) *provider {
	if p, ok := g.byModel[model]; ok {
		return p
	}
	return g.providers[0]
}

// chain returns the models a call of model may use, in order.
func (g *Gateway) chain(model string) []string {
	return append([]string{model}, g.fallbacks[model]...)
}

// estimate is the tokens a request may use: its prompt (4 characters a
// token) and its answer's bound.
func estimate(r llm.Request) int {
	out := r.MaxTokens
	if out <= 0 {
		out = 1024
	}
	return (len(r.System)+len(r.User))/4 + out
}

// ticket is one admitted request: the breaker's admission and a pass
// through the provider's gate.
type ticket struct {
	done func(error)
	pass *limit.Pass
	// bg is background work's slot of its share; nil for other work.
	bg *limit.Lease
}

// leave reports the request's outcome and frees its capacity.
func (t *ticket) leave(err error, resp llm.Response) {
	used := -1
	if err == nil && resp.PromptTokens+resp.CompletionTokens > 0 {
		used = resp.PromptTokens + resp.CompletionTokens
	}
	t.pass.Leave(used)
	t.releaseBackground()
	t.done(err)
}

// cancel frees a ticket whose request was never sent.
func (t *ticket) cancel() {
	t.pass.Cancel()
	t.releaseBackground()
	t.done(errNotSent)
}

func (t *ticket) releaseBackground() {
	if t.bg == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = t.bg.Release(ctx) // a lost release expires with the lease
	t.bg = nil
}

// enter admits one request of model at its provider: the breaker first
// (an open one fails fast, with llm.ErrCircuitOpen), then capacity, waited
// for up to the capacity wait (or llm.CapacityWaitFrom(ctx)), else
// llm.ErrNoCapacity.
func (g *Gateway) enter(ctx context.Context, model string, tokens int) (*ticket, error) {
	p := g.route(model)
	br, err := g.breakers.Get(p.name + "/" + model)
	if err != nil {
		return nil, err
	}
	done, err := br.Allow(ctx)
	if err != nil {
		if errors.Is(err, breaker.ErrOpen) {
			return nil, &kindError{kind: llm.ErrCircuitOpen, err: err}
		}
		return nil, err
	}
	waitStart := time.Now()
	maxWait := llm.CapacityWaitFrom(ctx, g.capacityWait)
	var bg *limit.Lease
	if llm.Background(ctx) {
		// Background work takes a slot of its share first, then one of
		// the provider's: it never holds more than its share.
		bg, err = p.background.Acquire(ctx, maxWait)
		if err != nil {
			done(errNotSent)
			if errors.Is(err, limit.ErrFull) {
				metrics.CapacityGiveUps.WithLabelValues(p.name).Inc()
				return nil, &kindError{kind: llm.ErrNoCapacity, err: &limit.NoCapacityError{
					Gate: p.name, Limit: fmt.Sprintf("background share of %d in flight", p.background.Cap())}}
			}
			return nil, err
		}
		maxWait = max(maxWait-time.Since(waitStart), 0)
	}
	pass, err := p.gate.Enter(ctx, tokens, maxWait)
	waited := time.Since(waitStart)
	if err != nil {
		if bg != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = bg.Release(rctx)
			cancel()
		}
		done(errNotSent)
		if errors.Is(err, limit.ErrNoCapacity) {
			metrics.CapacityWait.WithLabelValues(p.name, "gave_up").Observe(waited.Seconds())
			metrics.CapacityGiveUps.WithLabelValues(p.name).Inc()
			return nil, &kindError{kind: llm.ErrNoCapacity, err: err}
		}
		return nil, err
	}
	metrics.CapacityWait.WithLabelValues(p.name, "admitted").Observe(waited.Seconds())
	return &ticket{done: done, pass: pass, bg: bg}, nil
}

// Admission is capacity held ahead of a call (see Admit).
type admission struct {
	head  string // the call's model
	index int    // the model of the chain admitted
	t     *ticket
	taken atomic.Bool
}

type admissionKey struct{}

// Admit takes, ahead of a call, what its first request needs: the first
// model of r's chain whose breaker admits it, and capacity at its provider.
// It returns a context carrying the admission, for the call of r made with
// it (Stream or Complete), and a function that frees it if the call is not
// made; calling it after the call does nothing. A task admits before it
// claims its work, so that a lack of capacity (llm.ErrNoCapacity) hands the
// task back with nothing recorded. When every model's breaker is open the
// error is llm.ErrCircuitOpen.
func (g *Gateway) Admit(ctx context.Context, r llm.Request) (context.Context, func(), error) {
	var errs []error
	for i, m := range g.chain(r.Model) {
		t, err := g.enter(ctx, m, estimate(r))
		if errors.Is(err, llm.ErrCircuitOpen) {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		if err != nil {
			return ctx, func() {}, err
		}
		a := &admission{head: r.Model, index: i, t: t}
		return context.WithValue(ctx, admissionKey{}, a), func() {
			if a.taken.CompareAndSwap(false, true) {
				a.t.cancel()
			}
		}, nil
	}
	return ctx, func() {}, chainErr(errs)
}

// takeAdmission returns the admission ctx carries for a call of model, once.
func takeAdmission(ctx context.Context, model string) *admission {
	a, ok := ctx.Value(admissionKey{}).(*admission)
	if !ok || a.head != model || !a.taken.CompareAndSwap(false, true) {
		return nil
	}
	return a
}

// Stream runs r in streaming mode through its chain; see the package doc.
func (g *Gateway) Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	return g.call(ctx, r, onText)
}

// Complete runs r without streaming through its chain.
func (g *Gateway) Complete(ctx context.Context, r llm.Request) (llm.Response, error) {
	return g.call(ctx, r, nil)
}

// minAttemptTime is the least time left on the caller's deadline worth
// another attempt.
const minAttemptTime = time.Second

func (g *Gateway) call(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	log := llm.LoggerFrom(ctx, g.log)
	chain := g.chain(r.Model)
	start := 0
	adm := takeAdmission(ctx, r.Model)
	if adm != nil {
		start = adm.index
	}
	var (
		attempts int
		tried    []error
	)
	fail := func(err error) (llm.Response, error) {
		return llm.Response{Requested: r.Model, Attempts: attempts}, err
	}
	for _, model := range chain[start:] {
		n := 0 // requests to this model
		var last error
		for {
			var t *ticket
			if adm != nil {
				t, adm = adm.t, nil
			} else {
				var err error
				t, err = g.enter(ctx, model, estimate(r))
				if errors.Is(err, llm.ErrCircuitOpen) {
					last = err
					break // fail fast: on to the fallback
				}
				if err != nil {
					// No capacity, or the caller gave up: hand back.
					tried = append(tried, describe(model, n, err))
					return fail(chainErr(tried))
				}
			}
			n++
			attempts++
			req := r
			req.Model = model
			passed := false // text of this answer reached the caller
			var pass func(string) error
			if onText != nil {
				pass = func(s string) error {
					passed = true
					return onText(s)
				}
			}
			resp, err := g.send(ctx, req, pass)
			t.leave(err, resp)
			if err == nil {
				resp.Attempts, resp.Requested = attempts, model
				if n > 1 || model != r.Model {
					log.Info("llm call answered", "llm_model", model, "asked", r.Model, "llm_attempts", attempts)
				}
				return resp, nil
			}
			last = err
			d := g.policy.Next(err, n)
			log.Warn("llm request failed", "llm_model", model, "llm_attempt", n, "err", err, "retry", d.Retry,
				"retry_in_ms", d.Delay.Milliseconds(), "in_task", d.Retry && d.Now)
			if passed {
				// The caller has text of this answer: no retry can follow it.
				tried = append(tried, describe(model, n, err))
				return fail(chainErr(tried))
			}
			if !d.Retry || ctx.Err() != nil {
				tried = append(tried, describe(model, n, err))
				return fail(chainErr(tried))
			}
			if !d.Now || !fits(ctx, d.Delay) {
				break // retries here spent, or a long wait asked: next model
			}
			if err := sleep(ctx, d.Delay); err != nil {
				tried = append(tried, describe(model, n, last))
				return fail(chainErr(tried))
			}
		}
		tried = append(tried, describe(model, n, last))
	}
	return fail(chainErr(tried))
}

// send sends one request to the provider of its model. A request is cut
// short of the caller's deadline by deadlineMargin, as a timeout
// (llm.ErrTimeout, retryable): the caller keeps time to record the outcome,
// and the work is tried again rather than failed for good.
func (g *Gateway) send(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, dl.Add(-deadlineMargin), errOutOfTime)
		defer cancel()
	}
	p := g.route(r.Model)
	ctx, span := tracing.Tracer().Start(ctx, "llm.request", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("gen_ai.provider.name", p.name),
			attribute.String("gen_ai.request.model", r.Model),
			attribute.Bool("llm.stream", onText != nil),
			attribute.Int("gen_ai.request.max_tokens", r.MaxTokens),
		))
	start := time.Now()
	var (
		resp llm.Response
		err  error
	)
	if onText == nil {
		resp, err = p.client.Complete(ctx, r)
	} else {
		resp, err = p.client.Stream(ctx, r, onText)
	}
	metrics.ObserveLLMRequest(p.name, r.Model, time.Since(start), resp.FirstToken, onText != nil, resp.PromptTokens, resp.CompletionTokens, err)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.Int("gen_ai.usage.input_tokens", resp.PromptTokens),
			attribute.Int("gen_ai.usage.output_tokens", resp.CompletionTokens),
			attribute.Int64("llm.first_token_ms", resp.FirstToken.Milliseconds()),
			attribute.String("llm.outcome", metrics.Outcome(err)),
		)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, metrics.Outcome(err))
		}
	}
	span.End()
	return resp, err
}

// deadlineMargin is the time kept before the caller's deadline.
const deadlineMargin = 2 * time.Second

// errOutOfTime ends a request cut short by the caller's deadline: a timeout
// of ours, which says nothing about the provider.
var errOutOfTime = fmt.Errorf("%w: the task's time ran out", llm.ErrTimeout)

// fits reports whether the caller's deadline leaves time to wait d and try
// again.
func fits(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) >= d+minAttemptTime+deadlineMargin
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// kindError gives err (a breaker's or a limit's refusal, which carries its
// retry hint) the llm failure kind the callers test for.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Unwrap() error        { return e.err }
func (e *kindError) Is(target error) bool { return target == e.kind }

// modelError is what one model of a chain ended with.
type modelError struct {
	model    string
	attempts int
	err      error
}

func (e *modelError) Error() string {
	if e.attempts == 0 {
		return e.model + ": " + e.err.Error()
	}
	return fmt.Sprintf("%s (%d %s): %v", e.model, e.attempts, plural(e.attempts, "attempt", "attempts"), e.err)
}

func (e *modelError) Unwrap() error { return e.err }

func describe(model string, attempts int, err error) error {
	return &modelError{model: model, attempts: attempts, err: err}
}

// chainError is the failure of a call: each model tried, in order. It
// unwraps to the last model's error, which decides what happens next.
type chainError struct{ errs []error }

func (e *chainError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; then ")
}

func (e *chainError) Unwrap() error { return e.errs[len(e.errs)-1] }

func chainErr(errs []error) error {
	if len(errs) == 0 {
		return errors.New("llm call: no model to try")
	}
	return &chainError{errs: errs}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
