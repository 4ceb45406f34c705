// Command llmsim runs the OpenAI-compatible LLM simulator (see package
// internal/llmsim) as an HTTP server. Its answers are labelled as simulated.
//
// Environment:
//
//	LLMSIM_ADDR               listen address (default ":8090")
//	LLMSIM_TTFT               time to first token (default 200ms)
//	LLMSIM_TOKENS_PER_SECOND  token rate after the first token (default 50; 0 = no delay)
//	LLMSIM_LATENCY            fixed total latency per model, e.g.
//	                          "sim-snapshot=1s,sim-extract=300ms,sim-narrative=300ms"
//
// It stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/timetravel-ai/timetravel/internal/llmsim"
)

// shutdownTimeout bounds how long in-flight requests may take to finish
// after a stop signal.
const shutdownTimeout = 15 * time.Second

func main() {
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		slog.Error("llmsim failed", "error", err)
		os.Exit(1)
	}
}

// run serves the simulator until ctx ends, then shuts down gracefully.
func run(ctx context.Context) error {
	addr, cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return err
	}
	cfg.Logger = slog.Default()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           llmsim.New(cfg),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	latency := make(map[string]string, len(cfg.Latency))
	for model, d := range cfg.Latency {
		latency[model] = d.String()
	}
	slog.Info("llmsim listening", "addr", ln.Addr().String(), "ttft", cfg.TTFT.String(),
		"tokens_per_second", cfg.TokensPerSecond, "latency", latency)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	slog.Info("llmsim shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	slog.Info("llmsim stopped")
	return nil
}

// loadConfig reads the listen address and the simulator configuration from
// the environment; an empty variable takes its default. Errors name the
// variable at fault.
func loadConfig(getenv func(string) string) (string, llmsim.Config, error) {
	addr := getenv("LLMSIM_ADDR")
	if addr == "" {
		addr = ":8090"
	}
	cfg := llmsim.Config{TTFT: 200 * time.Millisecond, TokensPerSecond: 50}

	if v := getenv("LLMSIM_TTFT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return "", cfg, fmt.Errorf("LLMSIM_TTFT: %w", err)
		}
		if d < 0 {
			return "", cfg, fmt.Errorf("LLMSIM_TTFT: %q is negative", v)
		}
		cfg.TTFT = d
	}
	if v := getenv("LLMSIM_TOKENS_PER_SECOND"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return "", cfg, fmt.Errorf("LLMSIM_TOKENS_PER_SECOND: %w", err)
		}
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return "", cfg, fmt.Errorf("LLMSIM_TOKENS_PER_SECOND: %q must be a finite number >= 0", v)
		}
		cfg.TokensPerSecond = f
	}
	latency, err := llmsim.ParseLatency(getenv("LLMSIM_LATENCY"))
	if err != nil {
		return "", cfg, fmt.Errorf("LLMSIM_LATENCY: %w", err)
	}
	cfg.Latency = latency
	return addr, cfg, nil
}
