package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// Settings of the faults scenario.
const (
	// faultsSpec is the simulator's LLMSIM_FAULTS under faults: 10% of all
	// calls answer 500 and 5% answer 429.
	faultsSpec = "*=500:0.10+429:0.05"
	// faultsRetryAfter is the Retry-After of the 429 answers.
	faultsRetryAfter = time.Second
	// faultsConcurrency bounds the jobs in progress at once.
	faultsConcurrency = 50
)

// FaultRun is one run of the faults scenario.
type FaultRun struct {
	// Completed counts the jobs that ended "completed".
	Completed int `json:"completed"`
	// Statuses counts the jobs by terminal status; "error" counts jobs the
	// client could not submit or follow to their end.
	Statuses map[string]int `json:"statuses"`
	// Causes counts the errors the jobs not completed report, by stage
	// ("snapshot", "key changes", "narrative", or the whole message).
	Causes map[string]int `json:"causes,omitempty"`
	// Example is one such error in full, one naming its stage if any does.
	Example string `json:"example,omitempty"`
	// ProviderCalls is the simulator's count of chat completions.
	ProviderCalls int64 `json:"provider_calls"`
	// FaultsInjected counts the simulator's faults by kind.
	FaultsInjected llmsim.FaultCounts `json:"faults_injected"`
	// Total is POST to the terminal event on SSE.
	Total       Summary `json:"total"`
	WallSeconds float64 `json:"wall_seconds"`
}

// FaultsReport is what the faults scenario measured: the same jobs without
// and with simulated provider faults.
type FaultsReport struct {
	Jobs int `json:"jobs"`
	// Faults is the simulator's LLMSIM_FAULTS in the faulty run.
	Faults            string   `json:"faults"`
	RetryAfterSeconds float64  `json:"retry_after_seconds"`
	FaultFree         FaultRun `json:"fault_free"`
	WithFaults        FaultRun `json:"with_faults"`
	// CompletedPct is the share of jobs completed under faults, in percent.
	CompletedPct float64 `json:"completed_pct"`
	// CallRatio is the provider calls under faults over the fault-free ones.
	CallRatio float64 `json:"provider_call_ratio"`
}

// RunFaults runs jobs twice, each time on a fresh service, with snapshot
// latency 200 ms and key changes and narrative 100 ms, at most 50 jobs in
// progress at once, each followed over SSE to its end: first without faults,
// then with the simulator failing 10% of all calls with 500 and 5% with 429
// (Retry-After 1 s). It reports the jobs completed and the provider calls of
// both runs; the service's own retry policy decides the outcome. Progress
// and per-job errors go to log.
func RunFaults(ctx context.Context, binDir string, jobs int, log io.Writer) (FaultsReport, error) {
	rep := FaultsReport{Jobs: jobs, Faults: faultsSpec, RetryAfterSeconds: faultsRetryAfter.Seconds()}
	if _, err := llmsim.ParseFaults(faultsSpec); err != nil {
		return rep, fmt.Errorf("faults spec: %w", err)
	}
	var err error
	fmt.Fprintf(log, "faults: %d jobs without faults\n", jobs)
	if rep.FaultFree, err = runFaultJobs(ctx, binDir, jobs, nil, log); err != nil {
		return rep, fmt.Errorf("fault-free run: %w", err)
	}
	fmt.Fprintf(log, "faults: %d jobs with LLMSIM_FAULTS=%s\n", jobs, faultsSpec)
	if rep.WithFaults, err = runFaultJobs(ctx, binDir, jobs, map[string]string{
		"LLMSIM_FAULTS": faultsSpec, "LLMSIM_RETRY_AFTER": faultsRetryAfter.String(),
	}, log); err != nil {
		return rep, fmt.Errorf("run with faults: %w", err)
	}
	if jobs > 0 {
		rep.CompletedPct = 100 * float64(rep.WithFaults.Completed) / float64(jobs)
	}
	if rep.FaultFree.ProviderCalls > 0 {
		rep.CallRatio = float64(rep.WithFaults.ProviderCalls) / float64(rep.FaultFree.ProviderCalls)
	}
	return rep, nil
}

