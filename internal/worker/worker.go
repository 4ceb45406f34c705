// Package worker runs the asynq task handlers of a job of any kind: one
// task per member call of the job's plan (a time point's snapshot, a
// model's answer), then one aggregation over the members' answers, then,
// for a job with a callback URL, the webhook delivery. Nothing here knows a
// kind: member tasks carry their call (tasks.MemberPayload) and the
// aggregation asks the job's kind (package jobkind) for its parts. Each
// queue gets an asynq server of its own, so that each has its own
// concurrency cap.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/cloudwatch"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/gateway"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/limit"
	"github.com/timetravel-ai/timetravel/internal/liveness"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/quota"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/wakeup"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Model is the LLM the handlers call.
type Model interface {
	Stream(ctx context.Context, r llm.Request, onText func(string) error) (llm.Response, error)
	Complete(ctx context.Context, r llm.Request) (llm.Response, error)
}

// Admitter is a Model that guards provider capacity (gateway.Gateway).
// Admit takes what the first request of a call of r needs, ahead of the
// call, and returns a context that carries it to the call, and a function
// that frees it if the call is not made. Its llm.ErrNoCapacity means the
// task should go back to the queue; llm.ErrCircuitOpen, that every model
// that could answer is out of service.
type Admitter interface {
	Admit(ctx context.Context, r llm.Request) (context.Context, func(), error)
}

// Watcher signals announcements about a job (see events.Hub.Watch).
type Watcher interface {
	Watch(jobID string) (<-chan struct{}, func())
}

// Handlers are the task handlers. They are safe for concurrent use.
type Handlers struct {
	store    *store.Store
	llm      Model
	insp     tasks.Inspector
	closed   Watcher
	kinds    *jobkind.Registry
	env      jobkind.Env
	log      *slog.Logger
	webhooks Webhooks
	caching  Caching
	// life runs the effects of the ends of jobs and queues their webhooks.
	life *lifecycle.Lifecycle
	// batching gathers streamed text into events.
	batching Batching
}

// NewHandlers wires the handlers. closed announces jobs that closed
// (store.ClosedChannel); running work of such jobs stops at once. With a nil
// closed, work stops at its next write instead. reg holds the kinds whose
// jobs the handlers aggregate and show (webhooks); env is what their plans
// depend on (the configured models and their providers), the same as the
// api's, or the aggregation and the caches would not agree with the plan.
// The jobs' ends go through a lifecycle on st that queues no webhooks and
// releases no in-flight entries until SetLifecycle gives the process's.
func NewHandlers(st *store.Store, m Model, insp tasks.Inspector, closed Watcher, reg *jobkind.Registry, env jobkind.Env, log *slog.Logger) *Handlers {
	return &Handlers{store: st, llm: m, insp: insp, closed: closed, kinds: reg, env: env, log: log,
		life: lifecycle.New(lifecycle.Options{Store: st, Inspector: insp, Log: log}), batching: DefaultBatching}
}

// SetBatching sets how streamed text is gathered into events (Batching).
// Call it before the servers start.
func (h *Handlers) SetBatching(b Batching) { h.batching = b }

// SetLifecycle makes l the owner of the ends of the jobs the handlers end
// (their in-flight entries, timings and webhooks): the process's one, which
// its intake shares. Call it before the servers start.
func (h *Handlers) SetLifecycle(l *lifecycle.Lifecycle) { h.life = l }

// Where retries happen: an LLM call retries failed requests itself, briefly
// and a bounded number of times, and falls back to other models (package
// gateway); what it cannot fix in the task's run goes back to asynq:
//   - a lack of provider capacity (llm.ErrNoCapacity), every breaker open
//     (llm.ErrCircuitOpen, after waiting as for capacity) and Redis out of
//     reach are handed back without using up a retry (isFailure), after a
//     short jittered delay;
//   - other retryable failures (spent attempts, a long Retry-After) use up
//     a retry, after an exponential backoff that is never shorter than the
//     wait the error names (llm.QueueDelay).

// isFailure tells asynq which errors use up a retry: all but a hand-back
// (handedBack).
func isFailure(err error) bool { return !handedBack(err) }

// retryDelay is the wait before asynq runs a task again (whole seconds).
func retryDelay(n int, err error, _ *asynq.Task) time.Duration { return llm.QueueDelay(n, err) }

// Queue is one line of the worker's layout: a queue, the handler of each
// task type its asynq server takes, its concurrency cap per process and,
// optionally, its own retry delay (nil: retryDelay, the LLM work's).
type Queue struct {
	Name        string
	Concurrency int
	Handlers    map[string]asynq.HandlerFunc
	RetryDelay  asynq.RetryDelayFunc
}

