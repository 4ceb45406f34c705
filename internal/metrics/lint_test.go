package metrics_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// recorder registers on reg and keeps the collectors it was given.
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.reg.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// touch makes a child of every vector among cs, whatever its labels, so
// that the vector shows in a gather: a vector without children exposes
// nothing, and the lint would not see it.
func touch(t *testing.T, cs []prometheus.Collector) {
	t.Helper()
	for _, c := range cs {
		var get func(lvs ...string) error
		switch v := c.(type) {
		case *prometheus.CounterVec:
			get = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
		case *prometheus.GaugeVec:
			get = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
		case *prometheus.HistogramVec:
			get = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
		case *prometheus.SummaryVec:
			get = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
		default:
			continue
		}
		// The number of labels is not exported: the right one is the one
		// that does not fail.
		var lvs []string
		for ; len(lvs) <= 10; lvs = append(lvs, "lint") {
			if get(lvs...) == nil {
				break
			}
		}
		if len(lvs) > 10 {
			t.Fatalf("could not make a child of %T", c)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// described returns the names of all the metrics cs describe.
func described(t *testing.T, cs []prometheus.Collector) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in descriptor %s", d)
		}
		seen[m[1]] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lint fails t on every problem promlint (promtool check metrics) finds.
func lint(t *testing.T, what string, l *promlint.Linter) {
	t.Helper()
	problems, err := l.Lint()
	if err != nil {
		t.Fatalf("%s: lint: %v", what, err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s: %s", what, p.Metric, p.Text)
	}
}

// enqueueOne puts a task on a queue of db, so that asynq's queue metrics
// have a queue to show.
func enqueueOne(t *testing.T, db redistest.DB) {
	t.Helper()
	c := asynq.NewClientFromRedisClient(db.Client)
	if _, err := c.Enqueue(asynq.NewTask("lint", nil), asynq.Queue("lint")); err != nil {
		t.Fatal(err)
	}
}

// TestRegistriesLint: every metric RegisterAPI and RegisterWorker register,
// each vector with a child, passes the Prometheus lint, and the lint saw
// them all.
func TestRegistriesLint(t *testing.T) {
	db := redistest.New(t)
	enqueueOne(t, db)
	tests := []struct {
		name     string
		register func(prometheus.Registerer)
	}{
		{"api", metrics.RegisterAPI},
		{"worker", func(reg prometheus.Registerer) {
			metrics.RegisterWorker(reg, asynq.NewInspectorFromRedisClient(db.Client))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{reg: prometheus.NewPedanticRegistry()}
			tt.register(r)
			touch(t, r.collectors)
			mfs, err := r.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			lint(t, tt.name, promlint.NewWithMetricFamilies(mfs))
			gathered := map[string]bool{}
			for _, mf := range mfs {
				gathered[mf.GetName()] = true
			}
			for _, n := range described(t, r.collectors) {
				if !gathered[n] {
					t.Errorf("%s is registered but was not gathered: the lint did not see it", n)
				}
			}
		})
	}
}

// TestServedMetricsLint: what the api's and the worker's /metrics serve, as
// production builds them, passes the Prometheus lint; the worker serves
// asynq's queue metrics under their new names and none of the old.
func TestServedMetricsLint(t *testing.T) {
	db := redistest.New(t)
	enqueueOne(t, db)
	cfg, err := config.LoadFrom(map[string]string{"REDIS_URL": db.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = s.Close() })
	tests := []struct {
		name string
		h    http.Handler
		want []string
	}{
		{"api", s.Handler(), []string{"timetravel_http_requests_total", "go_goroutines", "process_cpu_seconds_total"}},
		{"worker", worker.MetricsHandler(db.Client), []string{
			"asynq_queue_tasks", "asynq_queue_size", "asynq_queue_latency_seconds",
			"asynq_queue_memory_usage_approx_bytes", "asynq_queue_paused",
			"asynq_tasks_processed_total", "asynq_tasks_failed_total",
			"timetravel_queue_metrics_errors_total", "go_goroutines",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Twice for the api: the first scrape's request is counted in
			// the second's timetravel_http_requests_total.
			var rec *httptest.ResponseRecorder
			for range 2 {
				rec = httptest.NewRecorder()
				tt.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				if rec.Code != http.StatusOK {
					t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
				}
			}
			body := rec.Body.String()
			lint(t, tt.name, promlint.New(strings.NewReader(body)))
			for _, n := range tt.want {
				if !strings.Contains(body, "# TYPE "+n+" ") {
					t.Errorf("%s /metrics lacks %s", tt.name, n)
				}
			}
			for _, old := range []string{"asynq_tasks_enqueued_total", "asynq_queue_paused_total"} {
				if strings.Contains(body, old) {
					t.Errorf("%s /metrics still serves %s", tt.name, old)
				}
			}
		})
	}
}

// Compile-time check that the recorder is a Registerer.
var _ prometheus.Registerer = (*recorder)(nil)
