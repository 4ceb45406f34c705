package worker

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// /readyz says 503 from the moment the worker drains, so that no
// orchestrator counts on it any more.
func TestReadyzWhileDraining(t *testing.T) {
	db := redistest.New(t)
	var draining atomic.Bool
	mux := healthMux(db.Client, &draining)
	for _, tt := range []struct {
		draining bool
		want     int
	}{{false, http.StatusOK}, {true, http.StatusServiceUnavailable}} {
		draining.Store(tt.draining)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != tt.want {
			t.Errorf("draining %v: /readyz %d, want %d (%s)", tt.draining, rec.Code, tt.want, rec.Body)
		}
	}
}

// Hand-backs use up no queue retry: no capacity, every breaker open, Redis
// out of reach, a job not written yet. Other failures do.
func TestIsFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no capacity", fmt.Errorf("x: %w", llm.ErrNoCapacity), false},
		{"breaker open", fmt.Errorf("x: %w", llm.ErrCircuitOpen), false},
		{"redis out of reach", fmt.Errorf("x: %w", redisx.Mark(io.EOF)), false},
		{"job not written yet", fmt.Errorf("x: %w", errJobNotWritten), false},
		{"provider 500", fmt.Errorf("x: %w", llm.ErrBrokenStream), true},
		{"unmarked EOF (a provider's)", fmt.Errorf("x: %w", io.EOF), true},
	}
	for _, tt := range tests {
		if got := isFailure(tt.err); got != tt.want {
			t.Errorf("%s: isFailure = %v, want %v", tt.name, got, tt.want)
		}
	}
}
