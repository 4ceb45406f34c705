// Package api is the HTTP face of the service: it validates and accepts
// jobs of every registered kind (POST /api<kind path>, e.g.
// /api/time-travel), puts their tasks on the queues, shows job state, and
// streams job events over Server-Sent Events. It never calls an LLM. It
// knows no kind: each kind decodes its requests and shows its jobs
// (package jobkind).
package api

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

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/timetravel-ai/timetravel/internal/alertnotify"
	"github.com/timetravel-ai/timetravel/internal/api/openapi"
	"github.com/timetravel-ai/timetravel/internal/api/web"
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/backlog"
	"github.com/timetravel-ai/timetravel/internal/breaker"
	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/idempotency"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/quota"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tracing"
	"github.com/timetravel-ai/timetravel/internal/wakeup"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 32 << 10

// Server holds the api's collaborators. Create it with New.
type Server struct {
	// notifier posts the alerts' starts and ends (nil: ALERT_NOTIFY_URL
	// unset); notifySender is its client, closed with the Server.
	notifier     *alertnotify.Notifier
	notifySender *webhook.Sender

	cfg   config.Config
	rdb   redis.UniversalClient
	store *store.Store
	enq   *tasks.Enqueuer
	insp  tasks.Inspector
	hub   *events.Hub
	// announcer tells the workers about the tasks the api queues.
	announcer *wakeup.Announcer
	log       *slog.Logger
	now       func() time.Time
	// callbacks checks callback URLs; webhooksOn says whether a webhook
	// secret is configured (without one, a callback_url is refused).
	callbacks  webhook.Policy
	webhooksOn bool

	// draining is set when shutdown starts: readiness fails and SSE streams
	// end with a reconnect hint.
	draining atomic.Bool
	drain    context.Context
	stop     context.CancelFunc

	// admin is the queue admin UI; nil when not mounted (no credentials).
	admin *asynqmon.HTTPHandler

	// intake serves submissions (caches, deduplication, queuing); life
	// cancels jobs and runs the effects of their ends; idem keeps
	// Idempotency-Keys.
	intake *intake.Intake
	life   *lifecycle.Lifecycle
	idem   *idempotency.Keys

	// keys checks API keys; quota keeps the per-key quotas; conns counts
	// this process's SSE streams; tokens signs events links.
	keys   *auth.Keys
	quota  *quota.Quota
	conns  *quota.Conns
	tokens eventTokens

	// kinds are the job kinds served, each at its own route; env is what
	// their plans depend on (the configured models and providers).
	kinds *jobkind.Registry
	env   jobkind.Env

	// system reads the queues and breakers for the dashboard.
	system *systemReader
	// backlog estimates the wait of new jobs' member calls for provider
	// capacity (job.accepted, the stats, MAX_BACKLOG_SECONDS).
	backlog *backlog.Estimator
}

// Deps are what the process's composition root builds once and hands to
// the api (cmd/api builds them; a test may build its own).
type Deps struct {
	// Redis is the pooled client that every request and SSE stream
	// shares. Required. The caller closes it, after the Server. New adds
	// a hook to it that announces the tasks it enqueues to the workers
	// (package wakeup): give each Server a client of its own.
	Redis redis.UniversalClient
	// Kinds are the job kinds served, each at its own route
	// (kinds.Registry() in the service; a test may register a kind of its
	// own). Required. The workers must serve the same kinds.
	Kinds *jobkind.Registry
	// Log receives the api's logs; nil discards them.
	Log *slog.Logger
}

