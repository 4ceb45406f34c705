package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func newServer(t *testing.T, env map[string]string) (http.Handler, *monitoring.Store) {
	t.Helper()
	db := redistest.New(t)
	vars := map[string]string{"REDIS_URL": db.URL}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.LoadFrom(vars)
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = s.Close() })
	return s.Handler(), monitoring.New(db.Client)
}

func getJSON(t *testing.T, h http.Handler, path string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code == http.StatusOK && v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, rec.Body)
		}
	}
	return rec.Code
}

// record adds jobs whose total is each of totals (seconds), ended at.
func record(t *testing.T, st *monitoring.Store, at time.Time, totals ...int) {
	t.Helper()
	for i, s := range totals {
		ms := int64(s) * 1000
		err := st.Record(context.Background(), monitoring.Sample{
			JobID: fmt.Sprintf("job-%d-%d", at.UnixNano(), i), Status: "completed", At: at.UnixMilli(),
			Stages: map[string]int64{"queue_wait": 10, "snapshots": ms / 2, "fan_in": 10, "narrative": ms/2 - 20, "total": ms},
			Noun:   "snapshot", Members: []int64{ms / 2},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestMonitoringStatsKnownDurations(t *testing.T) {
	t.Parallel()
	h, st := newServer(t, nil)
	var empty api.StatsResponse
	if getJSON(t, h, "/api/monitoring/stats", &empty) != 200 || empty.Jobs != 0 || empty.Window != "1h0m0s" {
		t.Fatalf("empty stats %+v", empty)
	}
	// 1..100 s, plus 5 old jobs outside a 15-minute window.
	var totals []int
	for i := 1; i <= 100; i++ {
		totals = append(totals, i)
	}
	now := time.Now()
	record(t, st, now.Add(-time.Minute), totals...)
	record(t, st, now.Add(-30*time.Minute), 1000, 1000, 1000, 1000, 1000)

	var s api.StatsResponse
	if code := getJSON(t, h, "/api/monitoring/stats?window=15m", &s); code != 200 {
		t.Fatalf("stats: %d", code)
	}
	tot := s.Stages["total"]
	if s.Jobs != 100 || tot.Count != 100 || tot.P50 != 50000 || tot.P95 != 95000 || tot.P99 != 99000 {
		t.Errorf("15m stats: jobs %d total %+v", s.Jobs, tot)
	}
	if s.Stages["snapshot"].Count != 100 || s.Stages["snapshot"].P50 != 25000 {
		t.Errorf("snapshot stage %+v", s.Stages["snapshot"])
	}
	if getJSON(t, h, "/api/monitoring/stats", &s) != 200 || s.Jobs != 105 || s.Stages["total"].P99 != 1000000 {
		t.Errorf("1h stats: jobs %d total %+v", s.Jobs, s.Stages["total"])
	}
	if code := getJSON(t, h, "/api/monitoring/stats?window=forever", nil); code != http.StatusBadRequest {
		t.Errorf("bad window: %d", code)
	}

	var b api.BreakdownResponse
	if getJSON(t, h, "/api/monitoring/latency-breakdown?window=15m", &b) != 200 || b.Jobs != 100 || b.MeanTotalMS != 50500 {
		t.Fatalf("breakdown %+v", b)
	}
	for _, sh := range b.Stages {
		if sh.Stage == "snapshots" && sh.Percent != 50 {
			t.Errorf("snapshots share %+v", sh)
		}
	}
}

func TestMonitoringAlertsAppearAndClear(t *testing.T) {
	t.Parallel()
	h, st := newServer(t, map[string]string{"ALERT_WINDOW": "15m"})
	var a api.AlertsResponse
	if getJSON(t, h, "/api/monitoring/alerts", &a) != 200 || len(a.Alerts) != 0 {
		t.Fatalf("alerts with no jobs: %+v", a)
	}
	now := time.Now()
	// Totals of 50 s: over the 45 s warning; snapshots of 25 s: under 30 s.
	record(t, st, now, 50, 50, 50, 50, 50)
	if getJSON(t, h, "/api/monitoring/alerts", &a) != 200 || len(a.Alerts) != 1 ||
		a.Alerts[0].Name != "JobTotalP95High" || a.Alerts[0].Severity != "warning" || a.Alerts[0].ValueMS != 50000 || a.Alerts[0].ThresholdMS != 45000 {
		t.Fatalf("warning: %+v", a)
	}
	// 100 s totals (snapshots of 50 s): critical, and the snapshot alert.
	record(t, st, now, 100, 100, 100, 100, 100)
	if getJSON(t, h, "/api/monitoring/alerts", &a) != 200 || len(a.Alerts) != 2 ||
		a.Alerts[0].Name != "JobTotalP95Critical" || a.Alerts[0].Severity != "critical" || a.Alerts[1].Name != "SnapshotP95High" {
		t.Fatalf("critical: %+v", a)
	}
	// Many fast jobs bring the p95 down: the alerts clear.
	fast := make([]int, 300)
	for i := range fast {
		fast[i] = 5
	}
	record(t, st, now, fast...)
	if getJSON(t, h, "/api/monitoring/alerts", &a) != 200 || len(a.Alerts) != 0 {
		t.Fatalf("alerts after fast jobs: %+v", a)
	}
}

func TestAdminUIAuth(t *testing.T) {
	t.Parallel()
	// Without credentials it is not mounted.
	h, _ := newServer(t, nil)
	if code := getJSON(t, h, "/admin/queues", nil); code != http.StatusNotFound {
		t.Errorf("without credentials: %d, want 404", code)
	}

	h, _ = newServer(t, map[string]string{"ADMIN_USER": "ops", "ADMIN_PASSWORD": "s3cret", "ADMIN_TOKEN": "tok"})
	do := func(path string, set func(*http.Request)) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if set != nil {
			set(req)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, path := range []string{"/admin/queues", "/admin/queues/", "/admin/queues/api/queues"} {
		if rec := do(path, nil); rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s without credentials: %d", path, rec.Code)
		}
		if rec := do(path, func(r *http.Request) { r.SetBasicAuth("ops", "wrong") }); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d", path, rec.Code)
		}
		if rec := do(path, func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", path, rec.Code)
		}
		if rec := do(path, func(r *http.Request) { r.SetBasicAuth("ops", "s3cret") }); rec.Code != http.StatusOK {
			t.Errorf("%s with basic auth: %d %s", path, rec.Code, rec.Body.String()[:min(200, rec.Body.Len())])
		}
		if rec := do(path, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok") }); rec.Code != http.StatusOK {
			t.Errorf("%s with the token: %d", path, rec.Code)
		}
	}
	if rec := do("/admin/queues/api/queues", func(r *http.Request) { r.SetBasicAuth("ops", "s3cret") }); !strings.Contains(rec.Body.String(), "queues") {
		t.Errorf("asynqmon API: %s", rec.Body)
	}
}

func TestAdminUIRefusedInProductionWithoutCredentials(t *testing.T) {
	t.Parallel()
	const secret = "events-secret-0123456789abcdef-0123456789"
	cfg, err := config.LoadFrom(map[string]string{"ENV": "production", "EVENTS_TOKEN_SECRET": secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateAPI(); err == nil || !strings.Contains(err.Error(), "ADMIN_UI_ENABLED") {
		t.Errorf("production without admin credentials: %v", err)
	}
	for _, env := range []map[string]string{
		{"ENV": "production", "ADMIN_UI_ENABLED": "false", "EVENTS_TOKEN_SECRET": secret},
		{"ENV": "production", "ADMIN_TOKEN": "admin-token-0123456789abcdef-0123456789", "EVENTS_TOKEN_SECRET": secret},
		{"ENV": "development"},
	} {
		cfg, err := config.LoadFrom(env)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.ValidateAPI(); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
	db := redistest.New(t)
	cfg, err = config.LoadFrom(map[string]string{"ENV": "production", "REDIS_URL": db.URL, "API_ADDR": "127.0.0.1:0", "EVENTS_TOKEN_SECRET": secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.DiscardHandler)}).Run(t.Context()); err == nil || !strings.Contains(err.Error(), "ADMIN_UI_ENABLED") {
		t.Errorf("Run in production without admin credentials: %v", err)
	}
}
