// Package gateway is how a worker process calls LLMs: every call goes
// through the model's provider (from configuration), its circuit breaker,
// its cluster-wide capacity (in-flight cap, requests and tokens per minute),
// the retry policy and the model's fallbacks, in that order, and the
// response says which model answered after how many requests.
//
// Guarantees:
//   - No request is sent while the model's breaker refuses it, nor beyond
//     the provider's limits (see package limit).
//   - One call sends at most Policy.MaxAttempts requests per model of its
//     chain (the model, then its fallbacks), plus Policy.BadAnswerRetries
//     after answers its validator rejected; waits between them are at most
//     Policy.MaxWait.
//   - A request waits for its provider's capacity in the provider's line
//     (limit.Semaphore), served earliest due first, urgent calls first
//     (limit.WithOrder), and gives up when the line has not moved for the
//     capacity wait, or when a request would no longer fit before ctx's
//     deadline.
//   - A call that has passed text to its caller is never retried: the text
//     cannot be taken back. It fails, and the task's next run starts over.
//   - An error of the caller's onText (it could not take the text, e.g.
//     Redis was out of reach) ends the call at once and is returned so that
//     errors.Is finds it; it never counts towards a breaker.
//   - Errors that another attempt cannot fix (4xx but 408 and 429) end the
//     call at once, without fallback.
//   - A non-streamed answer that the request's Validate rejects fails with
//     llm.ErrBadAnswer (and the validator's error) after
//     Policy.BadAnswerRetries more answers were rejected too; rejected
//     answers never count towards a breaker (the provider works).
//   - Without capacity the call fails with llm.ErrNoCapacity, having sent
//     nothing on that attempt: the task should go back to the queue.
//   - When every breaker of the chain refuses, the call (and Admit) waits
//     for one to admit it, polling at the breakers' hints, for at most the
//     capacity wait (the breaker and the capacity after it together), and
//     never past the point where a request would no longer fit before
//     ctx's deadline; then it fails with llm.ErrCircuitOpen, having sent
//     nothing: the task should go back to the queue, as for no capacity.
//   - Errors of Redis (the limits, the breakers' state) are returned as
//     they are: never counted by a breaker, never made into
//     llm.ErrNoCapacity, llm.ErrCircuitOpen or a provider's failure.
//   - With Options.Budget, each request of a call made for an owner
//     (WithOwner) is paid for from the owner's token budget just before
//     it is sent, and the charge is settled with its use (see Budget). A
//     refusal fails the call at once with ErrBudgetExhausted, having sent
//     nothing on that attempt: never retried, never counted by a breaker.
//
// Each request is counted in metrics.LLMRequests by outcome; a request its
// caller stopped (its context ended, or its onText failed) is
// metrics.OutcomeCanceled, whatever error the provider's client made of it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
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
	"github.com/timetravel-ai/timetravel/internal/pause"
	"github.com/timetravel-ai/timetravel/internal/redisx"
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
	budget       Budget

	// waiting, if set, is called when a call or an admission starts to
	// wait for a breaker (a test's signal).
	waiting func()
	// transport is the provider clients' pooled transport (Close).
	transport *http.Transport
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
	// Budget pays for the requests of calls made for an owner
	// (WithOwner); nil: no budgets.
	Budget Budget
	// UrgentReserve is the share of each provider's in-flight cap that
	// only urgent calls (limit.Order.Urgent: aggregations) may use,
	// rounded down, less than the whole cap; 0: none (urgent calls still
	// go first in the line).
	UrgentReserve float64
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
		budget:       o.Budget,
	}
	providers := cfg.ProviderList()
	transport := llm.NewTransport()
	g.transport = transport
	for _, pc := range providers {
		client := o.Callers[pc.Name]
		if client == nil {
			client = llm.NewClient(llm.Options{
				BaseURL: pc.BaseURL, APIKey: pc.APIKey, APIType: pc.APIType, APIVersion: pc.APIVersion,
				Timeout: cfg.Timeout, FirstTokenTimeout: cfg.FirstTokenTimeout, Transport: transport,
			})
		}
		semOpts := limit.SemaphoreOptions{TTL: o.LeaseTTL, Wake: o.Wake, Log: o.Log}
		gateOpts := semOpts
		gateOpts.Reserved = UrgentReserved(pc.MaxInFlight, o.UrgentReserve)
		p := &provider{
			name:       pc.Name,
			client:     client,
			gate:       limit.NewGate(o.Redis, pc.Name, limit.Limits{MaxInFlight: pc.MaxInFlight, RPM: pc.RPM, TPM: pc.TPM}, gateOpts),
			background: limit.NewSemaphore(o.Redis, pc.Name+":background", BackgroundCap(pc.MaxInFlight, o.BackgroundShare), semOpts),
		}
		g.providers = append(g.providers, p)
		for _, m := range pc.Models {
			g.byModel[m] = p
		}
	}
	g.breakers = breaker.NewSet(breaker.NewStore(o.Redis, breaker.KeyPrefix), breaker.Settings{
		Failures:     uint32(max(cfg.BreakerFailures, 1)),
		MinRequests:  uint32(max(cfg.BreakerMinRequests, 0)),
		FailureRatio: cfg.BreakerFailureRatio,
		Window:       cfg.BreakerWindow,
		OpenFor:      cfg.BreakerOpenFor,
		Ramp:         breakerRamp(cfg.BreakerRamp),
		Trials:       uint32(max(cfg.BreakerTrials, 1)),
		TrialTTL:     cfg.Timeout + 30*time.Second,
		IsFailure:    countsAsFailure,
		IsExcluded:   excluded,
		Logger:       o.Log,
		OnStateChange: func(name string, from, to breaker.State) {
			o.Log.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			prov, model, _ := strings.Cut(name, "/")
			metrics.BreakerState.WithLabelValues(prov, model).Set(metrics.BreakerStateValue(to.String()))
		},
	})
	return g
}

