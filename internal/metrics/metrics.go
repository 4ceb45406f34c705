// Package metrics declares the service's Prometheus collectors once, all
// named timetravel_*, and registers them on a registry the caller passes in:
// the api and the worker each serve a registry of their own.
//
// Durations are in seconds, in histograms whose buckets (LatencyBuckets)
// span LLM latencies, from 50 ms to 2 minutes; the api's HTTP request
// durations use HTTPBuckets, from 5 ms to 10 s.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/queuemetrics"
)

// LatencyBuckets are the histogram buckets of every duration, in seconds.
var LatencyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120}

// HTTPBuckets are the buckets of HTTPRequestDuration, in seconds.
var HTTPBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Stages of a job, the values of the stage label. These are time travel's;
// a job of any kind has the stages queue_wait, <noun>s (its member calls,
// first start to last end), fan_in, one per part of its aggregation (by
// the part's name) and total, and <noun> for each member's own duration
// (an ensemble: answer, answers, synthesis, ...). A stage label value is
// just the stage's name (job.Timings.Stages).
const (
	StageQueueWait  = "queue_wait"
	StageSnapshot   = "snapshot"
	StageSnapshots  = "snapshots"
	StageFanIn      = "fan_in"
	StageKeyChanges = "key_changes"
	StageNarrative  = "narrative"
	StageTotal      = "total"
)

// Stages lists time travel's stages in the order of a job.
var Stages = []string{StageQueueWait, StageSnapshot, StageSnapshots, StageFanIn, StageKeyChanges, StageNarrative, StageTotal}

var (
	// JobDuration is the time from acceptance to the terminal state, by
	// terminal status; observed where a job ends (the worker's
	// aggregation, the api's cancel).
	JobDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_job_duration_seconds",
		Help:    "Time from acceptance to the terminal state of a job, by terminal status.",
		Buckets: LatencyBuckets,
	}, []string{"status"})

	// StageDuration is the duration of each stage of the jobs that ended,
	// by stage name (see Stages; <noun>: each member's own).
	StageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_stage_duration_seconds",
		Help:    "Duration of a stage of the jobs that ended: queue_wait, <noun> (each member: snapshot, answer), <noun>s (all members), fan_in, each aggregation part (key_changes, narrative, ...), total.",
		Buckets: LatencyBuckets,
	}, []string{"stage"})

	// LLMRequestDuration is the duration of one request to a provider, by
	// outcome.
	LLMRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_llm_request_duration_seconds",
		Help:    "Duration of one request to an LLM provider, by provider, model and outcome.",
		Buckets: LatencyBuckets,
	}, []string{"provider", "model", "outcome"})

	// LLMRequests counts requests to providers by outcome (ok or the
	// error's kind; see the Outcome* constants).
	LLMRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_llm_requests_total",
		Help: "Requests to LLM providers by provider, model and outcome: ok, rate_limited, server_error, client_error, timeout, broken_stream, bad_answer, canceled, error.",
	}, []string{"provider", "model", "outcome"})

	// LLMTimeToFirstToken is the time to the first text of streamed answers.
	LLMTimeToFirstToken = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_llm_time_to_first_token_seconds",
		Help:    "Time from sending a streamed LLM request to its first text.",
		Buckets: LatencyBuckets,
	}, []string{"provider", "model"})

	// LLMTokens counts tokens by direction: in (prompt) and out (completion).
	LLMTokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_llm_tokens_total",
		Help: "Tokens of answered LLM requests, by direction: in (prompt), out (completion).",
	}, []string{"provider", "model", "direction"})

	// BreakerState is each breaker's state: 0 closed, 1 half-open, 2 open,
	// as this process last saw it change.
	BreakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timetravel_llm_breaker_state",
		Help: "Circuit breaker state per provider and model as this process last saw it change: 0 closed, 1 half-open, 2 open.",
	}, []string{"provider", "model"})

	// CapacityWait is the time spent waiting for provider capacity (in-flight
	// cap, RPM, TPM), by result: admitted or gave_up.
	CapacityWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_llm_capacity_wait_seconds",
		Help:    "Time waited for provider capacity (in-flight cap, RPM, TPM), by provider and result: admitted, gave_up.",
		Buckets: LatencyBuckets,
	}, []string{"provider", "result"})

	// BreakerWait is the time calls spent waiting for a circuit breaker of
	// their chain to admit them, when every one refused, by result:
	// admitted or gave_up (the work went back to the queue).
	BreakerWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_llm_breaker_wait_seconds",
		Help:    "Time LLM calls waited for a circuit breaker of their chain to admit them when every one was open, by result: admitted, gave_up.",
		Buckets: LatencyBuckets,
	}, []string{"result"})

	// ReapedTasks counts the claimed work of dead workers (their liveness
	// lease expired) that a reaper put back on the queue.
	ReapedTasks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "timetravel_reaped_tasks_total",
		Help: "Work claimed by workers whose liveness lease expired, re-enqueued by a reaper.",
	})

	// CapacityGiveUps counts capacity waits that ended without capacity
	// (the work went back to the queue).
	CapacityGiveUps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_llm_capacity_giveups_total",
		Help: "Waits for provider capacity that gave up (the work went back to the queue), by provider.",
	}, []string{"provider"})

	// CacheLookups counts cache lookups by scope and result. Scope job is
	// a submission's lookup of all its answers: hit (served wholly from
	// the caches), partial (some reused), miss (none); scope snapshot and
	// aggregate are a worker's lookups of one answer (hit or miss).
	CacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_cache_lookups_total",
		Help: "Cache lookups by scope (job: a submission's answers; snapshot, aggregate: a worker's lookup of one) and result: hit, partial, miss.",
	}, []string{"scope", "result"})

	// CacheCallsSaved counts the LLM calls that cached answers made
	// unnecessary, by stage: snapshot, key_changes, narrative.
	CacheCallsSaved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_cache_llm_calls_saved_total",
		Help: "LLM calls not made because a cached answer was reused, by stage: snapshot, key_changes, narrative.",
	}, []string{"stage"})

	// JobsJoined counts submissions that joined an identical job in
	// flight instead of starting one.
	JobsJoined = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "timetravel_jobs_joined_total",
		Help: "Submissions that joined an identical job in flight instead of starting another.",
	})

	// IdempotentReplays counts submissions answered with the job of an
	// earlier request with the same Idempotency-Key.
	IdempotentReplays = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "timetravel_idempotent_replays_total",
		Help: "Submissions answered with the job of an earlier request with the same Idempotency-Key.",
	})

	// HTTPRequests counts the api's HTTP requests when they end, by method
	// (HTTPMethod), route template (never the raw path; RouteUnmatched
	// when no route matched) and status class (StatusClass). An event
	// stream is counted when its response starts (if its handlers write
	// nothing, when the request ends).
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_http_requests_total",
		Help: "HTTP requests the api answered, by method, route template (unmatched: no route) and status class (2xx, 3xx, 4xx, 5xx); an event stream counts when its response starts.",
	}, []string{"method", "route", "status_class"})

	// HTTPRequestDuration is the time the api took to answer an HTTP
	// request, from its first middleware to the end of its handlers, by
	// method and route as HTTPRequests. Event streams are not observed:
	// their duration is how long the client stayed.
	HTTPRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "timetravel_http_request_duration_seconds",
		Help:    "Time the api took to answer an HTTP request, by method and route template; event streams are not observed.",
		Buckets: HTTPBuckets,
	}, []string{"method", "route"})

	// WebhookDeliveries counts webhook delivery attempts by outcome.
	WebhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timetravel_webhook_deliveries_total",
		Help: "Webhook delivery attempts by outcome: delivered, retry (another attempt follows), failed (for good).",
	}, []string{"outcome"})
)

