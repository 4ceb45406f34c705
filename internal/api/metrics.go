package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// metricsHandler serves the api's Prometheus metrics from a registry of its
// own (so that several servers can live in one test process): Go runtime and
// process collectors, job durations (observed on cancel), plus the api's
// Redis connections and SSE clients.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	metrics.RegisterAPI(reg)
	reg.MustRegister(cloudwatch.PublishFailures)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "timetravel_api_redis_pool_connections",
			Help: "Connections in the api's Redis pool (the SSE hub holds one more, for Pub/Sub).",
		}, func() float64 {
			return float64(s.rdb.PoolStats().TotalConns)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "timetravel_sse_clients",
			Help: "SSE clients connected to this api process.",
		}, func() float64 { return float64(s.hub.Followers()) }),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
