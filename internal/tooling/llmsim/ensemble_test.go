package llmsim

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/ensemble"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// ensemblePrompt is p as the ensemble kind sends it to model.
func ensemblePrompt(model string, p ensemble.Prompt, jsonMode bool) prompt {
	return prompt{model: model, jsonMode: jsonMode, messages: []message{
		{role: "system", text: p.System}, {role: "user", text: p.User},
	}}
}

// The simulator recognises the ensemble kind's own prompts (package
// ensemble): each model answers in words of its own, labelled simulated;
// the synthesis counts the answers it merges; the analysis is JSON that
// the kind's parser reads, naming exactly the models whose answers it was
// given.
func TestEnsemblePrompts(t *testing.T) {
	const q = "Which programming language should a beginner learn first?"
	answers := map[string]string{}
	for _, m := range []string{"sim-alpha", "sim-beta", "sim-gamma"} {
		text := generate(ensemblePrompt(m, ensemble.AnswerPrompt(q), false))
		if !strings.HasPrefix(text, simLabel) || !strings.Contains(text, "Model "+m) || wordCount(text) < minWords {
			t.Errorf("%s's answer: %q", m, text)
		}
		if again := generate(ensemblePrompt(m, ensemble.AnswerPrompt(q), false)); again != text {
			t.Errorf("%s's answer is not deterministic", m)
		}
		for other, o := range answers {
			if o == text {
				t.Errorf("%s and %s answer alike", m, other)
			}
		}
		answers[m] = text
	}

	tests := []struct {
		name   string
		models []string
	}{
		{"two answers", []string{"sim-alpha", "sim-beta"}},
		{"three answers", []string{"sim-gamma", "sim-alpha", "sim-beta"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var done []job.Member
			for i, m := range tt.models {
				done = append(done, job.Member{Index: i, Label: m, Status: job.MemberCompleted, Text: answers[m]})
			}
			synth := generate(ensemblePrompt("sim-narrative", ensemble.SynthesisPrompt(q, done), false))
			if !strings.HasPrefix(synth, simLabel) || !strings.Contains(synth, fmt.Sprintf("the %d answers", len(done))) {
				t.Errorf("synthesis: %q", synth)
			}
			raw := generate(ensemblePrompt("sim-extract", ensemble.AnalysisPrompt(q, done), true))
			a, err := ensemble.ParseAnalysis(raw, done)
			if err != nil {
				t.Fatalf("the kind cannot parse the simulated analysis %q: %v", raw, err)
			}
			if len(a.Consensus) == 0 || !strings.Contains(a.Consensus[0], "(simulated)") {
				t.Errorf("consensus %v", a.Consensus)
			}
			if len(a.Disagreements) != 1 {
				t.Fatalf("disagreements %+v, want one", a.Disagreements)
			}
			var who []string
			for _, p := range a.Disagreements[0].Positions {
				who = append(who, p.Model)
			}
			if !slices.Equal(who, tt.models) {
				t.Errorf("positions of %v, want one per answer: %v", who, tt.models)
			}
			if len(a.UniqueClaims) != 1 || a.UniqueClaims[0].Model != tt.models[0] {
				t.Errorf("unique claims %+v, want one of %s", a.UniqueClaims, tt.models[0])
			}
		})
	}
}
