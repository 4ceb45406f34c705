// Package queuemetrics exposes asynq's queues as Prometheus metrics, read
// through an asynq.Inspector at each scrape, under names that pass
// Prometheus' lint (promtool check metrics): gauges never end in _total and
// the only _total metrics are counters.
//
// Every process that registers a Collector reads the same queues from Redis
// and so reports the same values: aggregate them with max by (queue), not
// sum.
//
// Metrics (label queue on all but ErrorsName):
//
//	asynq_queue_tasks{queue,state}           gauge: tasks by state (pending, active, scheduled, retry, archived, completed, aggregating)
//	asynq_queue_size{queue}                  gauge: tasks in the queue in all states, completed included
//	asynq_queue_latency_seconds{queue}       gauge: age of the oldest pending task
//	asynq_queue_memory_usage_approx_bytes{queue} gauge: Redis memory of the queue, approximated by sampling
//	asynq_queue_paused{queue}                gauge: 1 paused, 0 not
//	asynq_tasks_processed_total{queue}       counter: tasks processed (succeeded or failed) since the queue's stats began
//	asynq_tasks_failed_total{queue}          counter: tasks whose processing failed since the queue's stats began
//	timetravel_queue_metrics_errors_total    counter: scrapes whose reading of the queues failed or timed out
package queuemetrics

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// Inspector is the part of *asynq.Inspector that a Collector reads.
type Inspector interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

// DefaultTimeout bounds a scrape's reading of the queues when
// Options.Timeout is zero; below Prometheus' default scrape timeout (10 s),
// so that the rest of the process's metrics still arrive.
const DefaultTimeout = 5 * time.Second

// ErrorsName is the name of the counter of failed or timed-out reads.
const ErrorsName = "timetravel_queue_metrics_errors_total"

// Task states, the values of asynq_queue_tasks' state label.
const (
	StatePending     = "pending"
	StateActive      = "active"
	StateScheduled   = "scheduled"
	StateRetry       = "retry"
	StateArchived    = "archived"
	StateCompleted   = "completed"
	StateAggregating = "aggregating"
)

var (
	tasksDesc = prometheus.NewDesc("asynq_queue_tasks",
		"Tasks in an asynq queue by state: pending, active, scheduled, retry, archived, completed (kept for their retention), aggregating.",
		[]string{"queue", "state"}, nil)
	sizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Tasks in an asynq queue in all states: pending, active, scheduled, retry, archived, completed, aggregating.",
		[]string{"queue"}, nil)
	latencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Time the oldest pending task of an asynq queue has waited; 0 when none is pending.",
		[]string{"queue"}, nil)
	memoryDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Redis memory used by an asynq queue and its tasks, approximated by sampling.",
		[]string{"queue"}, nil)
	pausedDesc = prometheus.NewDesc("asynq_queue_paused",
		"Whether an asynq queue is paused: 1 paused (its tasks are not processed), 0 not.",
		[]string{"queue"}, nil)
	processedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Tasks of an asynq queue processed, succeeded or failed, since the queue's statistics began in Redis.",
		[]string{"queue"}, nil)
	failedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Tasks of an asynq queue whose processing failed (retried or not) since the queue's statistics began in Redis.",
		[]string{"queue"}, nil)
	errorsDesc = prometheus.NewDesc(ErrorsName,
		"Scrapes of this process at which reading asynq's queues from Redis failed or timed out; the asynq_* metrics of such a scrape are partial or absent.",
		nil, nil)
)

// Options configure a Collector.
type Options struct {
	// Timeout bounds a scrape's reading of the queues; DefaultTimeout if
	// zero.
	Timeout time.Duration
	// Log receives read errors; slog.Default() if nil.
	Log *slog.Logger
}

// Collector is a prometheus.Collector of asynq's queue metrics (see the
// package documentation). Collect never panics and never fails the scrape:
// when reading Redis fails or takes longer than the timeout, the queues it
// could not read are left out and ErrorsName counts the scrape, so that the
// process's other metrics still arrive.
type Collector struct {
	insp    Inspector
	timeout time.Duration
	log     *slog.Logger
	errs    atomic.Uint64

	mu  sync.Mutex
	cur *read // the read in flight, nil if none
}

// read is one reading of all queues; done is closed when infos and err are
// set.
type read struct {
	done  chan struct{}
	infos []*asynq.QueueInfo
	err   error
}