// Layout returns the worker's queues, each served by an asynq server of its
// own. A further queue is one more line here (and its concurrency
// variable). Member tasks of every kind run on the snapshot queue. The warm
// queue runs cache-warming jobs' members and aggregations as background
// work (llm.WithBackground) and the periodic warming task.
func (h *Handlers) Layout(cfg config.Config) []Queue {
	return []Queue{
		{tasks.QueueSnapshot, cfg.SnapshotConcurrency, map[string]asynq.HandlerFunc{tasks.TypeMember: h.HandleMember}, nil},
		{tasks.QueueAggregate, cfg.AggregateConcurrency, map[string]asynq.HandlerFunc{tasks.TypeAggregate: h.HandleAggregate}, nil},
		{tasks.QueueWebhook, cfg.Webhook.Concurrency, map[string]asynq.HandlerFunc{
			tasks.TypeWebhook: h.HandleWebhook, tasks.LegacyTypeWebhook: h.HandleWebhook,
		}, h.webhookRetryDelay},
		{tasks.QueueWarm, max(cfg.Cache.WarmConcurrency, 1), map[string]asynq.HandlerFunc{
			tasks.TypeMember:     background(h.HandleMember),
			tasks.TypeAggregate:  background(h.HandleAggregate),
			tasks.TypeWarm:       h.HandleWarm,
			tasks.LegacyTypeWarm: h.HandleWarm,
		}, nil},
	}
}

// ServerOptions are the settings every queue server shares.
type ServerOptions struct {
	// Middleware wraps every handler (the liveness claims).
	Middleware               []asynq.MiddlewareFunc
	TaskCheckInterval        time.Duration
	DelayedTaskCheckInterval time.Duration
	ShutdownTimeout          time.Duration
	Log                      *slog.Logger
}

// StartServers starts one asynq server per queue, with the retry rules
// above. On error it stops those it started. The caller shuts them down.
func StartServers(rdb redis.UniversalClient, queues []Queue, o ServerOptions) ([]*asynq.Server, error) {
	if o.DelayedTaskCheckInterval <= 0 {
		o.DelayedTaskCheckInterval = time.Second
	}
	var started []*asynq.Server
	for _, q := range queues {
		delay := q.RetryDelay
		if delay == nil {
			delay = retryDelay
		}
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:              q.Concurrency,
			Queues:                   map[string]int{q.Name: 1},
			TaskCheckInterval:        o.TaskCheckInterval,
			DelayedTaskCheckInterval: o.DelayedTaskCheckInterval,
			ShutdownTimeout:          o.ShutdownTimeout,
			IsFailure:                isFailure,
			RetryDelayFunc:           delay,
			Logger:                   asynqLogger{o.Log},
			LogLevel:                 asynq.WarnLevel,
			ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
				if !isFailure(err) {
					o.Log.Debug("task handed back", "queue", q.Name, "type", t.Type(), "reason", err)
					return
				}
				o.Log.Warn("task failed", "queue", q.Name, "type", t.Type(), "err", err)
			}),
		})
		mux := asynq.NewServeMux()
		mux.Use(o.Middleware...)
		for typ, handler := range q.Handlers {
			mux.HandleFunc(typ, handler)
		}
		if err := srv.Start(mux); err != nil {
			for _, s := range started {
				s.Shutdown()
			}
			return nil, fmt.Errorf("start %s server: %w", q.Name, err)
		}
		started = append(started, srv)
	}
	return started, nil
}

// Deps are what the process's composition root builds once and hands to
// the worker (cmd/worker builds them; a test may build its own).
type Deps struct {
	// Redis is the client of every queue server, hub and store of the
	// worker; its pool should hold PoolSize(cfg) connections. Required.
	// The caller closes it, after Run returns. Run adds hooks to it
	// (package wakeup: the queue servers' waits, the announcements of the
	// tasks it makes pending), which pass commands through unchanged
	// after Run returns: give each Run a client of its own.
	Redis redis.UniversalClient
	// Kinds are the job kinds whose jobs the worker runs (kinds.Registry()
	// in the service; a test may register a kind of its own). Required:
	// the same kinds as the api's, or their plans and caches disagree.
	Kinds *jobkind.Registry
	// Log receives the worker's logs; nil discards them.
	Log *slog.Logger
}

// PoolSize is the Redis connections a worker configured by cfg needs: two
// per task it may run at once (its call and its writes), and some for the
// hubs, the lease and the servers' own loops.
func PoolSize(cfg config.Config) int {
	return 2*(cfg.SnapshotConcurrency+cfg.AggregateConcurrency+cfg.Webhook.Concurrency+cfg.Cache.WarmConcurrency) + 16
}

