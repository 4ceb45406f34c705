package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// deadlineRecorder is a recorder that can lift a read deadline, as the
// server's writer can: it shows whether http.ResponseController reaches it.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	lifted bool
}

func (r *deadlineRecorder) SetReadDeadline(time.Time) error {
	r.lifted = true
	return nil
}

// metricsEngine is a router with the middleware in front of the api's
// recovery, some routes of its own and the SSE route, whose handler does
// what the request's mode says.
func metricsEngine(s *Server) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(s.httpMetrics(), s.recovery())
	r.GET("/hm/items/:id", func(c *gin.Context) {
		if c.Param("id") == "missing" {
			abort(c, http.StatusNotFound, CodeNotFound, "", "no item")
			return
		}
		c.String(http.StatusOK, "item")
	})
	r.POST("/hm/items", func(c *gin.Context) { c.JSON(http.StatusCreated, gin.H{"id": "1"}) })
	r.GET("/hm/panic", func(c *gin.Context) { panic("boom") })
	r.GET(streamRoute, func(c *gin.Context) {
		switch c.Query("mode") {
		case "bad":
			abort(c, http.StatusBadRequest, CodeInvalidField, "last_event_id", "bad id")
		case "ended":
			c.Status(http.StatusNoContent) // gin writes it after the handlers
		default:
			if err := http.NewResponseController(c.Writer).SetReadDeadline(time.Time{}); err != nil {
				abort(c, http.StatusInternalServerError, CodeInternal, "", "%v", err)
				return
			}
			c.Writer.Header().Set("Content-Type", "text/event-stream")
			c.Status(http.StatusOK)
			_, _ = c.Writer.WriteString("retry: 2000\n\n")
			c.Writer.Flush()
			_, _ = c.Writer.WriteString(": ping\n\n")
			c.Writer.Flush()
		}
	})
	return r
}

func requestCount(method, route, class string) float64 {
	var m dto.Metric
	_ = metrics.HTTPRequests.WithLabelValues(method, route, class).Write(&m)
	return m.GetCounter().GetValue()
}

func durationCount(method, route string) uint64 {
	var m dto.Metric
	_ = metrics.HTTPRequestDuration.WithLabelValues(method, route).(prometheus.Metric).Write(&m)
	return m.GetHistogram().GetSampleCount()
}

// TestHTTPMetrics is not parallel: the collectors are the process's, and
// the counts are compared before and after each request.
func TestHTTPMetrics(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := metricsEngine(s)
	tests := []struct {
		name         string
		method, path string
		status       int
		// the labels it is counted with
		lMethod, route, class string
		observed              bool // its duration
	}{
		{"matched", "GET", "/hm/items/42", 200, "GET", "/hm/items/:id", "2xx", true},
		{"matched, 4xx", "GET", "/hm/items/missing", 404, "GET", "/hm/items/:id", "4xx", true},
		{"POST", "POST", "/hm/items", 201, "POST", "/hm/items", "2xx", true},
		{"panic", "GET", "/hm/panic", 500, "GET", "/hm/panic", "5xx", true},
		{"no route", "GET", "/hm/nothing/here", 404, "GET", metrics.RouteUnmatched, "4xx", true},
		{"no such method", "DELETE", "/hm/items", 405, "DELETE", metrics.RouteUnmatched, "4xx", true},
		{"made-up method", "BREW", "/hm/items", 405, metrics.MethodOther, metrics.RouteUnmatched, "4xx", true},
		{"stream", "GET", "/api/jobs/j1/events", 200, "GET", streamRoute, "2xx", false},
		{"stream refused", "GET", "/api/jobs/j1/events?mode=bad", 400, "GET", streamRoute, "4xx", false},
		{"stream ended, nothing written", "GET", "/api/jobs/j1/events?mode=ended", 204, "GET", streamRoute, "2xx", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// In a bubble, to wait for the count made when the request's
			// context ends.
			synctest.Test(t, func(t *testing.T) {
				count, observed := requestCount(tt.lMethod, tt.route, tt.class), durationCount(tt.lMethod, tt.route)
				ctx, cancel := context.WithCancel(context.Background())
				rec := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
				h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, tt.method, tt.path, nil))
				cancel() // as the server does once the handler returns
				synctest.Wait()
				if rec.Code != tt.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
				}
				if got := requestCount(tt.lMethod, tt.route, tt.class) - count; got != 1 {
					t.Errorf("counted %v times with method %q, route %q, class %q; want once", got, tt.lMethod, tt.route, tt.class)
				}
				want := uint64(0)
				if tt.observed {
					want = 1
				}
				if got := durationCount(tt.lMethod, tt.route) - observed; got != want {
					t.Errorf("%d durations observed, want %d", got, want)
				}
				if tt.route == streamRoute && tt.status == http.StatusOK && !rec.lifted {
					t.Error("the stream's read deadline did not reach the connection's writer")
				}
			})
		})
	}
}

// TestHTTPMetricsScrape: the api's /metrics serves the HTTP metrics by
// route template, never by raw path.
func TestHTTPMetricsScrape(t *testing.T) {
	db := redistest.New(t)
	cfg, err := config.LoadFrom(map[string]string{"REDIS_URL": db.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = s.Close() })
	h := metricsEngine(s)
	for _, path := range []string{"/hm/items/scrape-raw-id", "/hm/scrape/raw/path"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}
	rec := httptest.NewRecorder()
	s.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`timetravel_http_requests_total{method="GET",route="/hm/items/:id",status_class="2xx"}`,
		`timetravel_http_requests_total{method="GET",route="unmatched",status_class="4xx"}`,
		`timetravel_http_request_duration_seconds_bucket{method="GET",route="/hm/items/:id",le="0.005"}`,
		`timetravel_http_request_duration_seconds_count{method="GET",route="unmatched"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "scrape-raw-id") || strings.Contains(body, "/hm/scrape/raw/path") {
		t.Error("/metrics shows a raw path")
	}
}
