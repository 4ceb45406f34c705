package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/monitoring"
)

// Monitoring endpoints: computed from the samples the workers record in
// Redis when jobs end (package monitoring), so that every replica answers
// the same.

// defaultWindow is the window of stats and latency-breakdown without
// ?window=.
const defaultWindow = time.Hour

// maxWindow bounds ?window=.
const maxWindow = 24 * time.Hour

// StatsResponse is the answer of GET /api/monitoring/stats.
type StatsResponse struct {
	Window string                        `json:"window"`
	Jobs   int                           `json:"jobs"`
	Stages map[string]monitoring.Summary `json:"stages"`
	// Backlog is the backlog of member calls now, whatever the window;
	// absent when it could not be read.
	Backlog *BacklogView `json:"backlog,omitempty"`
}

// AlertsResponse is the answer of GET /api/monitoring/alerts.
type AlertsResponse struct {
	Window string             `json:"window"`
	Alerts []monitoring.Alert `json:"alerts"`
}

// BreakdownResponse is the answer of GET /api/monitoring/latency-breakdown.
type BreakdownResponse struct {
	Window string `json:"window"`
	monitoring.Breakdown
}

func (s *Server) window(c *gin.Context, def time.Duration) (time.Duration, bool) {
	v := c.Query("window")
	if v == "" {
		return def, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d > maxWindow {
		abort(c, http.StatusBadRequest, CodeInvalidField, "window", "window must be a duration between 1s and %s, e.g. 15m; got %q", maxWindow, v)
		return 0, false
	}
	return d, true
}

func (s *Server) samples(c *gin.Context, window time.Duration) ([]monitoring.Sample, bool) {
	out, err := monitoring.New(s.rdb).Recent(c.Request.Context(), s.now(), window)
	if err != nil {
		s.log.Error("read monitoring samples", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the job timings; try again")
		return nil, false
	}
	return out, true
}

func (s *Server) monitoringStats(c *gin.Context) {
	w, ok := s.window(c, defaultWindow)
	if !ok {
		return
	}
	samples, ok := s.samples(c, w)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, StatsResponse{Window: w.String(), Jobs: len(samples), Stages: monitoring.Stats(samples),
		Backlog: s.backlogView(c.Request.Context())})
}

func (s *Server) latencyBreakdown(c *gin.Context) {
	w, ok := s.window(c, defaultWindow)
	if !ok {
		return
	}
	samples, ok := s.samples(c, w)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, BreakdownResponse{Window: w.String(), Breakdown: monitoring.LatencyBreakdown(samples)})
}

func (s *Server) monitoringAlerts(c *gin.Context) {
	w, ok := s.window(c, s.cfg.Alerts.Window)
	if !ok {
		return
	}
	samples, ok := s.samples(c, w)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, AlertsResponse{Window: w.String(), Alerts: monitoring.Alerts(monitoring.Stats(samples), s.thresholds(), w)})
}
