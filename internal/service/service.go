// Package service is the common start and stop of the service's processes:
// configuration read and validated once, a JSON logger, and signal handling
// (the first SIGINT or SIGTERM starts a graceful shutdown, a second one
// exits at once).
package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// Main runs run with the process's configuration, logger and a context that
// ends on the first signal, and exits the process with its outcome.
func Main(name string, run func(ctx context.Context, cfg config.Config, log *slog.Logger) error) {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	level, _ := config.ParseLogLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", name)
	slog.SetDefault(log)
	log.Info("starting", "config", cfg)

	ctx, stop := context.WithCancel(context.Background())
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

	if err := run(ctx, cfg, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}
