// Command llmsim runs the OpenAI-compatible LLM simulator (see package
// internal/tooling/llmsim) as an HTTP server. Its answers are labelled as simulated.
//
// Environment:
//
//	LLMSIM_ADDR               listen address (default ":8090")
//	LLMSIM_TTFT               time to first token (default 200ms)
//	LLMSIM_TOKENS_PER_SECOND  token rate after the first token (default 50; 0 = no delay)
//	LLMSIM_LATENCY            fixed total latency per model, e.g.
//	                          "sim-snapshot=1s,sim-extract=300ms,sim-narrative=300ms"
//	LLMSIM_FAULTS             fault rules per model, model=fault:rate[+fault:rate...]
//	                          separated by commas, "*" for every model, e.g.
//	                          "sim-snapshot=500:0.10+429:0.05,sim-extract=bad_json:1";
//	                          faults: 429, 500, 503, hang, slow_first_token, break, bad_json
//	LLMSIM_FAULT_SEED         seed of the fault decisions, a positive integer (default 1)
//	LLMSIM_RETRY_AFTER        delay a 429 fault asks for in Retry-After (default 1s)
//	LLMSIM_SLOW_FIRST_TOKEN   first token time under slow_first_token (default 5s)
//
// Faults can also be set at run time (POST /sim/faults) and per request (the
// X-Llmsim-Fault header); see package internal/tooling/llmsim.
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

	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// shutdownTimeout bounds how long in-flight requests may take to finish
// after a stop signal.
const shutdownTimeout = 15 * time.Second

const usage = `llmsim runs the OpenAI-compatible LLM simulator as an HTTP server. Its
answers are labelled as simulated.

Usage:
  llmsim [-help | -version]

It takes no arguments. Environment (an empty variable takes its default):
  LLMSIM_ADDR               listen address (default ":8090")
  LLMSIM_TTFT               time to first token (default 200ms)
  LLMSIM_TOKENS_PER_SECOND  token rate after the first token (default 50; 0 = no delay)
  LLMSIM_LATENCY            fixed total latency per model, e.g.
                            "sim-snapshot=1s,sim-extract=300ms,sim-narrative=300ms"
  LLMSIM_FAULTS             fault rules per model, model=fault:rate[+fault:rate...]
                            separated by commas, "*" for every model, e.g.
                            "sim-snapshot=500:0.10+429:0.05,sim-extract=bad_json:1";
                            faults: 429, 500, 503, hang, slow_first_token, break, bad_json
  LLMSIM_FAULT_SEED         seed of the fault decisions, a positive integer (default 1)
  LLMSIM_RETRY_AFTER        delay a 429 fault asks for in Retry-After (default 1s)
  LLMSIM_SLOW_FIRST_TOKEN   first token time under slow_first_token (default 5s)

Faults can also be set at run time (POST /sim/faults) and per request (the
X-Llmsim-Fault header); see the README. It stops gracefully on SIGINT or
SIGTERM.
`

func main() {
	cli.Command{Name: "llmsim", Usage: usage}.Handle()
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
	sim := llmsim.New(cfg)
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	// Requests held by the hang fault would otherwise hold up the shutdown.
	srv.RegisterOnShutdown(sim.Close)
	latency := make(map[string]string, len(cfg.Latency))
	for model, d := range cfg.Latency {
		latency[model] = d.String()
	}
	slog.Info("llmsim listening", "addr", ln.Addr().String(), "ttft", cfg.TTFT.String(),
		"tokens_per_second", cfg.TokensPerSecond, "latency", latency,
		"faults", llmsim.FormatFaults(cfg.Faults), "fault_seed", cfg.FaultSeed,
		"retry_after", cfg.RetryAfter.String(), "slow_first_token", cfg.SlowFirstToken.String())

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
	cfg := llmsim.Config{TTFT: 200 * time.Millisecond, TokensPerSecond: 50, FaultSeed: llmsim.DefaultFaultSeed,
		RetryAfter: llmsim.DefaultRetryAfter, SlowFirstToken: llmsim.DefaultSlowFirstToken}

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

	faults, err := llmsim.ParseFaults(getenv("LLMSIM_FAULTS"))
	if err != nil {
		return "", cfg, fmt.Errorf("LLMSIM_FAULTS: %w", err)
	}
	cfg.Faults = faults
	if v := getenv("LLMSIM_FAULT_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return "", cfg, fmt.Errorf("LLMSIM_FAULT_SEED: %w", err)
		}
		if seed == 0 {
			return "", cfg, fmt.Errorf("LLMSIM_FAULT_SEED: %q must be a positive integer", v)
		}
		cfg.FaultSeed = seed
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"LLMSIM_RETRY_AFTER", &cfg.RetryAfter}, {"LLMSIM_SLOW_FIRST_TOKEN", &cfg.SlowFirstToken}} {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil {
			return "", cfg, fmt.Errorf("%s: %w", d.name, err)
		}
		if dur <= 0 {
			return "", cfg, fmt.Errorf("%s: %q must be positive", d.name, v)
		}
		*d.dst = dur
	}
	return addr, cfg, nil
}
