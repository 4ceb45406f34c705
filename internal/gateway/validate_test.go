package gateway

import (
	"context"
	"errors"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// A key-changes request validated by its parser: a rejected answer is
// asked again once, within the call, and counted as bad_answer; it never
// counts towards the breaker.
func TestValidatedAnswers(t *testing.T) {
	t.Parallel()
	snaps := []job.Member{
		{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberCompleted, Text: "GPT-3.5 leads."},
		{Index: 1, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}, Status: job.MemberCompleted, Text: "GPT-4o is out."},
	}
	const (
		good  = `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["GPT-4o released"]}]}`
		prose = "Sure! Between the two dates, GPT-4o was released."
	)
	ok := answer{text: good}
	bad := answer{text: prose}
	e500 := answer{err: &llm.StatusError{StatusCode: 500}}
	tests := []struct {
		name        string
		script      []answer
		stream      bool
		maxAttempts int // 0: 3
		retries     int // Policy.BadAnswerRetries
		failures    int // the breaker's threshold; 0: 1
		wantErr     bool
		attempts    int
		outcomes    map[string]float64
	}{
		{name: "the first answer passes", script: []answer{ok}, retries: 1,
			attempts: 1, outcomes: map[string]float64{metrics.OutcomeOK: 1}},
		{name: "the second answer passes", script: []answer{bad, ok}, retries: 1,
			attempts: 2, outcomes: map[string]float64{metrics.OutcomeBadAnswer: 1, metrics.OutcomeOK: 1}},
		{name: "two answers rejected", script: []answer{bad, bad, ok}, retries: 1, wantErr: true,
			attempts: 2, outcomes: map[string]float64{metrics.OutcomeBadAnswer: 2, metrics.OutcomeOK: 0}},
		{name: "no retry of answers", script: []answer{bad, ok}, retries: 0, wantErr: true,
			attempts: 1, outcomes: map[string]float64{metrics.OutcomeBadAnswer: 1}},
		{name: "over and above MaxAttempts", script: []answer{bad, ok}, retries: 1, maxAttempts: 1,
			attempts: 2, outcomes: map[string]float64{metrics.OutcomeBadAnswer: 1, metrics.OutcomeOK: 1}},
		{name: "a rejected answer, a server error, an answer", script: []answer{bad, e500, ok}, retries: 1, failures: 100,
			attempts: 3, outcomes: map[string]float64{metrics.OutcomeBadAnswer: 1, metrics.OutcomeServerError: 1, metrics.OutcomeOK: 1}},
		{name: "streams are not validated", script: []answer{bad}, retries: 1, stream: true,
			attempts: 1, outcomes: map[string]float64{metrics.OutcomeOK: 1, metrics.OutcomeBadAnswer: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model := uniqueModel("validated")
			b := setupFake(t, func(c *config.LLM, p *llm.Policy) {
				p.BadAnswerRetries = tt.retries
				if tt.maxAttempts > 0 {
					p.MaxAttempts = tt.maxAttempts
				}
				if tt.failures > 0 {
					c.BreakerFailures = tt.failures
				}
			})
			b.f.set(tt.script...)
			var parsed []timetravel.KeyChange
			r := llm.Request{Model: model, User: "key changes", JSON: true, Validate: func(text string) error {
				var err error
				parsed, err = timetravel.ParseKeyChanges(text, snaps)
				return err
			}}
			var (
				resp llm.Response
				err  error
			)
			if tt.stream {
				resp, err = b.g.Stream(context.Background(), r, func(string) error { return nil })
			} else {
				resp, err = b.g.Complete(context.Background(), r)
			}
			switch {
			case tt.wantErr:
				if !errors.Is(err, llm.ErrBadAnswer) || !errors.Is(err, timetravel.ErrMalformed) || llm.Retryable(err) {
					t.Fatalf("error %v; want a permanent ErrBadAnswer wrapping the parser's ErrMalformed", err)
				}
			case err != nil:
				t.Fatalf("call failed: %v", err)
			case tt.stream:
				if resp.Text != prose || parsed != nil {
					t.Fatalf("stream answered %q (validator ran: %v)", resp.Text, parsed != nil)
				}
			default:
				if resp.Text != good || len(parsed) != 1 || len(parsed[0].Changes) != 1 {
					t.Fatalf("answer %q parsed as %+v; want the good answer", resp.Text, parsed)
				}
			}
			if resp.Attempts != tt.attempts || b.f.count() != tt.attempts {
				t.Errorf("%d attempts, %d requests; want %d", resp.Attempts, b.f.count(), tt.attempts)
			}
			for outcome, want := range tt.outcomes {
				if got := requestsOf(t, model, outcome); got != want {
					t.Errorf("%v requests counted %s, want %v", got, outcome, want)
				}
			}
			if !b.admits(t, model) {
				t.Error("the breaker refuses: rejected answers were counted as the provider's failures")
			}
		})
	}
}
