// Command bench measures the service end to end against the LLM simulator.
//
//	bench latency [-jobs 30] [-json report.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/timetravel-ai/timetravel/internal/bench"
	"github.com/timetravel-ai/timetravel/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "latency" {
		return fmt.Errorf("usage: bench latency [-jobs N] [-json FILE]")
	}
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	cfg := bench.DefaultLatency
	fs.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "sequential jobs to time")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "untimed jobs first")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "building binaries...")
	if err := stack.Build(ctx, dir); err != nil {
		return err
	}
	cfg.BinDir = dir
	rep, err := bench.RunLatency(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	bench.PrintLatency(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
