// Command bench measures the service end to end against the LLM simulator
// and prints a table of the results (and, with -json, a JSON report).
//
//	bench [-json FILE] [scenario ...]
//	bench -ab REV [-ab-rounds N] [-json FILE] [scenario ...]
//
// Scenarios: seed, latency, ensemble, throughput, streaming, load, sse,
// memory, faults, cached, cluster, overload (default: all; with -ab:
// latency, throughput and streaming; cluster and overload do not run under
// -ab).
// Every scenario starts its own Redis, simulator, worker and api on free
// loopback ports, is bounded in requests and time, and stops by itself.
// With -ab it builds the service binaries of git revision REV too and runs
// each scenario against both builds, back to back, printing both figures
// and their ratio.
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

var all = []string{"seed", "latency", "ensemble", "throughput", "streaming", "load", "sse", "memory", "faults", "cached", "cluster", "overload"}

// abDefault are the scenarios an A/B run compares when none is named: the
// time-travel rows a change must not make worse, and its efficiency.
var abDefault = []string{"latency", "throughput", "streaming"}

var usage = `bench measures the service end to end against the LLM simulator and prints
a table of the results (and, with -json, a JSON report).

Usage:
  bench [flags] [scenario ...]
  bench -ab REV [-ab-rounds N] [flags] [scenario ...]

Scenarios: ` + strings.Join(all, ", ") + ` (default: all).
It builds the binaries, and every scenario starts its own redis-server (from
PATH), simulator, worker and api on free loopback ports, is bounded in
requests and time, and stops by itself. It reads no configuration of the
service's; BENCH_API_PPROF, BENCH_WORKER_PPROF, BENCH_API_GODEBUG and
BENCH_API_GOGC, when set, are passed on to the api or worker it starts.

throughput runs -clients clients that each submit a job and follow it over
SSE to its end, in a loop, against a simulator that answers at once (20 words
per answer), then watches Redis for 5 s with nothing submitted. It prints
jobs/s, Redis commands and CPU per job of every process, the CPU of the api,
the worker and Redis per 1,000 streamed tokens, and the idle Redis commands/s
(all processes, and per worker). streaming runs the same loop with
-streaming-clients clients against long answers: 400 words streamed one per
chunk over 1 s. Both run the simulator inside this program (this tree's, for
both builds under -ab), so its CPU time counts as the bench's.

cluster runs the throughput workload with two workers twice, against one
redis-server and against a Redis Cluster of three masters with one replica
each (redis-server and redis-cli from PATH), and prints both side by side
with the Redis commands and CPU per job of every node.

overload submits -overload-jobs jobs at once against a provider cap of 64
calls in flight with 128 snapshot slots per worker (snapshot 1 s, key
changes and narrative 300 ms), follows every job over SSE, and does so twice:
with one worker and with two. It prints the wall time against the capacity
floor (the jobs' call-seconds over the cap), job latency and first text
against the wall time, the rank correlation of submission and completion
order, the capacity hand-backs and the simulator's peak in flight.

A/B: -ab REV also builds cmd/api, cmd/worker and cmd/llmsim of git revision
REV (extracted with git archive into a temporary directory, removed
afterwards) and runs each scenario (default: ` + strings.Join(abDefault, ", ") + `) against
that build and this one, back to back, -ab-rounds times, alternating which
goes first; this program drives both. It prints each figure's median per
build and this build's over the base's. The cluster and overload scenarios
do not run under -ab.
`

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	abRev := fs.String("ab", "", "A/B: also build git revision `REV` and compare the scenarios against it")
	abRounds := fs.Int("ab-rounds", 3, "A/B: rounds, each running every scenario against both builds")
	lat := bench.DefaultLatency
	fs.IntVar(&lat.Jobs, "jobs", lat.Jobs, "latency: sequential jobs to time")
	ens := bench.DefaultEnsemble
	fs.IntVar(&ens.Jobs, "ensemble-jobs", ens.Jobs, "ensemble: sequential jobs to time")
	seedRuns := fs.Int("seed-runs", 5, "seed: timed runs of each design")
	clients := fs.Int("clients", 64, "throughput: concurrent clients")
	tdur := fs.Duration("duration", 10*time.Second, "throughput: how long")
	streamClients := fs.Int("streaming-clients", 16, "streaming: concurrent clients")
	sdur := fs.Duration("streaming-duration", 10*time.Second, "streaming: how long")
	clusterClients := fs.Int("cluster-clients", 16, "cluster: concurrent clients")
	loadJobs := fs.Int("load-jobs", 500, "load: jobs submitted at once")
	provCap := fs.Int("cap", 64, "load: provider cap (snapshot calls in flight)")
	sseSubs := fs.Int("subscribers", 5000, "sse: SSE subscribers")
	sseJobs := fs.Int("sse-jobs", 500, "sse: live jobs they subscribe to")
	memCalls := fs.Int("calls", 200, "memory: LLM calls in flight")
	faultJobs := fs.Int("faults-jobs", 200, "faults: jobs per run (without and with simulated faults)")
	cachedRuns := fs.Int("cached-runs", 200, "cached: timed jobs served from the caches")
	cdur := fs.Duration("cluster-duration", 10*time.Second, "cluster: how long each run (one Redis, the Cluster) lasts")
	overloadJobs := fs.Int("overload-jobs", 500, "overload: jobs submitted at once (each run: one worker, two workers)")
	if done, err := (cli.Command{Name: "bench", Usage: usage, Flags: fs}).Parse(args, os.Stdout); done || err != nil {
		return err
	}
	scenarios := fs.Args()
	if len(scenarios) == 0 {
		scenarios = all
		if *abRev != "" {
			scenarios = abDefault
		}
	}
	for _, s := range scenarios {
		if !slices.Contains(all, s) {
			return fmt.Errorf("unknown scenario %q (want %v)", s, all)
		}
	}
	if *abRev != "" && slices.Contains(scenarios, "cluster") {
		return fmt.Errorf("the cluster scenario does not run under -ab: it compares two Redis topologies, not two builds")
	}
	if *abRev != "" && slices.Contains(scenarios, "overload") {
		return fmt.Errorf("the overload scenario does not run under -ab: it compares one worker with two, not two builds")
	}
	if *overloadJobs < 1 {
		return fmt.Errorf("-overload-jobs must be at least 1, got %d", *overloadJobs)
	}
	if *abRounds < 1 {
		return fmt.Errorf("-ab-rounds must be at least 1, got %d", *abRounds)
	}
	log := os.Stderr

	// runScenario runs scenario s against the binaries in dir and adds its
	// section to rep.
	runScenario := func(s, dir string, rep *bench.Report) error {
		lat, ens := lat, ens
		lat.BinDir, ens.BinDir = dir, dir
		var err error
		switch s {
		case "seed":
			var r bench.SeedReport
			r, err = bench.RunSeed(ctx, dir, *seedRuns, lat, log)
			rep.Seed = &r
		case "latency":
			var r bench.LatencyReport
			r, err = bench.RunLatency(ctx, lat, log)
			rep.Latency = &r
		case "ensemble":
			var r bench.EnsembleReport
			r, err = bench.RunEnsemble(ctx, ens, log)
			rep.Ensemble = &r
		case "throughput":
			var r bench.ThroughputReport
			r, err = bench.RunThroughput(ctx, dir, *clients, *tdur, nil, log)
			rep.Throughput = &r
		case "streaming":
			var r bench.StreamingReport
			r, err = bench.RunStreaming(ctx, dir, *streamClients, *sdur, log)
			rep.Streaming = &r
		case "load":
			var r bench.LoadReport
			r, err = bench.RunLoad(ctx, dir, *loadJobs, *provCap, log)
			rep.Load = &r
		case "sse":
			var r bench.SSEReport
			r, err = bench.RunSSEScale(ctx, dir, *sseJobs, *sseSubs, log)
			rep.SSE = &r
		case "memory":
			var r bench.MemoryReport
			r, err = bench.RunMemory(ctx, dir, *memCalls, log)
			rep.Memory = &r
		case "faults":
			var r bench.FaultsReport
			r, err = bench.RunFaults(ctx, dir, *faultJobs, log)
			rep.Faults = &r
		case "cached":
			var r bench.CachedReport
			r, err = bench.RunCached(ctx, dir, *cachedRuns, log)
			rep.Cached = &r
		case "cluster":
			var r bench.ClusterReport
			r, err = bench.RunCluster(ctx, dir, *clusterClients, *cdur, log)
			rep.Cluster = &r
		case "overload":
			var r bench.OverloadReport
			r, err = bench.RunOverload(ctx, dir, *overloadJobs, []int{1, 2}, log)
			rep.Overload = &r
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		return nil
	}

	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(log, "building binaries...")
	if err := stack.Build(ctx, dir); err != nil {
		return err
	}
	if *abRev != "" {
		return runAB(ctx, *abRev, *abRounds, scenarios, dir, *jsonOut, runScenario)
	}
	rep := bench.Report{When: time.Now().UTC(), Machine: bench.MachineDescription()}
	for _, s := range scenarios {
		fmt.Fprintf(log, "== %s\n", s)
		if err := runScenario(s, dir, &rep); err != nil {
			return err
		}
	}
	rep.Evaluate()
	rep.Print(os.Stdout)
	return writeJSON(*jsonOut, rep)
}

