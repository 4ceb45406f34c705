package bench

import (
	"fmt"
	"io"
	"runtime"
	"time"
)

// Report gathers the scenarios that ran.
type Report struct {
	When       time.Time         `json:"when"`
	Machine    string            `json:"machine"`
	Seed       *SeedReport       `json:"seed,omitempty"`
	Latency    *LatencyReport    `json:"latency,omitempty"`
	Ensemble   *EnsembleReport   `json:"ensemble,omitempty"`
	Throughput *ThroughputReport `json:"throughput,omitempty"`
	Streaming  *StreamingReport  `json:"streaming,omitempty"`
	Load       *LoadReport       `json:"load,omitempty"`
	SSE        *SSEReport        `json:"sse,omitempty"`
	Memory     *MemoryReport     `json:"memory,omitempty"`
	Faults     *FaultsReport     `json:"faults,omitempty"`
	Cached     *CachedReport     `json:"cached,omitempty"`
	Cluster    *ClusterReport    `json:"cluster,omitempty"`
	Overload   *OverloadReport   `json:"overload,omitempty"`
	Targets    []Target          `json:"targets"`
}

// Target is one performance target and whether the run met it.
type Target struct {
	Name string `json:"name"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// MachineDescription names the machine a report ran on.
func MachineDescription() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// The efficiency targets of issue 19.
const (
	// targetServiceCPUPerKTokensMS bounds the CPU time of the api, the
	// workers and Redis per 1,000 streamed tokens (streaming scenario).
	targetServiceCPUPerKTokensMS = 20
	// targetCommandsPerJob bounds the Redis commands per job at
	// ThroughputWords chunks per answer (throughput scenario).
	targetCommandsPerJob = 150
	// targetIdleCommandsPerWorker bounds the Redis commands per second per
	// worker with nothing to do.
	targetIdleCommandsPerWorker = 50
)

// Evaluate fills Targets from the scenarios that ran.
func (r *Report) Evaluate() {
	add := func(name string, met bool, format string, args ...any) {
		r.Targets = append(r.Targets, Target{Name: name, Got: fmt.Sprintf(format, args...), Met: met})
	}
	if l := r.Latency; l != nil {
		add("service p50 within 25 ms of the critical path", l.Overhead.P50 < 25, "%.1f ms", l.Overhead.P50)
		add("service p95 within 60 ms of the critical path", l.Overhead.P95 < 60, "%.1f ms", l.Overhead.P95)
		add("first text within 30 ms of the simulator's TTFT (p50)", l.FirstTextOverhead.P50 < 30, "%.1f ms", l.FirstTextOverhead.P50)
	}
	if e := r.Ensemble; e != nil {
		add(fmt.Sprintf("ensemble p50 within %d ms of its critical path", ensembleTargetP50MS), e.Overhead.P50 <= ensembleTargetP50MS,
			"%.1f ms", e.Overhead.P50)
	}
	// The efficiency targets of issue 19.
	if t := r.Throughput; t != nil {
		add(fmt.Sprintf("throughput: Redis commands per job ≤ %d at %d chunks per answer", targetCommandsPerJob, t.WordsPerAnswer),
			t.Completed > 0 && t.CommandsPerJob <= targetCommandsPerJob, "%.0f", t.CommandsPerJob)
		add(fmt.Sprintf("idle Redis commands/s per worker ≤ %d (api's included)", targetIdleCommandsPerWorker),
			t.IdleSeconds > 0 && t.IdleCommandsPerSecondPerWorker <= targetIdleCommandsPerWorker,
			"%.1f /s (%d worker, %.0f s)", t.IdleCommandsPerSecondPerWorker, t.Workers, t.IdleSeconds)
	}
	if s := r.Streaming; s != nil {
		add(fmt.Sprintf("streaming: service CPU per 1,000 streamed tokens ≤ %d ms", targetServiceCPUPerKTokensMS),
			s.StreamedTokensPerJob > 0 && s.ServiceCPUPerKTokensMS <= targetServiceCPUPerKTokensMS, "%.1f ms", s.ServiceCPUPerKTokensMS)
	}
	if s := r.SSE; s != nil && len(s.Points) > 0 {
		last := s.Points[len(s.Points)-1]
		add(fmt.Sprintf("api RSS under 200 MB at %d SSE subscribers", last.Subscribers), last.RSSMB < 200, "%.1f MB", last.RSSMB)
		lo, hi := last.RedisConns, last.RedisConns
		for _, p := range s.Points {
			lo, hi = min(lo, p.RedisConns), max(hi, p.RedisConns)
		}
		add("api Redis connections constant as subscribers grow", hi-lo <= 2, "%d..%d", lo, hi)
	}
	if m := r.Memory; m != nil {
		add(fmt.Sprintf("worker RSS under 150 MB with %d calls in flight", m.InFlight), m.WorkerRSSMB < 150, "%.1f MB", m.WorkerRSSMB)
	}
	if l := r.Load; l != nil {
		add(fmt.Sprintf("load: all %d jobs complete", l.Jobs), l.Completed == l.Jobs, "%d", l.Completed)
		add(fmt.Sprintf("load: provider cap %d never exceeded", l.ProviderCap), l.PeakInFlight <= int64(l.ProviderCap), "peak %d", l.PeakInFlight)
	}
	if f := r.Faults; f != nil {
		add("≥ 99% of jobs completed under faults", f.CompletedPct >= 99, "%d of %d (%.1f%%)", f.WithFaults.Completed, f.Jobs, f.CompletedPct)
		add("provider calls ≤ 1.3x fault-free", f.FaultFree.ProviderCalls > 0 && f.CallRatio <= 1.3, "%.2fx (%d / %d)",
			f.CallRatio, f.WithFaults.ProviderCalls, f.FaultFree.ProviderCalls)
	}
	if c := r.Cached; c != nil {
		add(fmt.Sprintf("cached job: POST → job.completed p50 under %d ms", cachedTargetP50MS), c.Total.P50 < cachedTargetP50MS,
			"%.2f ms", c.Total.P50)
		add("cached jobs: no simulator request", c.SimRequests == 0, "%d", c.SimRequests)
		add("cached: other spelling of the question served from the caches", c.Hits == c.Runs, "%d of %d", c.Hits, c.Runs)
	}
	if o := r.Overload; o != nil {
		r.Targets = append(r.Targets, o.Targets()...)
	}
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nMachine: %s\n", r.Machine)
	if s := r.Seed; s != nil {
		fmt.Fprintf(w, "\n## Against the design it replaces (same simulator; critical path %.0f ms)\n\n", s.CriticalPathMS)
		fmt.Fprintf(w, "| design | p50 ms | p95 ms | p50 / critical path |\n| --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			s    Summary
		}{{"sequential, in-process (original)", s.Sequential}, {"concurrent snapshots, in-process (optimised original)", s.Concurrent}, {"this service: API, queue, SSE", s.Service}} {
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %.2f |\n", row.name, row.s.P50, row.s.P95, row.s.P50/s.CriticalPathMS)
		}
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "\n## Latency (%d sequential jobs; critical path %.0f ms; simulator TTFT %.0f ms)\n\n", l.Total.N, l.CriticalPathMS, l.SimTTFTMS)
		fmt.Fprintf(w, "| measure | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			s    Summary
		}{{"POST → job.completed on SSE", l.Total}, {"overhead over the critical path", l.Overhead}, {"POST → first snapshot text", l.FirstText},
			{"first text over the simulator's TTFT", l.FirstTextOverhead}, {"POST round trip", l.Submit}, {"queue wait (service timing)", l.QueueWait}, {"fan-in (service timing)", l.FanIn}} {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f |\n", row.name, row.s.P50, row.s.P95, row.s.Max)
		}
	}
	if e := r.Ensemble; e != nil {
		fmt.Fprintf(w, "\n## Ensemble (%d sequential jobs; members %s; synthesis %.0f ms, analysis %.0f ms; critical path %.0f ms; simulator TTFT %.0f ms)\n\n",
			e.Total.N, describeMembers(e.Members), e.SynthesisMS, e.AnalysisMS, e.CriticalPathMS, e.SimTTFTMS)
		fmt.Fprintf(w, "| measure | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			s    Summary
		}{{"POST → job.completed on SSE", e.Total}, {"overhead over the critical path", e.Overhead}, {"POST → first answer text", e.FirstText},
			{"first text over the simulator's TTFT", e.FirstTextOverhead}, {"POST round trip", e.Submit}, {"queue wait (service timing)", e.QueueWait}, {"fan-in (service timing)", e.FanIn}} {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f |\n", row.name, row.s.P50, row.s.P95, row.s.Max)
		}
	}
	if t := r.Throughput; t != nil {
		fmt.Fprintf(w, "\n## Throughput (%d clients, %.0f s, simulator at zero latency, %d words per answer)\n\n", t.Clients, t.Seconds, t.WordsPerAnswer)
		fmt.Fprintf(w, "| completed | failed | jobs/s | Redis commands/job | Redis bytes per finished job | job latency p50 / p95 ms |\n| --- | --- | --- | --- | --- | --- |\n")
		fmt.Fprintf(w, "| %d | %d | %.1f | %.0f | %.0f | %.1f / %.1f |\n", t.Completed, t.Failed, t.JobsPerSecond, t.CommandsPerJob, t.RedisBytesPerJob, t.Latency.P50, t.Latency.P95)
		fmt.Fprintf(w, "\n| streamed tokens/job | service CPU ms per 1,000 streamed tokens | idle Redis commands/s, all processes | idle Redis commands/s per worker |\n| --- | --- | --- | --- |\n")
		fmt.Fprintf(w, "| %.0f | %.1f | %.1f | %.1f |\n", t.StreamedTokensPerJob, t.ServiceCPUPerKTokensMS, t.IdleCommandsPerSecond, t.IdleCommandsPerSecondPerWorker)
		fmt.Fprintf(w, "\nTop Redis commands per job: %v\nCPU ms per job by process: %v\n", t.TopCommands, roundMap(t.CPUPerJobMS))
		fmt.Fprintf(w, "Idle: %.0f s from 1 s after the last job, %d worker; the api's commands are included. Top idle Redis commands per second: %v\n",
			t.IdleSeconds, t.Workers, t.IdleTopCommands)
	}
	if s := r.Streaming; s != nil {
		fmt.Fprintf(w, "\n## Streaming (%d clients, %.0f s, every answer %.0f s, %d words per prose answer)\n\n", s.Clients, s.Seconds, s.AnswerSeconds, s.WordsPerAnswer)
		fmt.Fprintf(w, "| completed | failed | jobs/s | streamed tokens/job | service CPU ms per 1,000 streamed tokens | Redis commands/job | job latency p50 / p95 ms |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		fmt.Fprintf(w, "| %d | %d | %.1f | %.0f | %.1f | %.0f | %.0f / %.0f |\n", s.Completed, s.Failed, s.JobsPerSecond, s.StreamedTokensPerJob,
			s.ServiceCPUPerKTokensMS, s.CommandsPerJob, s.Latency.P50, s.Latency.P95)
		fmt.Fprintf(w, "\nTop Redis commands per job: %v\nCPU ms per job by process: %v\n", s.TopCommands, roundMap(s.CPUPerJobMS))
	}
	if l := r.Load; l != nil {
		fmt.Fprintf(w, "\n## Load (%d jobs at once, snapshot 1 s, provider cap %d)\n\n", l.Jobs, l.ProviderCap)
		fmt.Fprintf(w, "| completed | peak in flight | queue wait p50 / p95 ms | total p50 / p95 ms | wall s |\n| --- | --- | --- | --- | --- |\n")
		fmt.Fprintf(w, "| %d | %d | %.0f / %.0f | %.0f / %.0f | %.1f |\n", l.Completed, l.PeakInFlight, l.QueueWait.P50, l.QueueWait.P95, l.Total.P50, l.Total.P95, l.WallSeconds)
	}
	if s := r.SSE; s != nil {
		fmt.Fprintf(w, "\n## SSE scale (one api process, %d live jobs)\n\n", s.Jobs)
		fmt.Fprintf(w, "| subscribers | api RSS MB | heap in use MB | stacks MB | api goroutines | api Redis connections |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, p := range s.Points {
			fmt.Fprintf(w, "| %d | %.1f | %.1f | %.1f | %.0f | %d |\n", p.Subscribers, p.RSSMB, p.HeapMB, p.StackMB, p.Goroutines, p.RedisConns)
		}
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\n## Worker memory\n\n| LLM calls in flight | worker RSS MB | idle RSS MB |\n| --- | --- | --- |\n| %d | %.1f | %.1f |\n", m.InFlight, m.WorkerRSSMB, m.IdleRSSMB)
	}
	if f := r.Faults; f != nil {
		fmt.Fprintf(w, "\n## Faults (%d jobs, 50 at a time; simulator LLMSIM_FAULTS=%s, Retry-After %.0f s)\n\n", f.Jobs, f.Faults, f.RetryAfterSeconds)
		fmt.Fprintf(w, "| run | completed | statuses | provider calls | faults injected | job p50 / p95 ms | wall s |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			r    FaultRun
		}{{"fault-free", f.FaultFree}, {"with faults", f.WithFaults}} {
			fmt.Fprintf(w, "| %s | %d (%.1f%%) | %s | %d | %s | %.0f / %.0f | %.1f |\n", row.name, row.r.Completed,
				pct(row.r.Completed, f.Jobs), formatStatuses(row.r.Statuses), row.r.ProviderCalls,
				formatFaultCounts(row.r.FaultsInjected), row.r.Total.P50, row.r.Total.P95, row.r.WallSeconds)
		}
		fmt.Fprintf(w, "\nProvider calls with faults / without: %.2fx\n", f.CallRatio)
		if c := f.WithFaults.Causes; c != nil {
			fmt.Fprintf(w, "Errors of the jobs not completed under faults, by stage: %s; e.g. %q\n", formatStatuses(c), f.WithFaults.Example)
		}
	}
	if c := r.Cached; c != nil {
		fmt.Fprintf(w, "\n## Cached (%d sequential jobs served from the caches; priming job %.0f ms)\n\n", c.Total.N, c.PrimeMS)
		fmt.Fprintf(w, "| measure | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			s    Summary
		}{{"POST → job.completed on SSE", c.Total}, {"POST round trip", c.Submit},
			{fmt.Sprintf("other spelling: POST → job.completed (%d runs)", c.VariantTotal.N), c.VariantTotal}} {
			fmt.Fprintf(w, "| %s | %.2f | %.2f | %.2f |\n", row.name, row.s.P50, row.s.P95, row.s.Max)
		}
		fmt.Fprintf(w, "\nOther spelling %q served from the caches: %d of %d. Simulator requests during the timed runs: %d.\n",
			c.Variant, c.Hits, c.Runs, c.SimRequests)
	}
	if r.Cluster != nil {
		r.Cluster.Print(w)
	}
	if r.Overload != nil {
		r.Overload.Print(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n## Targets\n\n| target | got | met |\n| --- | --- | --- |\n")
		for _, t := range r.Targets {
			met := "yes"
			if !t.Met {
				met = "NO"
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", t.Name, t.Got, met)
		}
	}
}

func roundMap(m map[string]float64) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprintf("%.2f", v)
	}
	return out
}

// pct returns n of total in percent (0 when total is 0).
func pct(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}
