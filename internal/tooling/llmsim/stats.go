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
	// Faults counts the faults injected since the start or the last reset,
	// by kind. A request counts in Requests whether it got a fault or not.
	Faults FaultCounts `json:"faults"`
	// StreamedTokens is the number of content chunks written to streamed
	// answers (one token each) since the start or the last reset: the
	// tokens a service downstream had to relay. Role-only, finish and
	// usage chunks do not count, nor do non-streamed answers.
	StreamedTokens int64 `json:"streamed_tokens"`
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
	began  chan struct{} // closed and replaced when a request begins
}

func newStats() *stats {
	idle := make(chan struct{})
	close(idle)
	return &stats{models: make(map[string]*Counters), idle: idle, began: make(chan struct{})}
}

// begin counts a request for model as started and returns its number among
// the model's requests since the start or the last reset (from 1), and the
// function that counts it as finished; that function must be called exactly
// once.
func (st *stats) begin(model string) (n int64, end func()) {
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
	close(st.began)
	st.began = make(chan struct{})
	return m.Requests, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		m.InFlight--
		st.total.InFlight--
		if st.total.InFlight == 0 {
			close(st.idle)
		}
	}
}

// countFault counts a fault of kind k injected into a request of model,
// which must be in flight.
func (st *stats) countFault(model string, k FaultKind) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if m := st.models[model]; m != nil {
		if p := m.Faults.counter(k); p != nil {
			*p++
		}
	}
	if p := st.total.Faults.counter(k); p != nil {
		*p++
	}
}

// countToken counts one content chunk written to a streamed answer of
// model, which must be in flight.
func (st *stats) countToken(model string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if m := st.models[model]; m != nil {
		m.StreamedTokens++
	}
	st.total.StreamedTokens++
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

// reset zeroes the request, fault and token counts and lowers the peaks to the
// current in-flight numbers; models with nothing in flight are forgotten.
func (st *stats) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.total.Requests = 0
	st.total.PeakInFlight = st.total.InFlight
	st.total.Faults = FaultCounts{}
	st.total.StreamedTokens = 0
	maps.DeleteFunc(st.models, func(_ string, c *Counters) bool { return c.InFlight == 0 })
	for _, c := range st.models {
		c.Requests = 0
		c.PeakInFlight = c.InFlight
		c.Faults = FaultCounts{}
		c.StreamedTokens = 0
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

// waitInFlight blocks until at least n requests of model ("" for any model)
// are in flight, or ctx ends.
func (st *stats) waitInFlight(ctx context.Context, model string, n int64) error {
	for {
		st.mu.Lock()
		c := &st.total
		if model != "" {
			c = st.models[model]
		}
		ok := c != nil && c.InFlight >= n
		began := st.began
		st.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-began:
		case <-ctx.Done():
			return fmt.Errorf("llmsim: wait for %d requests in flight: %w", n, context.Cause(ctx))
		}
	}
}
