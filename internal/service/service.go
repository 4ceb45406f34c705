// Package service is the common start and stop of the service's processes:
// configuration read and validated once, a JSON logger, and signal handling
// (the first SIGINT or SIGTERM starts a graceful shutdown, a second one
// exits at once), and OpenTelemetry tracing from the OTEL_* variables. With
// PPROF_ADDR set (e.g. 127.0.0.1:6060), net/http/pprof
// is served there, on a listener of its own.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only when PPROF_ADDR is set
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tracing"
	"github.com/timetravel-ai/timetravel/internal/version"
)

// Main runs run with the process's configuration, logger and a context that
// ends on the first signal, and exits the process with its outcome, once
// what it started (profiling, tracing) has stopped.
func Main(name string, run func(ctx context.Context, cfg config.Config, log *slog.Logger) error) {
	version.HandleFlag()
	os.Exit(runMain(name, run))
}

// runMain is Main up to the exit: 0 when run succeeded, 1 when it failed, 2
// when the process could not start.
func runMain(name string, run func(ctx context.Context, cfg config.Config, log *slog.Logger) error) int {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	level, _ := config.ParseLogLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", name)
	slog.SetDefault(log)
	redis.SetLogger(redisx.NewLogger(log)) // go-redis' own lines, as JSON records too
	log.Info("starting", "version", version.Version, "config", cfg)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		log.Info("signal received; shutting down (send again to exit now)", "signal", s.String())
		stop()
		s = <-sigs
		log.Warn("second signal; exiting now", "signal", s.String())
		os.Exit(1)
	}()

	if addr := os.Getenv("PPROF_ADDR"); addr != "" {
		// Profiling on a listener of its own, never on the public one.
		srv := &http.Server{Addr: addr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			log.Info("pprof listening", "addr", addr)
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("pprof server", "err", err)
			}
		}()
		defer srv.Close()
	}

	// Tracing from the standard OTEL_* variables; a no-op when they are unset.
	shutdownTracing, err := tracing.Setup(ctx, name)
	if err != nil {
		log.Error("tracing", "err", err)
		return 2
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()

	if err := run(ctx, cfg, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}