// runAB builds the binaries of rev next to those of this tree (in thisDir)
// and runs every scenario against both, rounds times, alternating which
// build goes first, then prints the comparison. A scenario that fails on
// one build is reported and the run goes on; the command then fails.
func runAB(ctx context.Context, rev string, rounds int, scenarios []string, thisDir, jsonOut string,
	runScenario func(s, dir string, rep *bench.Report) error) error {
	log := os.Stderr
	full, short, err := bench.ResolveRevision(ctx, rev)
	if err != nil {
		return err
	}
	baseDir, err := os.MkdirTemp("", "bench-ab-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(baseDir)
	fmt.Fprintf(log, "building binaries of %s...\n", short)
	if err := bench.BuildRevision(ctx, full, baseDir); err != nil {
		return err
	}
	ab := bench.ABReport{When: time.Now().UTC(), Machine: bench.MachineDescription(), BaseRev: short,
		ThisRev: bench.DescribeWorkingTree(ctx), Scenarios: scenarios, Rounds: rounds}
	ab.LoadAvg[0] = bench.LoadAvg()
	dirs := map[bench.Side]string{bench.SideBase: baseDir, bench.SideThis: thisDir}
	for round := range rounds {
		for _, s := range scenarios {
			for _, side := range bench.Order(round) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				fmt.Fprintf(log, "== round %d/%d, %s, %s\n", round+1, rounds, s, side)
				var rep bench.Report
				run := bench.ABRun{Round: round, Side: side, Scenario: s}
				if err := runScenario(s, dirs[side], &rep); err != nil {
					run.Error = err.Error()
					fmt.Fprintf(log, "%s build: %v\n", side, err)
				} else {
					run.Figures = bench.Figures(rep)
				}
				ab.Runs = append(ab.Runs, run)
			}
		}
	}
	ab.LoadAvg[1] = bench.LoadAvg()
	ab.Compare()
	ab.Print(os.Stdout)
	if err := writeJSON(jsonOut, ab); err != nil {
		return err
	}
	if failed := ab.Failed(); len(failed) > 0 {
		return fmt.Errorf("%d of %d runs failed", len(failed), len(ab.Runs))
	}
	return nil
}

// writeJSON writes v, indented, to path; an empty path writes nothing.
func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