// runFaultJobs starts a service whose simulator has simExtra in its
// environment, runs jobs through it and reads the simulator's counters.
func runFaultJobs(ctx context.Context, binDir string, jobs int, simExtra map[string]string, log io.Writer) (FaultRun, error) {
	run := FaultRun{Statuses: map[string]int{}}
	svc, err := startService(ctx, serviceOptions{binDir: binDir,
		workerEnv: merge(benchModels, map[string]string{"SNAPSHOT_CONCURRENCY": "64", "AGGREGATE_CONCURRENCY": "32"}),
		apiEnv:    map[string]string{"JOB_DEADLINE": "2m"},
		simEnv:    merge(simLatencyEnv(200*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond), simExtra)})
	if err != nil {
		return run, err
	}
	defer svc.Stop()

	type result struct {
		id, status string
		total      time.Duration
		err        error
	}
	results := make([]result, jobs)
	sem := make(chan struct{}, faultsConcurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return run, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i].id, results[i].status, results[i].total, results[i].err = followJob(ctx, svc.API,
				fmt.Sprintf("Faults question %d: what are the best AI models?", i))
		})
	}
	wg.Wait()
	run.WallSeconds = time.Since(start).Seconds()

	var totals []time.Duration
	for i, r := range results {
		if r.err != nil {
			fmt.Fprintf(log, "faults job %d: %v\n", i, r.err)
			run.Statuses["error"]++
			continue
		}
		run.Statuses[r.status]++
		totals = append(totals, r.total)
		if r.status == "completed" {
			run.Completed++
			continue
		}
		v, err := svc.API.Job(ctx, r.id)
		if err != nil {
			fmt.Fprintf(log, "faults job %d: %v\n", i, err)
			continue
		}
		for _, e := range v.Errors {
			if run.Causes == nil {
				run.Causes = map[string]int{}
			}
			run.Causes[errorStage(e)]++
			// Prefer an example that names its stage and cause.
			if run.Example == "" || !strings.Contains(run.Example, ": ") && strings.Contains(e, ": ") {
				run.Example = e
			}
		}
	}
	run.Total = Summarize(totals)

	// Calls a job no longer waits for (e.g. a retry still running when its
	// job ended) are counted once they finish.
	var st llmsim.Stats
	if err := waitFor(ctx, 30*time.Second, "the simulator to be idle", func() (bool, error) {
		var err error
		st, err = svc.SimStats(ctx)
		return err == nil && st.Total.InFlight == 0, err
	}); err != nil {
		return run, err
	}
	run.ProviderCalls, run.FaultsInjected = st.Total.Requests, st.Total.Faults
	fmt.Fprintf(log, "faults: %d of %d completed (%s), %d provider calls, faults %s, %.1f s\n",
		run.Completed, jobs, formatStatuses(run.Statuses), run.ProviderCalls, formatFaultCounts(run.FaultsInjected), run.WallSeconds)
	if run.Causes != nil {
		fmt.Fprintf(log, "faults: errors of the jobs not completed: %s; e.g. %q\n", formatStatuses(run.Causes), run.Example)
	}
	return run, nil
}

// errorStage returns the stage a job error names: "snapshot" for
// "snapshot <label>: ...", "key changes", "narrative", else the message.
func errorStage(e string) string {
	stage, _, ok := strings.Cut(e, ": ")
	switch {
	case !ok:
		return e
	case strings.HasPrefix(stage, "snapshot "):
		return "snapshot"
	}
	return stage
}

// followJob submits a job and follows its events to the terminal one, and
// returns the job's id, its final status and the time from the POST to that
// event.
func followJob(ctx context.Context, c *client.Client, question string) (string, string, time.Duration, error) {
	start := time.Now()
	acc, err := c.Submit(ctx, client.SubmitRequest{Question: question})
	if err != nil {
		return "", "", 0, fmt.Errorf("submit: %w", err)
	}
	var (
		status string
		total  time.Duration
	)
	_, err = c.Events(ctx, acc.JobID, "", func(ev client.Event) error {
		if ev.Terminal() {
			total = time.Since(start)
			var d client.JobCompletedData
			if err := ev.Decode(&d); err != nil {
				return fmt.Errorf("decode %s: %w", ev.Name, err)
			}
			status = string(d.Status)
		}
		return nil
	})
	if err != nil {
		return acc.JobID, "", 0, fmt.Errorf("job %s events: %w", acc.JobID, err)
	}
	if status == "" {
		return acc.JobID, "", 0, fmt.Errorf("job %s: stream ended without a terminal event", acc.JobID)
	}
	return acc.JobID, status, total, nil
}

// formatStatuses writes counts by name, sorted: "completed 198, partial 2".
func formatStatuses(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// formatFaultCounts writes the nonzero counts: "500 118, 429 61".
func formatFaultCounts(c llmsim.FaultCounts) string {
	var parts []string
	for _, k := range llmsim.FaultKinds() {
		if n := c.Of(k); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
