// Package worker runs the asynq task handlers of a time-travel job: one
// snapshot per time point, then one aggregation. Each queue gets an asynq
// server of its own, so that each has its own concurrency cap.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// Model is the LLM the handlers call.
type Model interface {
	Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error)
	Complete(ctx context.Context, r llm.Request) (llm.Response, error)
}

// Models names the models of each step.
type Models struct {
	// Snapshot answers snapshots of jobs that name no model.
	Snapshot string
	// Extraction makes the key-changes extraction.
	Extraction string
	// Narrative writes the narrative; empty means the job's model.
	Narrative string
}

// Watcher signals announcements about a job (see events.Hub.Watch).
type Watcher interface {
	Watch(jobID string) (<-chan struct{}, func())
}

// Handlers are the task handlers. They are safe for concurrent use.
type Handlers struct {
	store  *store.Store
	llm    Model
	insp   tasks.Inspector
	closed Watcher
	models Models
	log    *slog.Logger
}

// NewHandlers wires the handlers. closed announces jobs that closed
// (store.ClosedChannel); running work of such jobs stops at once. With a nil
// closed, work stops at its next write instead.
func NewHandlers(st *store.Store, m Model, insp tasks.Inspector, closed Watcher, models Models, log *slog.Logger) *Handlers {
	return &Handlers{store: st, llm: m, insp: insp, closed: closed, models: models, log: log}
}

// retryDelay backs off exponentially from 1 s with jitter, capped at 30 s.
// asynq's scheduling works in whole seconds.
func retryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	d := time.Second << min(n, 5)
	return min(d+rand.N(d/2+1), 30*time.Second)
}

// Run starts one asynq server per queue and the health endpoint, and blocks
// until ctx ends; then it stops taking tasks, lets running ones finish within
// the shutdown timeout, and hands the rest back to the queues.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	rdb, err := cfg.NewRedis("tt-worker", 2*(cfg.SnapshotConcurrency+cfg.AggregateConcurrency)+16, false)
	if err != nil {
		return err
	}
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	st := store.New(rdb, cfg.JobRetention)
	closed := events.NewHub(rdb, store.ClosedChannel, log)
	hubCtx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	go func() { _ = closed.Run(hubCtx) }()
	h := NewHandlers(st, llm.New(cfg.LLM), insp, closed, Models{
		Snapshot: cfg.LLM.Model, Extraction: cfg.LLM.ExtractionModel, Narrative: cfg.LLM.NarrativeModel,
	}, log)

	servers := []struct {
		queue       string
		concurrency int
		taskType    string
		handler     asynq.HandlerFunc
	}{
		{tasks.QueueSnapshot, cfg.SnapshotConcurrency, tasks.TypeSnapshot, h.HandleSnapshot},
		{tasks.QueueAggregate, cfg.AggregateConcurrency, tasks.TypeAggregate, h.HandleAggregate},
	}
	var started []*asynq.Server
	defer func() {
		for _, s := range started {
			s.Shutdown()
		}
	}()
	for _, q := range servers {
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:              q.concurrency,
			Queues:                   map[string]int{q.queue: 1},
			TaskCheckInterval:        cfg.TaskCheckInterval,
			DelayedTaskCheckInterval: time.Second,
			ShutdownTimeout:          cfg.ShutdownTimeout,
			RetryDelayFunc:           retryDelay,
			Logger:                   asynqLogger{log},
			LogLevel:                 asynq.WarnLevel,
			ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
				log.Warn("task failed", "queue", q.queue, "type", t.Type(), "err", err)
			}),
		})
		mux := asynq.NewServeMux()
		mux.HandleFunc(q.taskType, q.handler)
		if err := srv.Start(mux); err != nil {
			return fmt.Errorf("start %s server: %w", q.queue, err)
		}
		started = append(started, srv)
	}

	httpSrv := &http.Server{Addr: cfg.WorkerAddr, Handler: healthMux(rdb), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", cfg.WorkerAddr)
	if err != nil {
		return fmt.Errorf("listen on WORKER_ADDR %s: %w", cfg.WorkerAddr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("worker started", "addr", ln.Addr().String(), "snapshot_concurrency", cfg.SnapshotConcurrency,
		"aggregate_concurrency", cfg.AggregateConcurrency, "task_check_interval", cfg.TaskCheckInterval)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("health server: %w", err)
	}
	log.Info("worker stopping: finishing running tasks", "timeout", cfg.ShutdownTimeout)
	// Stop taking new tasks on every queue at once, then wait for each.
	for _, s := range started {
		s.Stop()
	}
	var wg sync.WaitGroup
	for _, s := range started {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
	started = nil
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	log.Info("worker stopped")
	return nil
}

func healthMux(rdb redis.UniversalClient) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := rdb.Ping(ctx).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"status":"unavailable","redis":%q}`, err.Error())
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	return mux
}