func init() {
	for _, o := range []string{"delivered", "retry", "failed"} {
		WebhookDeliveries.WithLabelValues(o)
	}
	for _, r := range []string{CacheHit, CachePartial, CacheMiss} {
		CacheLookups.WithLabelValues(CacheScopeJob, r)
	}
	for _, st := range []string{StageSnapshot, StageKeyChanges, StageNarrative} {
		CacheCallsSaved.WithLabelValues(st)
	}
}

// Cache lookup scopes and results (CacheLookups' labels).
const (
	CacheScopeJob       = "job"
	CacheScopeSnapshot  = "snapshot"
	CacheScopeAggregate = "aggregate"
	CacheHit            = "hit"
	CachePartial        = "partial"
	CacheMiss           = "miss"
)

// Labels of HTTPRequests and HTTPRequestDuration.
const (
	// RouteUnmatched is the route of requests that matched no route (404,
	// 405): their raw paths are never labels.
	RouteUnmatched = "unmatched"
	// MethodOther is the method of requests with a method outside
	// HTTPMethod's list.
	MethodOther = "other"
)

// HTTPMethod is the method label of a request method: the standard
// methods as they are, any other MethodOther, so that a client cannot
// make up label values.
func HTTPMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return MethodOther
}

// StatusClass is the status_class label of an HTTP status: "1xx" to
// "5xx", or "other" outside 100-599.
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

// RegisterAPI registers the api's collectors on reg: the Go runtime and
// process collectors, the job durations (the api observes a cancel), the
// cache, deduplication and idempotency counters of submissions, and the
// HTTP requests.
func RegisterAPI(reg prometheus.Registerer) {
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		JobDuration, StageDuration,
		CacheLookups, CacheCallsSaved, JobsJoined, IdempotentReplays,
		HTTPRequests, HTTPRequestDuration,
	)
}

