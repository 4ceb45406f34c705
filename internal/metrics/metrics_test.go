package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/llm"
)

func TestOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, OutcomeOK},
		{"429", &llm.StatusError{StatusCode: 429}, OutcomeRateLimited},
		{"503", &llm.StatusError{StatusCode: 503}, OutcomeServerError},
		{"408", &llm.StatusError{StatusCode: 408}, OutcomeTimeout},
		{"400", &llm.StatusError{StatusCode: 400}, OutcomeClientError},
		{"timeout", fmt.Errorf("%w after 1m", llm.ErrTimeout), OutcomeTimeout},
		{"broken stream", fmt.Errorf("%w: %w", llm.ErrBrokenStream, io.ErrUnexpectedEOF), OutcomeBrokenStream},
		{"canceled", fmt.Errorf("post: %w", context.Canceled), OutcomeCanceled},
		{"bad answer", fmt.Errorf("%w: no JSON", llm.ErrBadAnswer), OutcomeBadAnswer},
		// A validator's error may wrap anything: the kind wins.
		{"bad answer wrapping a timeout", fmt.Errorf("%w: %w", llm.ErrBadAnswer, llm.ErrTimeout), OutcomeBadAnswer},
		{"other", errors.New("dial tcp: connection refused"), OutcomeError},
	}
	for _, tt := range tests {
		if got := Outcome(tt.err); got != tt.want {
			t.Errorf("%s: Outcome(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestObserveLLMRequest(t *testing.T) {
	t.Parallel()
	// A model of this test's own (the collectors are the process'), read
	// before and after (go test -count runs it again).
	const model = "metrics-test-model"
	outcomes := []string{OutcomeBadAnswer, OutcomeCanceled, OutcomeOK, OutcomeError}
	before := map[string]float64{}
	for _, o := range outcomes {
		before[o] = counter(t, LLMRequests.WithLabelValues("p", model, o))
	}
	tokensBefore := counter(t, LLMTokens.WithLabelValues("p", model, "out"))
	ObserveLLMRequest(LLMRequest{Provider: "p", Model: model, Outcome: OutcomeBadAnswer, Duration: time.Second, PromptTokens: 10, CompletionTokens: 5})
	ObserveLLMRequest(LLMRequest{Provider: "p", Model: model, Outcome: OutcomeCanceled, Duration: time.Second, Streamed: true, FirstToken: time.Millisecond})
	ObserveLLMRequest(LLMRequest{Provider: "p", Model: model, Outcome: OutcomeOK, Duration: time.Second, PromptTokens: 10, CompletionTokens: 7})
	want := map[string]float64{OutcomeBadAnswer: 1, OutcomeCanceled: 1, OutcomeOK: 1, OutcomeError: 0}
	for _, o := range outcomes {
		if got := counter(t, LLMRequests.WithLabelValues("p", model, o)) - before[o]; got != want[o] {
			t.Errorf("%s: %v requests, want %v", o, got, want[o])
		}
	}
	if got := counter(t, LLMTokens.WithLabelValues("p", model, "out")) - tokensBefore; got != 12 {
		t.Errorf("%v tokens out, want 12 (a rejected answer used them too)", got)
	}
}

// The worker's and the api's collectors register on registries of their
// own without clashing.
func TestRegister(t *testing.T) {
	t.Parallel()
	RegisterWorker(prometheus.NewRegistry(), nil)
	RegisterAPI(prometheus.NewRegistry())
}

func histogramCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// ObserveJob records time travel's stages and those of any other kind
// alike: a stage label value is just the stage's name.
func TestObserveJob(t *testing.T) {
	t.Parallel()
	// A status of this test's own; stages are read before and after.
	const status = "metrics-test-status"
	tests := []struct {
		name    string
		stages  map[string]int64
		member  string
		members []int64
		// want is the observations added per stage label.
		want map[string]uint64
	}{
		{"time travel",
			map[string]int64{StageQueueWait: 10, StageSnapshots: 900, StageFanIn: 5, StageKeyChanges: 200, StageNarrative: 300, StageTotal: 1500},
			StageSnapshot, []int64{500, 0, 900},
			map[string]uint64{StageQueueWait: 1, StageSnapshots: 1, StageFanIn: 1, StageKeyChanges: 1, StageNarrative: 1, StageTotal: 1, StageSnapshot: 2}},
		{"ensemble",
			map[string]int64{StageQueueWait: 10, "answers": 900, StageFanIn: 5, "analysis": 100, "synthesis": 300, StageTotal: 1500},
			"answer", []int64{400, 900},
			map[string]uint64{StageQueueWait: 1, "answers": 1, StageFanIn: 1, "analysis": 1, "synthesis": 1, StageTotal: 1, "answer": 2}},
	}
	for _, tt := range tests {
		// Sequential: both cases observe queue_wait, fan_in and total.
		before := map[string]uint64{}
		for stage := range tt.want {
			before[stage] = histogramCount(t, StageDuration.WithLabelValues(stage))
		}
		jobsBefore := histogramCount(t, JobDuration.WithLabelValues(status))
		ObserveJob(status, tt.stages, tt.member, tt.members)
		for stage, want := range tt.want {
			if got := histogramCount(t, StageDuration.WithLabelValues(stage)) - before[stage]; got != want {
				t.Errorf("%s: %d observations of stage %s, want %d", tt.name, got, stage, want)
			}
		}
		if got := histogramCount(t, JobDuration.WithLabelValues(status)) - jobsBefore; got != 1 {
			t.Errorf("%s: %d job durations, want 1", tt.name, got)
		}
	}
}
