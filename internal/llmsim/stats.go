package llmsim

import (
	"context"
	"fmt"
	"maps"
	"sync"
)

// Counters are the request counters of one model or of all models together.
type Counters struct {
	// Requests is the number of chat completion requests accepted (valid
	// requests only) since the start or the last reset.
	Requests int64 `json:"requests"`
	// InFlight is the number of requests being answered right now.
	InFlight int64 `json:"in_flight"`
	// PeakInFlight is the highest InFlight seen since the start or the last
	// reset.
	PeakInFlight int64 `json:"peak_in_flight"`
}

// Stats is a snapshot of the counters, as served by GET /sim/stats.
type Stats struct {
	Total  Counters            `json:"total"`
	Models map[string]Counters `json:"models"`
}

// stats holds the live counters; all methods are safe for concurrent use.
type stats struct {
	mu     sync.Mutex
	total  Counters
	models map[string]*Counters
	idle   chan struct{} // closed while nothing is in flight
}

func newStats() *stats {
	idle := make(chan struct{})
	close(idle)
	return &stats{models: make(map[string]*Counters), idle: idle}
}

// begin counts a request for model as started and returns the function that
// counts it as finished; that function must be called exactly once.
func (st *stats) begin(model string) (end func()) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := st.models[model]
	if m == nil {
		m = new(Counters)
		st.models[model] = m
	}
	if st.total.InFlight == 0 {
		st.idle = make(chan struct{})
	}
	for _, c := range []*Counters{&st.total, m} {
		c.Requests++
		c.InFlight++
		c.PeakInFlight = max(c.PeakInFlight, c.InFlight)
	}
	return func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		m.InFlight--
		st.total.InFlight--
		if st.total.InFlight == 0 {
			close(st.idle)
		}
	}
}

func (st *stats) snapshot() Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := Stats{Total: st.total, Models: make(map[string]Counters, len(st.models))}
	for name, c := range st.models {
		s.Models[name] = *c
	}
	return s
}

// reset zeroes the request counts and lowers the peaks to the current
// in-flight numbers; models with nothing in flight are forgotten.
func (st *stats) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.total.Requests = 0
	st.total.PeakInFlight = st.total.InFlight
	maps.DeleteFunc(st.models, func(_ string, c *Counters) bool { return c.InFlight == 0 })
	for _, c := range st.models {
		c.Requests = 0
		c.PeakInFlight = c.InFlight
	}
}

// waitIdle blocks until no request is in flight or ctx ends.
func (st *stats) waitIdle(ctx context.Context) error {
	st.mu.Lock()
	idle := st.idle
	st.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("llmsim: wait for idle: %w", context.Cause(ctx))
	}
}
