// Package cloudwatch pushes the service's metrics to Amazon CloudWatch: job
// and stage durations, LLM calls and their errors, queue depths and
// circuit breaker states (the worker sends them all; the api the jobs it
// ends). Observations are gathered in memory, as raw values with their
// counts (so that CloudWatch computes true percentiles, which Prometheus
// histogram buckets cannot give back), and sent every interval in
// batches of PutMetricData calls within the API's limits, or written as
// Embedded Metric Format (EMF) lines for the log agent.
//
// Recording never blocks the work observed: it only adds to a map under a
// mutex. A failing push is logged and counted (PublishFailures), and its
// observations are dropped, so memory stays bounded when CloudWatch cannot
// be reached.
//
// Metrics (namespace from CLOUDWATCH_NAMESPACE), their units and
// dimensions:
//
//	JobDuration      Seconds  Status          time from acceptance to the end
//	StageDuration    Seconds  Stage           each stage of ended jobs (total, queue_wait, snapshot, ...)
//	JobFailures      Count    (none)          0 per ended job, 1 per failed one: Sum failures, SampleCount jobs, Average the ratio
//	LLMCalls         Count    Provider, Model, Outcome
//	LLMCallDuration  Seconds  Provider, Model, Outcome
//	LLMErrors        Count    Provider, Model; and (none)   0 per call, 1 per failed call (not canceled ones): Average the error ratio
//	QueueDepth       Count    Queue           pending tasks, read at each flush
//	BreakerState     None     Provider, Model 0 closed, 1 half-open, 2 open, as this process last saw it
package cloudwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// Metric names.
const (
	MetricJobDuration     = "JobDuration"
	MetricStageDuration   = "StageDuration"
	MetricJobFailures     = "JobFailures"
	MetricLLMCalls        = "LLMCalls"
	MetricLLMCallDuration = "LLMCallDuration"
	MetricLLMErrors       = "LLMErrors"
	MetricQueueDepth      = "QueueDepth"
	MetricBreakerState    = "BreakerState"
)

// PublishFailures counts the pushes that failed, by output: api (a
// PutMetricData call, after the SDK's retries) or emf (writing a line).
// The composition root registers it with the process's other collectors.
var PublishFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "timetravel_cloudwatch_publish_failures_total",
	Help: "Pushes of metrics to CloudWatch that failed and were dropped, by output: api (PutMetricData, after retries), emf (an EMF line).",
}, []string{"output"})

func init() {
	for _, o := range []string{outputAPI, outputEMF} {
		PublishFailures.WithLabelValues(o)
	}
}

const (
	outputAPI = "api"
	outputEMF = "emf"
)

// API is the part of the CloudWatch client the Publisher uses.
type API interface {
	PutMetricData(ctx context.Context, in *cw.PutMetricDataInput, optFns ...func(*cw.Options)) (*cw.PutMetricDataOutput, error)
}

// Options configure a Publisher. Namespace is required, and one of Client
// and EMF at least.
type Options struct {
	// Namespace is the CloudWatch namespace of every metric.
	Namespace string
	// Interval is the time between two flushes of Start's; 0 means a minute.
	Interval time.Duration
	// Client receives PutMetricData calls; nil sends none.
	Client API
	// EMF receives one Embedded Metric Format line (JSON and a new line)
	// per set of dimension values at each flush; nil writes none.
	EMF io.Writer
	// Gauges, when set, is read at each flush; its readings are sent as
	// one observation each. An error is logged and what it returned is
	// still sent.
	Gauges func(ctx context.Context) ([]Gauge, error)
	// PushTimeout bounds each PutMetricData call, its retries included;
	// 0 means 10 s.
	PushTimeout time.Duration
	// Log receives the warnings of failed pushes; nil discards them.
	Log *slog.Logger
	// Now is the clock of the datums' timestamps; nil means time.Now.
	Now func() time.Time
	// OnClose runs once Start's stop has flushed for the last time (e.g. to close
	// the client's idle connections).
	OnClose func()
}

// Publisher gathers observations and pushes them to CloudWatch. It is a
// metrics.Observer, safe for concurrent use.
type Publisher struct {
	o Options

	mu     sync.Mutex
	series map[string]*series
	// flushMu makes flushes one at a time (Start's and explicit ones).
	flushMu sync.Mutex
}

// New returns a Publisher of o. It records nothing until added as an
// observer (Start does) or called directly.
func New(o Options) (*Publisher, error) {
	if o.Namespace == "" {
		return nil, errors.New("cloudwatch: a namespace is required")
	}
	if o.Client == nil && o.EMF == nil {
		return nil, errors.New("cloudwatch: a client or an EMF writer is required")
	}
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.PushTimeout <= 0 {
		o.PushTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Publisher{o: o, series: make(map[string]*series)}, nil
}

// Start makes p receive the observations of package metrics from now
// on, and flushes them every interval from a goroutine of its own. stop
// (to call once) stops receiving, flushes once more within the push
// timeout (the last observations, of the work that drained), runs
// OnClose, and returns when all that is done; failed pushes are logged
// and counted, never returned. A periodic push still under way when stop
// is called is cut short (and counted as failed): the process's shutdown
// does not wait for it.
func (p *Publisher) Start() (stop func()) {
	remove := metrics.AddObserver(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(p.o.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = p.Flush(ctx)
			}
		}
	}()
	return func() {
		remove()
		cancel()
		<-done
		fctx, cancelFlush := context.WithTimeout(context.Background(), p.o.PushTimeout)
		defer cancelFlush()
		_ = p.Flush(fctx)
		if p.o.OnClose != nil {
			p.o.OnClose()
		}
	}
}

