// Command bench measures the service end to end against the LLM simulator
// and prints a table of the results (and, with -json, a JSON report).
//
//	bench [-json FILE] [scenario ...]
//
// Scenarios: seed, latency, throughput, load, sse, memory, faults, cached
// (default: all).
// Every scenario starts its own Redis, simulator, worker and api on free
// loopback ports, is bounded in requests and time, and stops by itself.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cli"
	"github.com/timetravel-ai/timetravel/internal/tooling/bench"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var all = []string{"seed", "latency", "throughput", "load", "sse", "memory", "faults", "cached"}

var usage = `bench measures the service end to end against the LLM simulator and prints
a table of the results (and, with -json, a JSON report).

Usage:
  bench [flags] [scenario ...]

Scenarios: ` + strings.Join(all, ", ") + ` (default: all).
It builds the binaries, and every scenario starts its own redis-server (from
PATH), simulator, worker and api on free loopback ports, is bounded in
requests and time, and stops by itself. It reads no configuration of the
service's; BENCH_API_PPROF, BENCH_WORKER_PPROF, BENCH_API_GODEBUG and
BENCH_API_GOGC, when set, are passed on to the api or worker it starts.
`

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	lat := bench.DefaultLatency
	fs.IntVar(&lat.Jobs, "jobs", lat.Jobs, "latency: sequential jobs to time")
	seedRuns := fs.Int("seed-runs", 5, "seed: timed runs of each design")
	clients := fs.Int("clients", 16, "throughput: concurrent clients")
	tdur := fs.Duration("duration", 10*time.Second, "throughput: how long")
	loadJobs := fs.Int("load-jobs", 500, "load: jobs submitted at once")
	provCap := fs.Int("cap", 64, "load: provider cap (snapshot calls in flight)")
	sseSubs := fs.Int("subscribers", 5000, "sse: SSE subscribers")
	sseJobs := fs.Int("sse-jobs", 500, "sse: live jobs they subscribe to")
	memCalls := fs.Int("calls", 200, "memory: LLM calls in flight")
	faultJobs := fs.Int("faults-jobs", 200, "faults: jobs per run (without and with simulated faults)")
	cachedRuns := fs.Int("cached-runs", 200, "cached: timed jobs served from the caches")
	if done, err := (cli.Command{Name: "bench", Usage: usage, Flags: fs}).Parse(args, os.Stdout); done || err != nil {
		return err
	}
	scenarios := fs.Args()
	if len(scenarios) == 0 {
		scenarios = all
	}
	for _, s := range scenarios {
		if !slices.Contains(all, s) {
			return fmt.Errorf("unknown scenario %q (want %v)", s, all)
		}
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
	lat.BinDir = dir
	rep := bench.Report{When: time.Now().UTC(), Machine: bench.MachineDescription()}
	log := os.Stderr
	for _, s := range scenarios {
		fmt.Fprintf(log, "== %s\n", s)
		switch s {
		case "seed":
			r, err := bench.RunSeed(ctx, dir, *seedRuns, lat, log)
			if err != nil {
				return fmt.Errorf("seed: %w", err)
			}
			rep.Seed = &r
		case "latency":
			r, err := bench.RunLatency(ctx, lat, log)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			rep.Latency = &r
		case "throughput":
			r, err := bench.RunThroughput(ctx, dir, *clients, *tdur, nil, log)
			if err != nil {
				return fmt.Errorf("throughput: %w", err)
			}
			rep.Throughput = &r
		case "load":
			r, err := bench.RunLoad(ctx, dir, *loadJobs, *provCap, log)
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			rep.Load = &r
		case "sse":
			r, err := bench.RunSSEScale(ctx, dir, *sseJobs, *sseSubs, log)
			if err != nil {
				return fmt.Errorf("sse: %w", err)
			}
			rep.SSE = &r
		case "memory":
			r, err := bench.RunMemory(ctx, dir, *memCalls, log)
			if err != nil {
				return fmt.Errorf("memory: %w", err)
			}
			rep.Memory = &r
		case "faults":
			r, err := bench.RunFaults(ctx, dir, *faultJobs, log)
			if err != nil {
				return fmt.Errorf("faults: %w", err)
			}
			rep.Faults = &r
		case "cached":
			r, err := bench.RunCached(ctx, dir, *cachedRuns, log)
			if err != nil {
				return fmt.Errorf("cached: %w", err)
			}
			rep.Cached = &r
		}
	}
	rep.Evaluate()
	rep.Print(os.Stdout)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
