package metrics

import (
	"sync"
	"testing"
	"time"
)

// recorder is an Observer that keeps what it receives.
type recorder struct {
	mu   sync.Mutex
	jobs []string
	llm  []LLMRequest
}

func (r *recorder) ObserveJob(status string, _ map[string]int64, _ string, _ []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs = append(r.jobs, status)
}

func (r *recorder) ObserveLLMRequest(req LLMRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.llm = append(r.llm, req)
}

// TestObservers: every added observer receives the observations made
// while it is added, and none after its removal; removing twice is
// harmless.
func TestObservers(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	removeA := AddObserver(a)
	removeB := AddObserver(b)
	ObserveJob("completed", map[string]int64{StageTotal: 1000}, StageSnapshot, nil)
	removeA()
	removeA()
	ObserveLLMRequest(LLMRequest{Provider: "hook-p", Model: "hook-m", Outcome: OutcomeOK, Duration: time.Second})
	removeB()
	ObserveJob("failed", map[string]int64{StageTotal: 1000}, StageSnapshot, nil)

	tests := []struct {
		name      string
		r         *recorder
		jobs, llm int
	}{
		{"removed first", a, 1, 0},
		{"removed last", b, 1, 1},
	}
	for _, tt := range tests {
		if len(tt.r.jobs) != tt.jobs || len(tt.r.llm) != tt.llm {
			t.Errorf("%s: %d jobs, %d requests; want %d, %d", tt.name, len(tt.r.jobs), len(tt.r.llm), tt.jobs, tt.llm)
		}
	}
}

// TestObserversConcurrent adds and removes observers while observations
// are made (for the race detector).
func TestObserversConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				remove := AddObserver(&recorder{})
				ObserveJob("completed", map[string]int64{StageTotal: 10}, StageSnapshot, nil)
				remove()
			}
		})
	}
	wg.Wait()
}
