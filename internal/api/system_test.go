package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/breaker"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// GET /api/monitoring/system shows the queued tasks of a submitted job,
// every model's breaker at its provider (an opened one as open) and the
// alert thresholds.
func TestMonitoringSystem(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_URL": db.URL, "JOB_DEADLINE": "60s", "LLM_MODEL": "sim-a", "LLM_EXTRACTION_MODEL": "sim-x",
		"ALERT_TOTAL_P95_WARNING": "40s",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = srv.Close() })
	h := srv.Handler()

	// Open sim-x's breaker as the gateway would, through the shared store.
	provider := cfg.LLM.ProviderOf("sim-x").Name
	set := breaker.NewSet(breaker.NewStore(db.Client, breaker.KeyPrefix), breaker.Settings{Failures: 1, MinRequests: 1, FailureRatio: 0.5})
	b, err := set.Get(provider + "/sim-x")
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(errors.New("provider answered 500"))
	if st, _ := b.State(); st != breaker.StateOpen {
		t.Fatalf("breaker %s after a failure, want open", st)
	}

	if rec := post(h, "application/json", `{"question":"What is on the queues?"}`); rec.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	var got api.SystemResponse
	if code := getJSON(t, h, "/api/monitoring/system", &got); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	queues := map[string]api.QueueDepth{}
	for _, q := range got.Queues {
		queues[q.Queue] = q
	}
	if q := queues[tasks.QueueSnapshot]; q.Pending != 4 {
		t.Errorf("snapshot queue %+v, want the job's 4 member tasks pending", q)
	}
	if q := queues[tasks.QueueAggregate]; q.Scheduled != 1 {
		t.Errorf("aggregate queue %+v, want its aggregation scheduled", q)
	}
	if _, ok := queues[tasks.QueueWebhook]; !ok || len(got.Queues) != 4 {
		t.Errorf("queues %+v, want snapshot, aggregate, webhook and warm", got.Queues)
	}
	states := map[string]string{}
	for _, br := range got.Breakers {
		if br.Provider != provider {
			t.Errorf("breaker %+v: provider, want %s", br, provider)
		}
		states[br.Model] = br.State
		if (br.State == "open") != (br.OpenUntil != nil && br.OpenUntil.After(time.Now())) {
			t.Errorf("breaker %+v: open until", br)
		}
	}
	if states["sim-x"] != "open" || states["sim-a"] != "closed" {
		t.Errorf("breakers %+v, want sim-x open and sim-a closed", got.Breakers)
	}
	th := got.Thresholds
	if th.TotalP95WarningMS != 40_000 || th.TotalP95CriticalMS != 90_000 || th.SnapshotP95WarningMS != 30_000 {
		t.Errorf("thresholds %+v", th)
	}
	if got.AdminURL != "" {
		t.Errorf("admin_url %q with no admin UI mounted", got.AdminURL)
	}
}
