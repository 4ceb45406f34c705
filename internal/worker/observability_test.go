package worker_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

// TestObservabilityEndToEnd runs a job from the api's POST through the
// worker's real servers, gateway and the LLM simulator, with an in-memory
// span exporter, then checks the trace, both /metrics and the monitoring
// endpoints.
func TestObservabilityEndToEnd(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(t.Context())
	})

	s := newSimHarness(t, simOptions{})
	// The api plans the members' calls with its configured models: the
	// worker's, as in a deployment where both read one configuration.
	cfg, err := config.LoadFrom(map[string]string{"REDIS_URL": s.dbURL, "JOB_DEADLINE": "60s",
		"LLM_MODEL": simSnap, "LLM_EXTRACTION_MODEL": simExtract, "LLM_NARRATIVE_MODEL": simNarr})
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: s.rdb, Kinds: kinds.Registry(), Log: slog.New(slog.DiscardHandler)})
	h := srv.Handler()

	body := `{"question":"What are the best AI models?","complexity":"brief","time_points":[` +
		`{"date":"2023-01-01","label":"Jan 2023"},{"date":"2023-03-01","label":"Mar 2023"},{"date":"2024-05-01","label":"May 2024"}]}`
	req := httptest.NewRequest(http.MethodPost, "/api/time-travel", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", rec.Code, rec.Body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil {
		t.Fatal(err)
	}
	wantEnded(t, s.follow(acc.JobID, endTimeout), s.job(acc.JobID), job.StatusCompleted)

	// One trace: api span → 3 snapshot spans and the aggregation span →
	// LLM request spans under them.
	// The aggregation's span ends after the terminal event: wait for it.
	var spans tracetest.SpanStubs
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		spans = exp.GetSpans()
		if slices.ContainsFunc(spans, func(sp tracetest.SpanStub) bool {
			for _, a := range sp.Attributes {
				if sp.Name == "aggregate" && a.Key == "job_id" && a.Value.AsString() == acc.JobID {
					return true
				}
			}
			return false
		}) {
			break
		}
	}
	var root *tracetest.SpanStub
	for i := range spans {
		if spans[i].Name == "POST /api/time-travel" {
			for _, a := range spans[i].Attributes {
				if a.Key == "job_id" && a.Value.AsString() == acc.JobID {
					root = &spans[i]
				}
			}
		}
	}
	if root == nil {
		t.Fatalf("no api span for job %s among %d spans", acc.JobID, len(spans))
	}
	traceID := root.SpanContext.TraceID()
	byName := map[string][]tracetest.SpanStub{}
	ids := map[trace.SpanID]string{}
	for _, sp := range spans {
		if sp.SpanContext.TraceID() != traceID {
			continue
		}
		byName[sp.Name] = append(byName[sp.Name], sp)
		ids[sp.SpanContext.SpanID()] = sp.Name
	}
	if n := len(byName["snapshot"]); n != 3 {
		t.Errorf("snapshot spans in the trace: %d, want 3", n)
	}
	if n := len(byName["aggregate"]); n < 1 {
		t.Errorf("no aggregation span in the trace")
	}
	for _, name := range []string{"snapshot", "aggregate"} {
		for _, sp := range byName[name] {
			if sp.Parent.SpanID() != root.SpanContext.SpanID() {
				t.Errorf("%s span's parent is %s, want the api span", name, ids[sp.Parent.SpanID()])
			}
		}
	}
	llmSpans := byName["llm.request"]
	if len(llmSpans) < 5 { // 3 snapshots, key changes, narrative
		t.Errorf("LLM spans in the trace: %d, want at least 5", len(llmSpans))
	}
	parents := map[string]int{}
	for _, sp := range llmSpans {
		parents[ids[sp.Parent.SpanID()]]++
		var model bool
		for _, a := range sp.Attributes {
			if a.Key == "gen_ai.request.model" && a.Value.AsString() != "" {
				model = true
			}
		}
		if !model {
			t.Errorf("LLM span without gen_ai.request.model: %v", sp.Attributes)
		}
	}
	if parents["snapshot"] < 3 || parents["aggregate"] < 2 || len(parents) != 2 {
		t.Errorf("LLM spans by parent: %v, want ≥3 under snapshot and ≥2 under aggregate, none elsewhere", parents)
	}

	// The worker's /metrics.
	wm := scrape(t, worker.MetricsHandler(s.rdb), "/metrics")
	for _, w := range []struct{ name, labels string }{
		{"timetravel_job_duration_seconds_count", `status="completed"`},
		{"timetravel_stage_duration_seconds_count", `stage="total"`},
		{"timetravel_stage_duration_seconds_count", `stage="snapshot"`},
		{"timetravel_stage_duration_seconds_count", `stage="queue_wait"`},
		{"timetravel_llm_requests_total", `outcome="ok"`},
		{"timetravel_llm_request_duration_seconds_count", `model="sim-snap"`},
		{"timetravel_llm_time_to_first_token_seconds_count", `model="sim-snap"`},
		{"timetravel_llm_tokens_total", `direction="out"`},
		{"timetravel_llm_capacity_wait_seconds_count", `result="admitted"`},
		{"asynq_tasks_processed_total", `queue="snapshot"`},
	} {
		if v := sum(wm, w.name, w.labels); v <= 0 {
			t.Errorf("worker /metrics: %s{%s} = %v, want > 0", w.name, w.labels, v)
		}
	}
	if !strings.Contains(wm, "timetravel_webhook_deliveries_total") {
		t.Error("worker /metrics lacks timetravel_webhook_deliveries_total")
	}

	// A second job, canceled through the api: the api's /metrics has it.
	rec = httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodPost, "/api/time-travel", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	var acc2 api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc2); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/api/jobs/"+acc2.JobID, nil))
	if rec.Code != http.StatusOK && rec.Code != http.StatusConflict {
		t.Fatalf("DELETE: %d %s", rec.Code, rec.Body)
	}
	s.follow(acc2.JobID, endTimeout)
	am := scrape(t, h, "/metrics")
	for _, w := range []struct{ name, labels string }{
		{"timetravel_job_duration_seconds_count", `status=`},
		{"timetravel_stage_duration_seconds_count", `stage="total"`},
	} {
		if v := sum(am, w.name, w.labels); v <= 0 {
			t.Errorf("api /metrics: %s{%s} = %v, want > 0", w.name, w.labels, v)
		}
	}
	if rec.Code == http.StatusOK && sum(am, "timetravel_job_duration_seconds_count", `status="canceled"`) <= 0 {
		t.Error("api /metrics: no canceled job observed")
	}
	if !strings.Contains(am, "timetravel_sse_clients") {
		t.Error("/metrics lacks the api's metrics")
	}
	// The Prometheus text is not under the public prefix.
	if got := scrapeStatus(t, h, "/api/monitoring/metrics"); got != http.StatusNotFound {
		t.Errorf("/api/monitoring/metrics answered %d, want 404", got)
	}

	// The monitoring endpoints see the finished job.
	var st api.StatsResponse
	if err := json.Unmarshal([]byte(scrape(t, h, "/api/monitoring/stats")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Jobs < 1 || st.Stages["total"].Count < 1 || st.Stages["snapshot"].Count < 3 || st.Stages["total"].P50 <= 0 {
		t.Errorf("stats after the job: %+v", st)
	}
	var bd api.BreakdownResponse
	if err := json.Unmarshal([]byte(scrape(t, h, "/api/monitoring/latency-breakdown")), &bd); err != nil {
		t.Fatal(err)
	}
	if bd.Jobs < 1 || len(bd.Stages) == 0 {
		t.Errorf("breakdown after the job: %+v", bd)
	}
}

func scrape(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// scrapeStatus returns the status of GET path.
func scrapeStatus(t *testing.T, h http.Handler, path string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

// sum adds the values of the series of name whose labels contain labels.
func sum(text, name, labels string) float64 {
	total := 0.0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !strings.Contains(line[:i], labels) {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			total += v
		}
	}
	return total
}