// New wires a Server from cfg and d. It panics when a required
// dependency is missing, a wiring mistake no request could get around.
// With admin credentials configured it opens the queue admin UI's own
// Redis connections: call Close when done.
func New(cfg config.Config, d Deps) *Server {
	if d.Redis == nil || d.Kinds == nil {
		panic("api.New: Deps.Redis and Deps.Kinds are required")
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rdb := d.Redis
	announcer := wakeup.NewAnnouncer(rdb)
	rdb.AddHook(announcer.Hook())
	drain, stop := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		rdb:       rdb,
		store:     store.New(rdb, cfg.JobRetention),
		enq:       tasks.NewEnqueuer(asynq.NewClientFromRedisClient(rdb), cfg.SnapshotMaxRetry, cfg.SnapshotTaskTimeout()),
		insp:      tasks.NewInspector(rdb),
		hub:       events.NewHub(rdb, events.Channel, log),
		announcer: announcer,
		log:       log,
		now:       time.Now,
		drain:     drain,
		stop:      stop,

		callbacks:  webhook.PolicyOf(cfg.Webhook),
		webhooksOn: cfg.Webhook.Enabled(),

		idem: idempotency.New(rdb, cfg.Cache.IdempotencyTTL),

		keys:   auth.New(rdb),
		quota:  quota.New(rdb),
		conns:  quota.NewConns(cfg.Access.MaxSSEConnections),
		tokens: newEventTokens(cfg.Access.EventsTokenSecret, cfg.Access.EventsTokenTTL),

		kinds: d.Kinds,
		env:   intake.EnvOf(cfg.LLM),
	}
	// One in-flight registry: the intake claims entries in it (when
	// deduplication is on), the lifecycle releases them when jobs end.
	inflight := cache.NewInflight(rdb)
	s.system = &systemReader{queues: asynq.NewInspectorFromRedisClient(d.Redis), breakers: breaker.NewStore(d.Redis, breaker.KeyPrefix)}
	s.system.names = s.breakerNames()
	s.backlog = newBacklog(cfg, s)
	s.life = lifecycle.New(lifecycle.Options{Store: s.store, Webhooks: s.enq, Inspector: s.insp, Inflight: inflight, Log: log})
	s.intake = intake.FromConfig(cfg, intake.Options{
		Store: s.store, Enqueuer: s.enq, Inspector: s.insp, Inflight: inflight, Lifecycle: s.life,
		Kinds: s.kinds, Env: s.env, Admit: s.admitJob, Backlog: s.queueJob, Log: log,
	})
	s.notifier, s.notifySender = newNotifier(cfg, s)
	if cfg.Admin.Mounted() {
		ui, err := newAdminUI(cfg)
		if err != nil {
			log.Error("queue admin UI not mounted", "err", err)
		} else {
			s.admin = ui
		}
	}
	return s
}

// Close frees what New opened (the admin UI's connections) and ends the
// SSE streams of a Server that is not serving. The Redis client of Deps
// is the caller's to close, after this.
func (s *Server) Close() error {
	s.stop()
	if s.notifySender != nil {
		s.notifySender.Close()
	}
	if s.admin != nil {
		return s.admin.Close()
	}
	return nil
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.httpMetrics(), s.recovery(), s.logRequests())
	r.NoRoute(func(c *gin.Context) {
		abort(c, http.StatusNotFound, CodeNotFound, "", "no route %s %s", c.Request.Method, c.Request.URL.Path)
	})
	r.NoMethod(func(c *gin.Context) {
		abort(c, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "", "method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path)
	})

	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.ready)
	// Prometheus text is for the scraper inside the cluster: the Ingress
	// does not route it.
	r.GET("/metrics", gin.WrapH(s.metricsHandler()))
	// The HTTP contract (OpenAPI 3.1) and its reference page.
	r.GET("/openapi.json", gin.WrapH(openapi.Handler()))
	docs := gin.WrapH(openapi.DocsHandler("/docs"))
	r.GET("/docs", docs)
	r.GET("/docs/*file", docs)
	// The web page (package web): the same page at / and at /jobs/:id,
	// which opens that job; its scripts and styles under /assets.
	page := web.New(web.Settings{TotalP95Warning: s.cfg.Alerts.TotalP95Warning,
		TotalP95Critical: s.cfg.Alerts.TotalP95Critical, SnapshotP95Warning: s.cfg.Alerts.SnapshotP95Warning})
	r.GET("/", gin.WrapH(page.Index()))
	r.GET("/jobs/:id", gin.WrapH(page.Index()))
	r.GET("/assets/*file", gin.WrapH(page.Assets()))

	// The SSE route has no tracing middleware at all: a span would last as
	// long as the client stays connected, and the middleware's frame alone
	// pushed each stream's goroutine stack to the next size (16 KB instead
	// of 8 KB: +40 MB at 5,000 clients, bench sse).
	r.GET(streamRoute, s.identify(true), s.streamEvents)

	a := r.Group("/api", s.trace(), s.identify(false))
	for _, k := range s.kinds.All() {
		a.POST(k.Path(), s.submit(k))
	}
	a.GET("/jobs", s.listJobs)
	a.GET("/jobs/:id", s.getJob)
	a.DELETE("/jobs/:id", s.cancelJob)
	a.POST("/cache/warm", adminOnly, s.warmCache)
	a.GET("/models", s.models)
	a.GET("/usage", s.usage)

	m := a.Group("/monitoring")
	m.GET("/stats", s.monitoringStats)
	m.GET("/latency-breakdown", s.latencyBreakdown)
	m.GET("/alerts", s.monitoringAlerts)
	m.GET("/system", s.monitoringSystem)

	if s.admin != nil {
		// asynqmon routes under its RootPath itself: no prefix stripping.
		ui := gin.WrapH(s.admin)
		auth := adminAuth(s.cfg.Admin)
		r.Any(AdminRoot, auth, ui)
		r.Any(AdminRoot+"/*path", auth, ui)
	}
	return s.cors(r)
}

