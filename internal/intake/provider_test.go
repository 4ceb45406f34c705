package intake_test

import (
	"context"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// Answers cached by a provider are served only when the same provider
// serves the model now: pointing the service at another endpoint starts
// afresh.
func TestSubmitServesOnlyTheSameProvidersAnswers(t *testing.T) {
	t.Parallel()
	movedAll := config.LLM{BaseURL: "https://elsewhere.example/v1"}.ProviderIdentity
	movedExtraction := func(model string) string {
		if model == models.Extraction {
			return "fast https://fast-proxy.example/v1"
		}
		return providers(model)
	}
	tests := []struct {
		name          string
		cachedBy      intake.ProviderOf // the providers the answers were cached by
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
			ctx := context.Background()
			var snaps []job.Snapshot
			for i, tp := range s.TimePoints {
				text := "answer as of " + tp.Label
				id := cache.SnapshotID{Question: s.Question, Model: models.Snapshot, Provider: tt.cachedBy.Of(models.Snapshot), Date: tp.Date, Label: tp.Label, Complexity: s.Complexity}
				if err := f.cache.PutSnapshot(ctx, id, cache.Snapshot{Text: text, Model: models.Snapshot}); err != nil {
					t.Fatal(err)
				}
				snaps = append(snaps, job.Snapshot{Index: i, Date: tp.Date, Label: tp.Label, Text: text})
			}
			err := f.cache.PutAggregate(ctx, intake.AggregateID(models, tt.cachedBy, s, snaps), cache.Aggregate{
				KeyChanges: []job.KeyChange{{From: snaps[0].Date, To: snaps[1].Date, Changes: []string{"more models"}}},
				Narrative:  "It changed.",
			})
			if err != nil {
				t.Fatal(err)
			}
			out, err := f.in.Submit(t.Context(), s)
			if err != nil {
				t.Fatal(err)
			}
			if out.Cached != tt.wantCached || out.CachedSnapshots != tt.wantSnapshots {
				t.Errorf("outcome cached %v, cached snapshots %d; want %v, %d", out.Cached, out.CachedSnapshots, tt.wantCached, tt.wantSnapshots)
			}
		})
	}
}

// A nil ProviderOf names no provider; a set one names the provider the
// configuration routes each model to.
func TestProviderOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		of    intake.ProviderOf
		model string
		want  string
	}{
		{"nil", nil, "m", ""},
		{"unlisted model: the first provider", providers, models.Snapshot, "main https://main.example/v1"},
		{"listed model", providers, models.Extraction, "fast https://fast.example/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.of.Of(tt.model); got != tt.want {
				t.Errorf("Of(%q) = %q, want %q", tt.model, got, tt.want)
			}
		})
	}
}