// Record adds one observation of the metric name, in unit, with dims
// (kept as they are: do not change them afterwards). NaN and infinite
// values are dropped; values are rounded to three significant digits.
func (p *Publisher) Record(name, unit string, dims []Dim, v float64) {
	p.RecordN(name, unit, dims, v, 1)
}

// RecordN adds n observations of the same value (see Record).
func (p *Publisher) RecordN(name, unit string, dims []Dim, v, n float64) {
	q, ok := quantize(v)
	if !ok || n <= 0 {
		return
	}
	k := seriesKey(name, dims)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.series[k]
	if s == nil {
		s = &series{name: name, unit: unit, dims: dims, counts: make(map[float64]float64)}
		p.series[k] = s
	}
	s.counts[q] += n
}

// ObserveJob records a job that ended, as metrics.ObserveJob does: its
// duration by status, each stage's duration (members' own durations as
// the stage member) and whether it failed.
func (p *Publisher) ObserveJob(status string, stages map[string]int64, member string, members []int64) {
	if ms, ok := stages[metrics.StageTotal]; ok {
		p.Record(MetricJobDuration, UnitSeconds, []Dim{{"Status", status}}, seconds(ms))
		failed := 0.0
		if status == "failed" {
			failed = 1
		}
		p.Record(MetricJobFailures, UnitCount, nil, failed)
	}
	for stage, ms := range stages {
		p.Record(MetricStageDuration, UnitSeconds, []Dim{{"Stage", stage}}, seconds(ms))
	}
	for _, ms := range members {
		if ms > 0 {
			p.Record(MetricStageDuration, UnitSeconds, []Dim{{"Stage", member}}, seconds(ms))
		}
	}
}

// ObserveLLMRequest records one request to a provider: its count and
// duration by outcome, and whether it failed (a request its caller
// stopped, outcome canceled, is neither a success nor a failure).
func (p *Publisher) ObserveLLMRequest(r metrics.LLMRequest) {
	full := []Dim{{"Provider", r.Provider}, {"Model", r.Model}, {"Outcome", r.Outcome}}
	p.Record(MetricLLMCalls, UnitCount, full, 1)
	p.Record(MetricLLMCallDuration, UnitSeconds, full, r.Duration.Seconds())
	if r.Outcome == metrics.OutcomeCanceled {
		return
	}
	failed := 0.0
	if r.Outcome != metrics.OutcomeOK {
		failed = 1
	}
	p.Record(MetricLLMErrors, UnitCount, full[:2], failed)
	p.Record(MetricLLMErrors, UnitCount, nil, failed)
}

func seconds(ms int64) float64 { return float64(ms) / 1000 }

// take returns the series gathered since the last flush, with the gauges
// read now, and starts afresh.
func (p *Publisher) take(gauges []Gauge) []*series {
	p.mu.Lock()
	got := p.series
	p.series = make(map[string]*series, len(got))
	p.mu.Unlock()
	for _, g := range gauges {
		q, ok := quantize(g.Value)
		if !ok {
			continue
		}
		k := seriesKey(g.Name, g.Dims)
		s := got[k]
		if s == nil {
			s = &series{name: g.Name, unit: g.Unit, dims: g.Dims, counts: make(map[float64]float64)}
			got[k] = s
		}
		s.counts[q]++
	}
	out := make([]*series, 0, len(got))
	for _, s := range got {
		out = append(out, s)
	}
	// A stable order: the same observations make the same requests.
	sortSeries(out)
	return out
}

// Flush reads the gauges and sends what was gathered since the last flush:
// PutMetricData calls (as many as the API's limits need) and EMF lines,
// as configured. What could not be sent is logged, counted in
// PublishFailures and dropped; the error returned joins the failures.
func (p *Publisher) Flush(ctx context.Context) error {
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	var gauges []Gauge
	if p.o.Gauges != nil {
		g, err := p.o.Gauges(ctx)
		if err != nil {
			p.o.Log.Warn("cloudwatch: read the gauges", "err", err)
		}
		gauges = g
	}
	all := p.take(gauges)
	if len(all) == 0 {
		return nil
	}
	now := p.o.Now()
	var errs []error
	if p.o.Client != nil {
		for _, in := range putInputs(p.o.Namespace, all, now) {
			if err := p.put(ctx, in); err != nil {
				PublishFailures.WithLabelValues(outputAPI).Inc()
				p.o.Log.Warn("cloudwatch: PutMetricData failed; its metrics are dropped",
					"namespace", p.o.Namespace, "metric_data", len(in.MetricData), "err", err)
				errs = append(errs, err)
			}
		}
	}
	if p.o.EMF != nil {
		if err := writeEMF(p.o.EMF, p.o.Namespace, all, now); err != nil {
			PublishFailures.WithLabelValues(outputEMF).Inc()
			p.o.Log.Warn("cloudwatch: write EMF lines", "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// put sends one request within the push timeout.
func (p *Publisher) put(ctx context.Context, in *cw.PutMetricDataInput) error {
	ctx, cancel := context.WithTimeout(ctx, p.o.PushTimeout)
	defer cancel()
	if _, err := p.o.Client.PutMetricData(ctx, in); err != nil {
		return fmt.Errorf("cloudwatch: put metric data: %w", err)
	}
	return nil
}

// sortSeries orders series by name, then dimension values.
func sortSeries(s []*series) {
	slices.SortFunc(s, func(a, b *series) int {
		return strings.Compare(seriesKey(a.name, a.dims), seriesKey(b.name, b.dims))
	})
}