// RegisterWorker registers the worker's collectors on reg: the Go runtime
// and process collectors, jobs, stages, LLM requests, breakers and their
// waits, capacity waits, webhooks, reaped work and, with insp, asynq's
// queue metrics (asynq_*, package queuemetrics, read from Redis at each
// scrape).
func RegisterWorker(reg prometheus.Registerer, insp *asynq.Inspector) {
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		JobDuration, StageDuration,
		LLMRequestDuration, LLMRequests, LLMTimeToFirstToken, LLMTokens,
		BreakerState, BreakerWait, CapacityWait, CapacityGiveUps, WebhookDeliveries, ReapedTasks,
		CacheLookups, CacheCallsSaved, JobsJoined,
	)
	if insp != nil {
		reg.MustRegister(queuemetrics.New(insp, queuemetrics.Options{}))
	}
}

// ObserveJob records a job that ended: its duration by status and each
// stage's duration, from the job's timings in milliseconds
// (job.Timings.Stages: a stage that did not happen is absent; any name is
// a stage label value). members holds each member's own duration (0: it
// did not finish), observed as the stage named member (the kind's noun,
// StageSnapshot for time travel).
func ObserveJob(status string, stages map[string]int64, member string, members []int64) {
	if ms, ok := stages[StageTotal]; ok {
		JobDuration.WithLabelValues(status).Observe(seconds(ms))
	}
	for stage, ms := range stages {
		StageDuration.WithLabelValues(stage).Observe(seconds(ms))
	}
	for _, ms := range members {
		if ms > 0 {
			StageDuration.WithLabelValues(member).Observe(seconds(ms))
		}
	}
	notifyJob(status, stages, member, members)
}

func seconds(ms int64) float64 { return float64(ms) / 1000 }

// Outcomes of LLM requests: the values of the outcome label of
// LLMRequests and LLMRequestDuration.
const (
	OutcomeOK           = "ok"
	OutcomeRateLimited  = "rate_limited"  // 429
	OutcomeServerError  = "server_error"  // 5xx
	OutcomeClientError  = "client_error"  // other 4xx
	OutcomeTimeout      = "timeout"       // 408, or no (whole) answer in the time allowed
	OutcomeBrokenStream = "broken_stream" // the answer broke off
	// OutcomeBadAnswer: the provider answered, and the answer was unusable
	// (llm.ErrBadAnswer: rejected by the request's validator, or empty).
	OutcomeBadAnswer = "bad_answer"
	// OutcomeCanceled: the caller stopped the request (its context ended:
	// the job was canceled or reached its deadline; or it could not take
	// the text). It says nothing about the provider.
	OutcomeCanceled = "canceled"
	OutcomeError    = "error" // anything else (network errors)
)

// LLMRequest is one request to a provider, as ObserveLLMRequest records it.
type LLMRequest struct {
	Provider, Model string
	// Outcome is one of the Outcome* constants: Outcome(err), unless the
	// caller knows better (a request its caller stopped is
	// OutcomeCanceled whatever error it ended with).
	Outcome string
	// Duration is from sending the request to its end; FirstToken to its
	// first text (observed for streamed requests only).
	Duration, FirstToken           time.Duration
	Streamed                       bool
	PromptTokens, CompletionTokens int
}

// ObserveLLMRequest records one request to a provider: its count and
// duration by outcome, its time to first token and its tokens.
func ObserveLLMRequest(r LLMRequest) {
	notifyLLMRequest(r)
	LLMRequests.WithLabelValues(r.Provider, r.Model, r.Outcome).Inc()
	LLMRequestDuration.WithLabelValues(r.Provider, r.Model, r.Outcome).Observe(r.Duration.Seconds())
	if r.Streamed && r.FirstToken > 0 {
		LLMTimeToFirstToken.WithLabelValues(r.Provider, r.Model).Observe(r.FirstToken.Seconds())
	}
	if r.PromptTokens > 0 {
		LLMTokens.WithLabelValues(r.Provider, r.Model, "in").Add(float64(r.PromptTokens))
	}
	if r.CompletionTokens > 0 {
		LLMTokens.WithLabelValues(r.Provider, r.Model, "out").Add(float64(r.CompletionTokens))
	}
}

// Outcome names the kind of an LLM request's error by the error alone;
// OutcomeOK for nil. It cannot tell who ended a request: a caller that
// knows its context ended records OutcomeCanceled instead (see package
// gateway), since a bare context.DeadlineExceeded here reads as a timeout.
func Outcome(err error) string {
	var se *llm.StatusError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, llm.ErrBadAnswer):
		// First: a validator's error may wrap anything.
		return OutcomeBadAnswer
	case errors.As(err, &se):
		switch {
		case se.StatusCode == http.StatusTooManyRequests:
			return OutcomeRateLimited
		case se.StatusCode >= 500:
			return OutcomeServerError
		case se.StatusCode == http.StatusRequestTimeout:
			return OutcomeTimeout
		default:
			return OutcomeClientError
		}
	case errors.Is(err, llm.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	case errors.Is(err, llm.ErrBrokenStream):
		return OutcomeBrokenStream
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	}
	return OutcomeError
}

// BreakerStateValue maps a breaker state's name (closed, half-open, open)
// to the gauge's value.
func BreakerStateValue(state string) float64 {
	switch state {
	case "open":
		return 2
	case "half-open":
		return 1
	}
	return 0
}
