package api

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/breaker"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// systemTTL is how long one reading of the queues and breakers serves
// every caller of this replica: a dashboard polled by many browsers costs
// Redis one reading per replica per TTL, not one per browser.
const systemTTL = 2 * time.Second

// SystemResponse is the answer of GET /api/monitoring/system: the queues'
// depth and the providers' breakers now, and the alert thresholds, for a
// dashboard to sample and draw.
type SystemResponse struct {
	At         time.Time       `json:"at"`
	Queues     []QueueDepth    `json:"queues"`
	Breakers   []BreakerStatus `json:"breakers"`
	Thresholds Thresholds      `json:"thresholds"`
	// AdminURL is the queue dashboard's path, when it is mounted.
	AdminURL string `json:"admin_url,omitempty"`
}

// QueueDepth is one queue's tasks by state.
type QueueDepth struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	// LatencyMS is the age of the oldest pending task.
	LatencyMS int64 `json:"latency_ms"`
	Paused    bool  `json:"paused"`
}

// BreakerStatus is the shared circuit breaker of one model at its
// provider.
type BreakerStatus struct {
	Provider string `json:"provider"`
	Model    string `json:"model"`
	// State is closed, half-open or open.
	State     string     `json:"state"`
	OpenUntil *time.Time `json:"open_until,omitempty"`
}

// Thresholds are the alert thresholds (ALERT_*), in milliseconds.
type Thresholds struct {
	WindowMS             int64 `json:"window_ms"`
	TotalP95WarningMS    int64 `json:"total_p95_warning_ms"`
	TotalP95CriticalMS   int64 `json:"total_p95_critical_ms"`
	SnapshotP95WarningMS int64 `json:"snapshot_p95_warning_ms"`
}

// systemReader reads and caches SystemResponse.
type systemReader struct {
	queues   *asynq.Inspector
	breakers *breaker.Store
	names    []breakerName

	mu   sync.Mutex
	last SystemResponse
	err  error
}

type breakerName struct{ provider, model string }

// systemQueues are the queues shown, in the order a job uses them.
var systemQueues = []string{tasks.QueueSnapshot, tasks.QueueAggregate, tasks.QueueWebhook, tasks.QueueWarm}

// breakerNames lists the breakers of every model a job may call: the
// allowed models, the configured defaults and their fallbacks, each at the
// provider that serves it.
func (s *Server) breakerNames() []breakerName {
	l := s.cfg.LLM
	models := l.AllowedModels()
	for _, m := range []string{l.Model, l.ExtractionModel, l.NarrativeModel} {
		if m != "" && !slices.Contains(models, m) {
			models = append(models, m)
		}
	}
	slices.Sort(models)
	out := make([]breakerName, len(models))
	for i, m := range models {
		out[i] = breakerName{provider: l.ProviderOf(m).Name, model: m}
	}
	return out
}

// read returns the reading of at most systemTTL ago, or a new one.
func (r *systemReader) read(ctx context.Context, now time.Time) (SystemResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil && !r.last.At.IsZero() && now.Sub(r.last.At) < systemTTL {
		return r.last, nil
	}
	resp := SystemResponse{At: now.UTC(), Queues: []QueueDepth{}, Breakers: []BreakerStatus{}}
	for _, q := range systemQueues {
		info, err := r.queues.GetQueueInfo(q)
		if err != nil {
			// A queue nothing was ever put on is not known to asynq yet.
			resp.Queues = append(resp.Queues, QueueDepth{Queue: q})
			continue
		}
		resp.Queues = append(resp.Queues, QueueDepth{
			Queue: q, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
			Retry: info.Retry, Archived: info.Archived, LatencyMS: info.Latency.Milliseconds(), Paused: info.Paused,
		})
	}
	names := make([]string, len(r.names))
	for i, n := range r.names {
		names[i] = n.provider + "/" + n.model
	}
	sts, err := r.breakers.Peek(ctx, now, names)
	if err != nil {
		r.err = err
		return SystemResponse{}, err
	}
	for i, st := range sts {
		b := BreakerStatus{Provider: r.names[i].provider, Model: r.names[i].model, State: st.State.String()}
		if !st.OpenUntil.IsZero() {
			u := st.OpenUntil.UTC()
			b.OpenUntil = &u
		}
		resp.Breakers = append(resp.Breakers, b)
	}
	r.last, r.err = resp, nil
	return resp, nil
}

func (s *Server) monitoringSystem(c *gin.Context) {
	resp, err := s.system.read(c.Request.Context(), s.now())
	if err != nil {
		s.log.Error("read queues and breakers", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "could not read the queues and breakers; try again")
		return
	}
	a := s.cfg.Alerts
	resp.Thresholds = Thresholds{
		WindowMS: a.Window.Milliseconds(), TotalP95WarningMS: a.TotalP95Warning.Milliseconds(),
		TotalP95CriticalMS: a.TotalP95Critical.Milliseconds(), SnapshotP95WarningMS: a.SnapshotP95Warning.Milliseconds(),
	}
	if s.admin != nil {
		resp.AdminURL = AdminRoot
	}
	c.JSON(http.StatusOK, resp)
}
