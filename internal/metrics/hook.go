package metrics

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Observer receives what ObserveJob and ObserveLLMRequest record, besides
// the Prometheus collectors: an exporter that needs the raw observations
// (percentiles cannot be read back from histogram buckets). Its methods
// are called on the path of the work being observed: they must be quick
// and must not block (gather in memory, send elsewhere).
type Observer interface {
	// ObserveJob receives ObserveJob's arguments; stages and members must
	// not be kept or changed.
	ObserveJob(status string, stages map[string]int64, member string, members []int64)
	// ObserveLLMRequest receives ObserveLLMRequest's argument.
	ObserveLLMRequest(r LLMRequest)
}

var (
	observersMu sync.Mutex
	// observers is read without a lock on every observation; it is
	// replaced, never changed in place.
	observers atomic.Pointer[[]*observerEntry]
)

// observerEntry gives each addition an identity of its own: removing
// compares entries, never the observers (which may not be comparable).
type observerEntry struct{ o Observer }

// AddObserver makes o receive every later observation, until the returned
// function (safe to call more than once) removes it. Several observers may
// be added, e.g. by the api and the worker run in one process.
func AddObserver(o Observer) (remove func()) {
	observersMu.Lock()
	defer observersMu.Unlock()
	var cur []*observerEntry
	if p := observers.Load(); p != nil {
		cur = *p
	}
	e := &observerEntry{o: o}
	next := append(slices.Clip(cur), e)
	observers.Store(&next)
	var once sync.Once
	return func() {
		once.Do(func() {
			observersMu.Lock()
			defer observersMu.Unlock()
			p := observers.Load()
			if p == nil {
				return
			}
			next := slices.Clone(*p)
			if i := slices.Index(next, e); i >= 0 {
				next = slices.Delete(next, i, i+1)
			}
			observers.Store(&next)
		})
	}
}

// notifyJob hands a job's observation to the observers, if any.
func notifyJob(status string, stages map[string]int64, member string, members []int64) {
	if p := observers.Load(); p != nil {
		for _, e := range *p {
			e.o.ObserveJob(status, stages, member, members)
		}
	}
}

// notifyLLMRequest hands a request's observation to the observers, if any.
func notifyLLMRequest(r LLMRequest) {
	if p := observers.Load(); p != nil {
		for _, e := range *p {
			e.o.ObserveLLMRequest(r)
		}
	}
}