// cors lets the pages of CORS_ALLOWED_ORIGINS call the api from a browser
// (github.com/rs/cors): it answers preflights itself and adds the
// Access-Control-* headers to the answers of allowed origins. A request
// from another origin is served without them, so the browser keeps the
// answer from the page, and non-browser clients are unaffected. No
// cookies are used (keys travel in Authorization), so no credentials mode.
func (s *Server) cors(h http.Handler) http.Handler {
	origins := s.cfg.Access.CORSOrigins()
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "Content-Type", IdempotencyHeader, "Last-Event-ID", "Cache-Control"},
		ExposedHeaders: []string{"Location", "Retry-After", "RateLimit", "RateLimit-Policy", IdempotentReplayedHeader, "WWW-Authenticate"},
		MaxAge:         600,
	}).Handler(h)
}

// untraced are the routes without spans or request logs.
func untraced(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == "/metrics" || route == "/openapi.json" || route == "/docs" || route == "/docs/*file"
}

// streamRoute is the SSE route, which is not traced (see Handler); its
// request log is written when the stream ends.
const streamRoute = "/api/jobs/:id/events"

// trace starts the request's server span, a child of the caller's
// traceparent if any; the job's tasks carry it on (package tracing).
func (s *Server) trace() gin.HandlerFunc {
	return func(c *gin.Context) {
		route := c.FullPath()
		if route == "" || untraced(route) {
			c.Next()
			return
		}
		ctx := tracing.ExtractHTTP(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header))
		ctx, span := tracing.Tracer().Start(ctx, c.Request.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", c.Request.Method), attribute.String("http.route", route)))
		defer span.End()
		c.Request = c.Request.WithContext(ctx)
		c.Next()
		status := c.Writer.Status()
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if id, ok := c.Get("job_id"); ok {
			span.SetAttributes(attribute.String("job_id", fmt.Sprint(id)))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
}

func (s *Server) ready(c *gin.Context) {
	if s.draining.Load() {
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.log.Warn("readiness: redis unreachable", "err", err)
		abort(c, http.StatusServiceUnavailable, CodeUnavailable, "", "redis unreachable")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

func (s *Server) recovery() gin.HandlerFunc {
	return gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, rec any) {
		s.log.Error("panic in handler", "panic", fmt.Sprint(rec), "path", c.Request.URL.Path)
		abort(c, http.StatusInternalServerError, CodeInternal, "", "internal error")
	})
}

func (s *Server) logRequests() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if untraced(route) {
			return
		}
		level := slog.LevelDebug
		if c.Writer.Status() >= 500 {
			level = slog.LevelError
		}
		attrs := []any{"method", c.Request.Method, "route", route, "status", c.Writer.Status(),
			"ms", time.Since(start).Milliseconds()}
		if id, ok := c.Get("job_id"); ok {
			attrs = append(attrs, "job_id", id)
		}
		attrs = append(attrs, tracing.LogAttrs(c.Request.Context())...)
		s.log.Log(c.Request.Context(), level, "request", attrs...)
	}
}

// Run serves on cfg.APIAddr until ctx ends, then shuts down: readiness fails
// first, SSE clients are told to reconnect elsewhere, and in-flight requests
// get up to 10 s to finish.
func (s *Server) Run(ctx context.Context) error {
	if err := s.cfg.ValidateAPI(); err != nil {
		return err
	}
	if s.cfg.Admin.Enabled && !s.cfg.Admin.HasCredentials() {
		s.log.Warn("queue admin UI not mounted: no credentials (ADMIN_USER and ADMIN_PASSWORD, or ADMIN_TOKEN)")
	}
	ln, err := net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on API_ADDR %s: %w", s.cfg.APIAddr, err)
	}
	return s.Serve(ctx, ln)
}

// RunEvents runs, until ctx ends, the hub that wakes SSE streams when
// their jobs' events are written, the announcer that wakes the workers'
// idle queue servers when the api queues tasks (package wakeup), and the
// alert notifications when they are configured (package alertnotify).
// Serve runs it; a caller that serves Handler on an http.Server of its own
// (httptest.NewServer) runs it beside, or its streams only advance at
// their heartbeats and its tasks wait for the workers' idle polls.
func (s *Server) RunEvents(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.announcer.Run(ctx) })
	if s.notifier != nil {
		wg.Go(func() { _ = s.notifier.Run(ctx) })
	}
	err := s.hub.Run(ctx)
	wg.Wait()
	return err
}

// Serve is Run on a listener of the caller's. It returns once the server
// and the events hub have stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		_ = s.RunEvents(hubCtx)
	}()
	// The hub stops after the server: streams still draining need it.
	defer func() {
		stopHub()
		<-hubDone
	}()

	a := s.cfg.Access
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: a.ReadHeaderTimeout,
		// ReadTimeout bounds a request's headers and body (a slow body
		// holds a connection and a goroutine); SSE streams lift it once
		// they start. No WriteTimeout: streams write for as long as a job
		// runs, and a client that stops reading fails their writes.
		ReadTimeout:    a.ReadTimeout,
		IdleTimeout:    a.IdleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("api listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.stop() // ends SSE streams
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("api stopped")
	return nil
}
