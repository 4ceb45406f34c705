package cloudwatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// QueueInspector is the part of asynq's Inspector that QueueDepths reads.
type QueueInspector interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

// QueueDepths returns a reading of each queue's pending tasks
// (QueueDepth, by Queue). A queue that cannot be read is left out and its
// error returned with the others'.
func QueueDepths(insp QueueInspector) ([]Gauge, error) {
	queues, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list the queues: %w", err)
	}
	var out []Gauge
	var errs []error
	for _, q := range queues {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			errs = append(errs, fmt.Errorf("read queue %s: %w", q, err))
			continue
		}
		out = append(out, Gauge{Name: MetricQueueDepth, Unit: UnitCount, Dims: []Dim{{"Queue", q}}, Value: float64(info.Pending)})
	}
	return out, errors.Join(errs...)
}

// BreakerStates returns each circuit breaker's state as this process last
// saw it change (metrics.BreakerState: 0 closed, 1 half-open, 2 open), by
// Provider and Model.
func BreakerStates() []Gauge {
	return gaugesOf(metrics.BreakerState, MetricBreakerState, UnitNone, map[string]string{"provider": "Provider", "model": "Model"})
}

// gaugesOf reads the current values of a gauge vector, its labels renamed
// as dims names them (labels missing from dims are left out).
func gaugesOf(c prometheus.Collector, name, unit string, dims map[string]string) []Gauge {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []Gauge
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil || pb.GetGauge() == nil {
			continue
		}
		g := Gauge{Name: name, Unit: unit, Value: pb.GetGauge().GetValue()}
		for _, lp := range pb.GetLabel() {
			if n, ok := dims[lp.GetName()]; ok {
				g.Dims = append(g.Dims, Dim{n, lp.GetValue()})
			}
		}
		out = append(out, g)
	}
	return out
}

// WorkerGauges returns the gauges a worker sends at each flush: the
// queues' depths read through insp (nil: none) and the breakers' states.
func WorkerGauges(insp QueueInspector) func(ctx context.Context) ([]Gauge, error) {
	return func(context.Context) ([]Gauge, error) {
		var out []Gauge
		var err error
		if insp != nil {
			out, err = QueueDepths(insp)
		}
		return append(out, BreakerStates()...), err
	}
}