// Close closes the idle connections to the providers, so that nothing of
// the gateway outlives the process's shutdown; calls made after it open
// new ones. Call it once the calls have ended.
func (g *Gateway) Close() { g.transport.CloseIdleConnections() }

// breakerRamp maps LLM_BREAKER_RAMP to the breaker's setting, where 0
// means "as long as it stays open" and a negative value turns the ramp
// off: in the configuration 0 turns it off.
func breakerRamp(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
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

// UrgentReserved is the number of slots of a provider whose cap is
// maxInFlight that only urgent calls may take: share of it, rounded down,
// and never the whole cap.
func UrgentReserved(maxInFlight int, share float64) int {
	if share <= 0 {
		return 0
	}
	return min(int(float64(maxInFlight)*share), maxInFlight-1)
}

// errNotSent is the outcome of an admission that sent no request.
var errNotSent = errors.New("request not sent")

// errNotCounted marks the outcome of a request that says nothing about the
// provider: its caller stopped it (its context ended, or its onText
// failed).
var errNotCounted = errors.New("request stopped by its caller")

// countsAsFailure tells the outcomes that count towards opening a breaker:
// throttling, server errors, timeouts, broken streams, network errors.
// Client errors (400, 401, 404, ...) and unusable answers mean the provider
// works.
func countsAsFailure(err error) bool {
	return llm.Retryable(err) && !errors.Is(err, llm.ErrNoCapacity) && !errors.Is(err, llm.ErrCircuitOpen)
}

// excluded tells the outcomes that say nothing about the provider: no
// request sent, the caller gave up (cancellation, its own deadline, a
// request cut short of it, text it could not take), or Redis was out of
// reach (redisx marks only errors of our Redis clients, never a provider's
// connection errors).
func excluded(err error) bool {
	if errors.Is(err, errNotSent) || errors.Is(err, errNotCounted) || errors.Is(err, errOutOfTime) || redisx.Unavailable(err) {
		return true
	}
	if errors.Is(err, llm.ErrTimeout) {
		return false
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// callbackError is an error of the caller's onText: the caller could not
// take the text (its append to Redis failed, its job ended). It is the
// caller's, not the provider's: no breaker counts it, the call stops at
// once (the text cannot be taken back), and it unwraps to the caller's own
// error, which the caller tests for (e.g. with redisx.Unavailable).
type callbackError struct{ err error }

func (e *callbackError) Error() string { return "passing the text on: " + e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

func stoppedByCallback(err error) bool {
	var cb *callbackError
	return errors.As(err, &cb)
}

// verdict is what the end of one request says, to its breaker and to the
// metrics. caller is the call's context, before send cut it short.
//
//   - A rejected answer is the provider's success (bad_answer).
//   - A request stopped by its caller (onText failed, Redis was out of
//     reach, or the caller's context ended: the job was canceled or reached
//     its deadline) is not counted and is "canceled", whatever error the
//     client made of it.
//   - A request that send cut short of the caller's deadline (errOutOfTime)
//     is not counted either (the bound is ours, not the provider's), but it
//     is a "timeout": no answer came in the time the task had, which is
//     what an operator watching timeouts wants to see, while the caller had
//     not given up.
//   - Anything else is the request's own error.
func verdict(caller context.Context, err error) (forBreaker error, outcome string) {
	switch {
	case err == nil:
		return nil, metrics.OutcomeOK
	case stoppedByCallback(err), redisx.Unavailable(err):
		return fmt.Errorf("%w: %w", errNotCounted, err), metrics.OutcomeCanceled
	case errors.Is(err, llm.ErrBadAnswer):
		return nil, metrics.OutcomeBadAnswer
	case caller.Err() != nil:
		return fmt.Errorf("%w: %w", errNotCounted, err), metrics.OutcomeCanceled
	case errors.Is(err, errOutOfTime):
		return err, metrics.OutcomeTimeout
	}
	return err, metrics.Outcome(err)
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

// enter admits one request of model at its provider: the breaker first (a
// refusal fails fast, with llm.ErrCircuitOpen), then capacity, waited for up
// to maxWait, else llm.ErrNoCapacity. Other errors (Redis out of reach, the
// caller gave up) are returned as they are.
func (g *Gateway) enter(ctx context.Context, model string, tokens int, maxWait time.Duration) (*ticket, error) {
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
	// The wait in the provider's line leaves a request time before the
	// caller's deadline: a slot granted later could not be used.
	// (When that point has passed already, a slot free at once is still
	// taken, as before the line: its request is cut short as a timeout.)
	waitCtx := ctx
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) > minAttemptTime+deadlineMargin {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadlineCause(ctx, dl.Add(-(minAttemptTime + deadlineMargin)), errNoTimeToWait)
		defer cancel()
	}
	var bg *limit.Lease
	if llm.Background(ctx) {
		// Background work takes a slot of its share first, then one of
		// the provider's: it never holds more than its share.
		bg, err = p.background.Acquire(waitCtx, maxWait)
		if err != nil {
			done(errNotSent)
			if errors.Is(err, limit.ErrFull) || outOfWaitingTime(ctx, waitCtx) {
				metrics.CapacityGiveUps.WithLabelValues(p.name).Inc()
				return nil, &kindError{kind: llm.ErrNoCapacity, err: &limit.NoCapacityError{
					Gate: p.name, Limit: fmt.Sprintf("background share of %d in flight", p.background.Cap())}}
			}
			return nil, err
		}
		maxWait = max(maxWait-time.Since(waitStart), 0)
	}
	pass, err := p.gate.Enter(waitCtx, tokens, maxWait)
	waited := time.Since(waitStart)
	if err != nil {
		if bg != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = bg.Release(rctx)
			cancel()
		}
		done(errNotSent)
		if outOfWaitingTime(ctx, waitCtx) {
			err = &limit.NoCapacityError{Gate: p.name, Limit: "no slot in time for a request before the deadline"}
		}
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

// errNoTimeToWait ends a wait for capacity that went on until a request
// would no longer fit before the caller's deadline.
var errNoTimeToWait = errors.New("no time left for a request")

// outOfWaitingTime reports whether waitCtx, the caller's ctx cut short by
// the time a request needs, ended while ctx goes on: the wait reached the
// point where no request fits before ctx's deadline.
func outOfWaitingTime(ctx, waitCtx context.Context) bool {
	return ctx.Err() == nil && errors.Is(context.Cause(waitCtx), errNoTimeToWait)
}

// enterFirst admits a request of the first of models whose breaker admits
// it, waiting up to maxWait for its capacity. It returns that model's index
// and ticket; or, when every breaker refused, no ticket and the refusals
// (llm.ErrCircuitOpen), in order; or any other error of enter.
func (g *Gateway) enterFirst(ctx context.Context, models []string, tokens int, maxWait time.Duration) (int, *ticket, []error, error) {
	var refusals []error
	for i, m := range models {
		t, err := g.enter(ctx, m, tokens, maxWait)
		if errors.Is(err, llm.ErrCircuitOpen) {
			refusals = append(refusals, describe(m, 0, err))
			continue
		}
		if err != nil {
			return i, nil, nil, describe(m, 0, err)
		}
		return i, t, nil, nil
	}
	return -1, nil, refusals, nil
}

// Polls of the breakers while every one refuses: at the shortest hint of
// their refusals, within these bounds. A breaker hints at the rest of its
// open time, which may be long: polling at most every second finds it
// half-open (or releasing work again after closing) soon enough, at the
// cost of one Redis read per model and poll.
const (
	minBreakerPoll = 10 * time.Millisecond
	maxBreakerPoll = time.Second
)

// breakerPoll is the wait before the next poll of refusing breakers: their
// shortest hint, bounded, give or take a quarter so that the calls waiting
// on one breaker do not come back at the same instant (only one of them
// gets a half-open breaker's trial; the others would all poll again).
func breakerPoll(refusals []error) time.Duration {
	d := maxBreakerPoll
	for _, err := range refusals {
		if h, ok := llm.RetryAfter(err); ok {
			d = min(d, h)
		}
	}
	d = max(d, minBreakerPoll)
	return d*3/4 + rand.N(d/2+1)
}

// awaitBreaker waits, after every breaker of models refused (refusals), for
// one of them to admit a request, and admits it as enterFirst does. It
// waits at most the capacity wait (llm.CapacityWaitFrom), and stops early
// enough to leave a request time before ctx's deadline; the capacity wait
// of the model admitted is what remains of it. When the wait runs out it
// fails with a *breakerWaitError (llm.ErrCircuitOpen, with the refusals'
// hints); when ctx ends, with ctx's error.
func (g *Gateway) awaitBreaker(ctx context.Context, models []string, tokens int, refusals []error) (int, *ticket, error) {
	start := time.Now()
	until := start.Add(llm.CapacityWaitFrom(ctx, g.capacityWait))
	if dl, ok := ctx.Deadline(); ok {
		if last := dl.Add(-(minAttemptTime + deadlineMargin)); last.Before(until) {
			until = last
		}
	}
	llm.LoggerFrom(ctx, g.log).Debug("every circuit breaker of the call refused it; waiting",
		"models", strings.Join(models, ","), "max_wait_ms", time.Until(until).Milliseconds())
	if g.waiting != nil {
		g.waiting()
	}
	for {
		left := time.Until(until)
		if left <= 0 {
			waited := time.Since(start)
			metrics.BreakerWait.WithLabelValues("gave_up").Observe(waited.Seconds())
			return -1, nil, &breakerWaitError{waited: waited, refusals: refusals}
		}
		if err := pause.For(ctx, min(breakerPoll(refusals), left)); err != nil {
			return -1, nil, fmt.Errorf("waiting for a circuit breaker to admit the call: %w", err)
		}
		i, t, refused, err := g.enterFirst(ctx, models, tokens, max(time.Until(until), 0))
		if err != nil {
			return i, nil, err
		}
		if t != nil {
			metrics.BreakerWait.WithLabelValues("admitted").Observe(time.Since(start).Seconds())
			return i, t, nil
		}
		refusals = refused
	}
}

// breakerWaitError ends a call that every breaker of its chain refused for
// the whole wait. It is llm.ErrCircuitOpen and carries the refusals' hints
// (llm.RetryAfter: when the first breaker expects to let a request through).
type breakerWaitError struct {
	waited   time.Duration
	refusals []error
}

func (e *breakerWaitError) Error() string {
	parts := make([]string, len(e.refusals))
	for i, err := range e.refusals {
		parts[i] = err.Error()
	}
	return fmt.Sprintf("no circuit breaker admitted the call within %s: %s", e.waited.Round(time.Millisecond), strings.Join(parts, "; "))
}

func (e *breakerWaitError) Unwrap() []error { return e.refusals }

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
// claims its work, so that a lack of capacity (llm.ErrNoCapacity) or
// breakers that stay open (llm.ErrCircuitOpen, after the breaker wait of
// the package doc) hand the task back with nothing recorded.
func (g *Gateway) Admit(ctx context.Context, r llm.Request) (context.Context, func(), error) {
	chain, tokens := g.chain(r.Model), estimate(r)
	i, t, refusals, err := g.enterFirst(ctx, chain, tokens, llm.CapacityWaitFrom(ctx, g.capacityWait))
	if err == nil && t == nil {
		i, t, err = g.awaitBreaker(ctx, chain, tokens, refusals)
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
	chain, tokens := g.chain(r.Model), estimate(r)
	first := 0       // the first model of the chain this call may use
	var held *ticket // admitted ahead: by Admit, or by a breaker wait
	if adm := takeAdmission(ctx, r.Model); adm != nil {
		first, held = adm.index, adm.t
	}
	var (
		attempts int
		rejected int // answers the validator rejected
		tried    []error
	)
	fail := func(err error) (llm.Response, error) {
		return llm.Response{Requested: r.Model, Attempts: attempts}, err
	}
	for i := first; i < len(chain); {
		model := chain[i]
		n := 0 // requests to this model
		var last error
		for {
			t := held
			held = nil
			if t == nil {
				var err error
				t, err = g.enter(ctx, model, tokens, llm.CapacityWaitFrom(ctx, g.capacityWait))
				if errors.Is(err, llm.ErrCircuitOpen) {
					// On to the fallback. After failures of this model its
					// own last failure says more than its breaker.
					if n == 0 {
						last = err
					}
					break
				}
				if err != nil {
					// No capacity, Redis out of reach, or the caller gave
					// up: hand back.
					tried = append(tried, describe(model, n, err))
					return fail(chainErr(tried))
				}
			}
			// Paid for once admitted, just before it is sent: a reservation
			// lasts only as long as its request, not through the waits for
			// a breaker or capacity (where it would refuse the owner's
			// other calls tokens that may never be spent), and a request
			// that is never sent is never charged.
			settle, err := g.reserve(ctx, model, tokens)
			if err != nil {
				t.cancel()
				if errors.Is(err, ErrBudgetExhausted) {
					return fail(ErrBudgetExhausted)
				}
				tried = append(tried, describe(model, n, err))
				return fail(chainErr(tried))
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
					if err := onText(s); err != nil {
						return &callbackError{err: err}
					}
					return nil
				}
			}
			resp, forBreaker, err := g.send(ctx, req, pass)
			// Two independent round trips on the path to the caller's
			// next step: side by side, not one after the other.
			var settled sync.WaitGroup
			settled.Go(func() { settle(resp) })
			t.leave(forBreaker, resp)
			settled.Wait()
			if err == nil {
				resp.Attempts, resp.Requested = attempts, model
				if n > 1 || model != r.Model {
					log.Info("llm call answered", "llm_model", model, "asked", r.Model, "llm_attempts", attempts)
				}
				return resp, nil
			}
			last = err
			if stoppedByCallback(err) {
				// The caller cannot take the text: nothing to retry here.
				log.Info("llm call stopped: the caller could not take the text", "llm_model", model, "llm_attempt", n, "err", err)
				tried = append(tried, describe(model, n, err))
				return fail(chainErr(tried))
			}
			if errors.Is(err, llm.ErrBadAnswer) && !passed {
				rejected++
				again := g.policy.RetryBadAnswer(rejected) && ctx.Err() == nil && fits(ctx, 0)
				log.Warn("llm answer rejected", "llm_model", model, "llm_attempt", n, "err", err, "ask_again", again)
				if again {
					continue // at once: the provider answered, nothing to wait out
				}
				tried = append(tried, describe(model, n, err))
				return fail(chainErr(tried))
			}
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
			if err := pause.For(ctx, d.Delay); err != nil {
				tried = append(tried, describe(model, n, last))
				return fail(chainErr(tried))
			}
		}
		tried = append(tried, describe(model, n, last))
		if attempts == 0 && i == len(chain)-1 {
			// Every model of the chain was refused by its breaker (any
			// other failure to enter returned above): wait for one, as for
			// capacity, rather than hand the task back at once.
			j, t, err := g.awaitBreaker(ctx, chain[first:], tokens, tried)
			if err != nil {
				return fail(err)
			}
			i, held = first+j, t
			continue
		}
		i++
	}
	return fail(chainErr(tried))
}

// send sends one request to the provider of its model, runs r.Validate on
// the answer of a non-streamed request, and records the request's metrics.
// It returns the response, the outcome the request's breaker is to be told
// (see verdict), and the request's error.
//
// A request is cut short of the caller's deadline by deadlineMargin, as a
// timeout (errOutOfTime: llm.ErrTimeout, retryable): the caller keeps time
// to record the outcome, and the work is tried again rather than failed for
// good.
func (g *Gateway) send(ctx context.Context, r llm.Request, onText func(string) error) (resp llm.Response, forBreaker, err error) {
	caller := ctx
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
	if onText == nil {
		resp, err = p.client.Complete(ctx, r)
	} else {
		resp, err = p.client.Stream(ctx, r, onText)
	}
	took := time.Since(start)
	if err == nil && onText == nil && r.Validate != nil {
		if verr := r.Validate(resp.Text); verr != nil {
			err = fmt.Errorf("%w: %w", llm.ErrBadAnswer, verr)
		}
	}
	var outcome string
	forBreaker, outcome = verdict(caller, err)
	metrics.ObserveLLMRequest(metrics.LLMRequest{
		Provider: p.name, Model: r.Model, Outcome: outcome,
		Duration: took, FirstToken: resp.FirstToken, Streamed: onText != nil,
		PromptTokens: resp.PromptTokens, CompletionTokens: resp.CompletionTokens,
	})
	if span.IsRecording() {
		span.SetAttributes(
			attribute.Int("gen_ai.usage.input_tokens", resp.PromptTokens),
			attribute.Int("gen_ai.usage.output_tokens", resp.CompletionTokens),
			attribute.Int64("llm.first_token_ms", resp.FirstToken.Milliseconds()),
			attribute.String("llm.outcome", outcome),
		)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, outcome)
		}
	}
	span.End()
	return resp, forBreaker, err
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
// unwraps to the error that decides what happens next: the last model's,
// unless its breaker refused it after an earlier model failed; then that
// failure's (a refusal says only that the call sent nothing there, and an
// llm.ErrCircuitOpen would hand the task back without using a queue retry
// although a provider failed it).
type chainError struct{ errs []error }

func (e *chainError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; then ")
}

func (e *chainError) Unwrap() error {
	for i := len(e.errs) - 1; i >= 0; i-- {
		if !errors.Is(e.errs[i], llm.ErrCircuitOpen) {
			return e.errs[i]
		}
	}
	return e.errs[len(e.errs)-1]
}

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
