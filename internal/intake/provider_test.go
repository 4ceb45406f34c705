package intake_test

import (
	"testing"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
)

// Answers cached by a provider are served only when the same provider
// serves the model now: pointing the service at another endpoint starts
// afresh.
func TestSubmitServesOnlyTheSameProvidersAnswers(t *testing.T) {
	t.Parallel()
	movedAll := config.LLM{BaseURL: "https://elsewhere.example/v1"}.ProviderIdentity
	movedExtraction := func(model string) string {
		if model == extractModel {
			return "fast https://fast-proxy.example/v1"
		}
		return providers(model)
	}
	tests := []struct {
		name          string
		cachedBy      func(model string) string // the providers the answers were cached by
		wantCached    bool
		wantSnapshots int
	}{
		{"same providers", providers, true, 2},
		{"every model at another provider", movedAll, false, 0},
		{"extraction model at another provider", movedExtraction, false, 2},
		{"no provider named", nil, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			s := spec("What are the best AI models?")
			cachedBy := env
			cachedBy.ProviderOf = tt.cachedBy
			f.cacheAggregate(t, s, cachedBy, f.cacheSnapshots(t, s, cachedBy, 0, 1))
			out, err := f.in.Submit(t.Context(), s)
			if err != nil {
				t.Fatal(err)
			}
			if out.Cached != tt.wantCached || out.CachedMembers != tt.wantSnapshots {
				t.Errorf("outcome cached %v, cached snapshots %d; want %v, %d", out.Cached, out.CachedMembers, tt.wantCached, tt.wantSnapshots)
			}
		})
	}
}

// An Env without ProviderOf names no provider; EnvOf names the provider
// the configuration routes each model to, and the configured models.
func TestEnvOf(t *testing.T) {
	t.Parallel()
	if env.Model != snapModel || env.Extraction != extractModel || env.Narrative != narrModel {
		t.Fatalf("EnvOf: models %q %q %q, want %q %q %q", env.Model, env.Extraction, env.Narrative, snapModel, extractModel, narrModel)
	}
	tests := []struct {
		name  string
		env   jobkind.Env
		model string
		want  string
	}{
		{"nil", jobkind.Env{}, "m", ""},
		{"unlisted model: the first provider", env, snapModel, "main https://main.example/v1"},
		{"listed model", env, extractModel, "fast https://fast.example/v1"},
		{"no providers: the OPENAI_* provider", intake.EnvOf(config.LLM{BaseURL: "https://api.example/v1"}), "m", config.DefaultProvider + " https://api.example/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.env.Provider(tt.model); got != tt.want {
				t.Errorf("Provider(%q) = %q, want %q", tt.model, got, tt.want)
			}
		})
	}
}