// Run starts one asynq server per queue and the health endpoint (on
// cfg.WorkerAddr), and blocks until ctx ends; then it stops taking tasks,
// lets running ones finish within the shutdown timeout, hands the rest back
// to the queues, and stops everything it started before it returns. It is
// the worker's composition root: it builds each of the worker's objects
// once. The shutdown order: readiness fails, the queue servers stop taking
// tasks and drain, the health endpoint closes, then the lease and the
// watchdog, the warming scheduler, the providers' and receivers'
// connections and the hubs stop, each after what uses it.
func Run(ctx context.Context, cfg config.Config, d Deps) error {
	if d.Redis == nil || d.Kinds == nil {
		return errors.New("worker: Deps.Redis and Deps.Kinds are required")
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rdb := d.Redis
	insp := tasks.NewInspector(rdb)
	// Writes wait out a Redis outage: work resumes when Redis is back.
	st := store.New(rdb, cfg.JobRetention).Patient()
	// One Pub/Sub connection per announcement channel: jobs that close, and
	// provider slots that free up.
	closed := events.NewHub(rdb, store.ClosedChannel, log)
	released := events.NewHub(rdb, limit.ReleasedChannel, log)
	hubCtx, stopHubs := context.WithCancel(context.Background())
	var hubs sync.WaitGroup
	defer func() {
		stopHubs()
		hubs.Wait()
	}()
	// A third for queue wake-ups: the queue servers wait for one instead
	// of polling (package wakeup). Every task this process makes pending
	// is announced on it too.
	wakes := events.NewHub(rdb, wakeup.Channel, log)
	for _, hub := range []*events.Hub{closed, released, wakes} {
		hubs.Go(func() { _ = hub.Run(hubCtx) })
	}
	announcer := wakeup.NewAnnouncer(rdb)
	rdb.AddHook(announcer.Hook())
	hubs.Go(func() { announcer.Run(hubCtx) })
	waiter := wakeup.NewWaiter(wakes, cfg.QueueIdleWait)
	if cfg.QueueIdleWait > 0 {
		rdb.AddHook(waiter.Hook())
	}
	budget := quota.New(rdb).Budget(tokenBudget(auth.New(rdb), cfg.Access))
	gw := gateway.New(cfg.LLM, gateway.Options{Redis: rdb, Wake: released, Log: log, BackgroundShare: cfg.Cache.WarmShare, UrgentReserve: cfg.LLM.AggregationReserve, Budget: budget})
	defer gw.Close()
	// The kinds and the models' environment, as the api has them: the
	// plans, parts and cache keys of both sides agree.
	reg := d.Kinds
	env := intake.EnvOf(cfg.LLM)
	h := NewHandlers(st, gw, insp, closed, reg, env, log)
	h.SetBatching(Batching{Interval: cfg.StreamFlushInterval, Bytes: cfg.StreamFlushBytes})
	signer, err := webhook.SignerOf(cfg.Webhook)
	if err != nil {
		return fmt.Errorf("config: WEBHOOK_SECRET: %w", err)
	}
	// One enqueuer for webhooks and warming jobs' tasks; one in-flight
	// registry, one cache and one lifecycle, shared by the handlers and the
	// intake of warming jobs.
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(rdb), cfg.SnapshotMaxRetry, cfg.SnapshotTaskTimeout())
	inflight := cache.NewInflight(rdb)
	life := lifecycle.New(lifecycle.Options{Store: st, Webhooks: enq, Inspector: insp, Inflight: inflight, Log: log})
	h.SetLifecycle(life)
	wh := Webhooks{}
	if signer != nil {
		wh.Sender = webhook.NewSender(webhook.PolicyOf(cfg.Webhook), signer, cfg.Webhook.AttemptTimeout)
		defer wh.Sender.Close()
	}
	h.SetWebhooks(wh)
	in := intake.FromConfig(cfg, intake.Options{
		Store: st, Enqueuer: enq, Inspector: insp, Inflight: inflight, Lifecycle: life, Kinds: reg, Env: env, Log: log,
	})
	h.SetCaching(Caching{Intake: in, Cache: in.Cache(), WarmQuestions: cfg.Cache.Questions()})
	var questions []string
	if cfg.Cache.Caching {
		questions = cfg.Cache.Questions()
	} else if len(cfg.Cache.Questions()) > 0 {
		log.Warn("CACHE_WARM_QUESTIONS ignored: caching is off (CACHE_ENABLED=false)")
	}
	warming, err := StartWarming(rdb, cfg.Cache.WarmSchedule, questions, log)
	if err != nil {
		return err
	}
	if warming != nil {
		defer warming.Shutdown()
	}

	// The liveness lease and the deadline watchdog run for as long as the
	// servers do, and stop after them.
	layout := h.Layout(cfg)
	queues := make([]string, len(layout))
	for i, q := range layout {
		queues[i] = q.Name
	}
	live := liveness.New(rdb, liveness.Options{Log: log, Queues: queues, OnReap: func(_ string, n int) {
		metrics.ReapedTasks.Add(float64(n))
	}})
	bgCtx, stopBg := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() {
		stopBg()
		bg.Wait()
	}()
	bg.Go(func() { _ = live.Run(bgCtx) })
	bg.Go(func() { h.WatchDeadlines(bgCtx, live.ID()) })

	// CloudWatch metrics, when configured. Stopped after the servers have
	// drained (deferred calls run in reverse): its last flush carries the
	// observations of the work that finished during the drain.
	if cfg.CloudWatch.Enabled() {
		pub, err := cloudwatch.FromConfig(ctx, cfg.CloudWatch, cloudwatch.Options{
			Log: log, Gauges: cloudwatch.WorkerGauges(asynq.NewInspectorFromRedisClient(rdb)),
		})
		if err != nil {
			return err
		}
		defer pub.Start()()
		log.Info("cloudwatch metrics on", "namespace", cfg.CloudWatch.Namespace, "interval", cfg.CloudWatch.Interval.String(), "emf", cfg.CloudWatch.EMF)
	}

	started, err := StartServers(rdb, layout, ServerOptions{
		Middleware:        []asynq.MiddlewareFunc{live.Middleware},
		TaskCheckInterval: cfg.TaskCheckInterval, ShutdownTimeout: cfg.ShutdownTimeout, Log: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range started {
			s.Shutdown()
		}
	}()
	// Before the servers shut down (deferred calls run in reverse): a
	// server that sits in a wait would delay its drain by the idle wait.
	defer waiter.Stop()

	var draining atomic.Bool
	httpSrv := &http.Server{Addr: cfg.WorkerAddr, Handler: healthMux(rdb, &draining), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", cfg.WorkerAddr)
	if err != nil {
		return fmt.Errorf("listen on WORKER_ADDR %s: %w", cfg.WorkerAddr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	providers := make([]string, len(cfg.LLM.Providers))
	for i, p := range cfg.LLM.Providers {
		providers[i] = p.Name
	}
	log.Info("worker started", "addr", ln.Addr().String(), "snapshot_concurrency", cfg.SnapshotConcurrency,
		"aggregate_concurrency", cfg.AggregateConcurrency, "webhook_concurrency", cfg.Webhook.Concurrency,
		"webhooks", signer != nil, "task_check_interval", cfg.TaskCheckInterval.String(), "queue_idle_wait", cfg.QueueIdleWait.String(), "providers", providers)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("health server: %w", err)
	}
	// Not ready from now on: a load balancer or the orchestrator sees the
	// drain.
	draining.Store(true)
	log.Info("worker stopping: finishing running tasks", "timeout", cfg.ShutdownTimeout)
	// Stop taking new tasks on every queue at once, then wait for each.
	waiter.Stop()
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

// MetricsHandler serves the worker's Prometheus metrics from a registry of
// its own (package metrics: jobs, stages, LLM requests, breakers, capacity
// waits, webhooks, and asynq's queue metrics read through rdb).
func MetricsHandler(rdb redis.UniversalClient) http.Handler {
	reg := prometheus.NewRegistry()
	metrics.RegisterWorker(reg, asynq.NewInspectorFromRedisClient(rdb))
	reg.MustRegister(cloudwatch.PublishFailures)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// healthMux serves /healthz (alive), /readyz (Redis answers and the worker
// is not draining: 503 from the moment it stops taking tasks) and /metrics.
func healthMux(rdb redis.UniversalClient, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", MetricsHandler(rdb))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"draining"}`))
			return
		}
		if err := rdb.Ping(ctx).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"status":"unavailable","redis":%q}`, err.Error())
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	return mux
}

// tokenBudget returns the daily token budget of a job's owner: its API
// key's (QUOTA_TOKENS_PER_DAY unless the key sets its own), the default for
// the anonymous caller, none for the service's own work (cache warming,
// which has its share of provider capacity instead). A key that is gone
// (revoked and deleted) keeps the default: its jobs already admitted end
// within it.
func tokenBudget(keys *auth.Keys, a config.Access) func(ctx context.Context, owner string) (int64, error) {
	return func(ctx context.Context, owner string) (int64, error) {
		switch owner {
		case job.SystemOwner:
			return 0, nil
		case job.AnonymousOwner:
			return a.TokensPerDay, nil
		}
		k, err := keys.Get(ctx, owner)
		if errors.Is(err, auth.ErrUnknownKey) {
			return a.TokensPerDay, nil
		}
		if err != nil {
			return 0, err
		}
		return k.Limits.Or(auth.Limits{TokensPerDay: a.TokensPerDay}).TokensPerDay, nil
	}
}