// New returns a Collector reading insp.
func New(insp Inspector, o Options) *Collector {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Collector{insp: insp, timeout: o.Timeout, log: o.Log}
}

// Describe sends the descriptors of all the Collector's metrics, without
// reading Redis.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tasksDesc, sizeDesc, latencyDesc, memoryDesc, pausedDesc, processedDesc, failedDesc, errorsDesc} {
		ch <- d
	}
}

// Collect reads the queues (waiting at most the timeout) and sends their
// metrics, then the error counter.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.readQueues()
	failed := err != nil
	if err != nil {
		c.log.Warn("queue metrics: reading asynq queues", "err", err)
	}
	for _, qi := range infos {
		if err := send(ch, qi); err != nil {
			failed = true
			c.log.Warn("queue metrics: queue not exposed", "queue", qi.Queue, "err", err)
		}
	}
	if failed {
		c.errs.Add(1)
	}
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(c.errs.Load()))
}

// readQueues returns the queues read by the read in flight, or by a new one,
// waiting at most the timeout. The Inspector takes no context, so a read
// that times out is left to finish in the background; scrapes meanwhile
// wait for that same read rather than starting more, so a hung Redis holds
// at most one goroutine. On error, infos holds the queues that were read.
func (c *Collector) readQueues() ([]*asynq.QueueInfo, error) {
	r := c.start()
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-r.done:
		return r.infos, r.err
	case <-t.C:
		return nil, fmt.Errorf("reading asynq queues: no answer in %v", c.timeout)
	}
}

func (c *Collector) start() *read {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		return c.cur
	}
	r := &read{done: make(chan struct{})}
	c.cur = r
	go func() {
		defer func() {
			// A panic of the Inspector must not take the process down
			// with it: it is this scrape's error.
			if p := recover(); p != nil {
				r.err = errors.Join(r.err, fmt.Errorf("reading asynq queues: panic: %v", p))
			}
			c.mu.Lock()
			c.cur = nil
			c.mu.Unlock()
			close(r.done)
		}()
		r.infos, r.err = readAll(c.insp)
	}()
	return r
}

// readAll reads every queue's info; a queue that cannot be read is left out
// and its error joined to the others.
func readAll(insp Inspector) ([]*asynq.QueueInfo, error) {
	names, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("listing asynq queues: %w", err)
	}
	infos := make([]*asynq.QueueInfo, 0, len(names))
	var errs []error
	for _, q := range names {
		qi, err := insp.GetQueueInfo(q)
		if err != nil {
			errs = append(errs, fmt.Errorf("asynq queue %q: %w", q, err))
			continue
		}
		if qi != nil {
			infos = append(infos, qi)
		}
	}
	return infos, errors.Join(errs...)
}

// send sends one queue's metrics; it fails (having sent none) if the queue's
// name is not a valid label value.
func send(ch chan<- prometheus.Metric, qi *asynq.QueueInfo) error {
	q := qi.Queue
	type m struct {
		d     *prometheus.Desc
		t     prometheus.ValueType
		v     float64
		state string
	}
	ms := []m{
		{tasksDesc, prometheus.GaugeValue, float64(qi.Pending), StatePending},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Active), StateActive},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Scheduled), StateScheduled},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Retry), StateRetry},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Archived), StateArchived},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Completed), StateCompleted},
		{tasksDesc, prometheus.GaugeValue, float64(qi.Aggregating), StateAggregating},
		{sizeDesc, prometheus.GaugeValue, float64(qi.Size), ""},
		{latencyDesc, prometheus.GaugeValue, qi.Latency.Seconds(), ""},
		{memoryDesc, prometheus.GaugeValue, float64(qi.MemoryUsage), ""},
		{pausedDesc, prometheus.GaugeValue, boolValue(qi.Paused), ""},
		{processedDesc, prometheus.CounterValue, float64(qi.ProcessedTotal), ""},
		{failedDesc, prometheus.CounterValue, float64(qi.FailedTotal), ""},
	}
	out := make([]prometheus.Metric, 0, len(ms))
	for _, x := range ms {
		labels := []string{q}
		if x.state != "" {
			labels = append(labels, x.state)
		}
		// NewConstMetric, not Must: a queue name from Redis that is not
		// valid UTF-8 is an error here, not a panic.
		pm, err := prometheus.NewConstMetric(x.d, x.t, x.v, labels...)
		if err != nil {
			return err
		}
		out = append(out, pm)
	}
	for _, pm := range out {
		ch <- pm
	}
	return nil
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
