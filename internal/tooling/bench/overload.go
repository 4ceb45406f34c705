package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/pause"
)

// The overload scenario's service (issue 20, item 5): more snapshot slots
// per worker than the provider has capacity, so that members wait for
// capacity (and are handed back) rather than for a slot.
const (
	overloadCap                  = 64
	overloadSnapshotConcurrency  = 2 * overloadCap
	overloadAggregateConcurrency = 64
	overloadSnapshots            = 4 // members of a time-travel job
	overloadSnapshotLatency      = time.Second
	overloadKeyChangesLatency    = 300 * time.Millisecond
	overloadNarrativeLatency     = 300 * time.Millisecond
	overloadTTFT                 = 100 * time.Millisecond
)

// The targets of issue 20 for the overload scenario.
const (
	// targetOverloadP50OverWall bounds the median job latency over the
	// wall time: jobs are served roughly in order, not all at the end.
	targetOverloadP50OverWall = 0.6
	// targetOverloadWallOverFloor bounds the wall time over the capacity
	// floor: the provider's capacity is kept busy.
	targetOverloadWallOverFloor = 1.1
	// targetOverloadFirstTextOverWall bounds the median time to first
	// text over the wall time.
	targetOverloadFirstTextOverWall = 0.2
	// targetOverloadRankCorrelation is the least Spearman correlation of
	// submission and completion order: first come, first served.
	targetOverloadRankCorrelation = 0.9
)

// capacityGiveUpsMetric counts the provider capacity waits that gave up in
// a worker; each hands its task back to the queue without using up a retry.
// It counts member and aggregation tasks alike.
const capacityGiveUpsMetric = "timetravel_llm_capacity_giveups_total"

// OverloadReport is what the overload scenario measured: one run per
// worker count, against the same load.
type OverloadReport struct {
	Jobs                int `json:"jobs"`
	ProviderCap         int `json:"provider_cap"`
	SnapshotConcurrency int `json:"snapshot_concurrency_per_worker"`
	// CallSecondsPerJob is the provider capacity a job holds: its
	// snapshots, then key changes and narrative (concurrent, but each a
	// call holding a slot).
	CallSecondsPerJob float64 `json:"call_seconds_per_job"`
	// FloorSeconds is the least wall time the provider cap allows:
	// Jobs × CallSecondsPerJob / ProviderCap.
	FloorSeconds float64       `json:"capacity_floor_seconds"`
	Runs         []OverloadRun `json:"runs"`
	// Admission is the run with the admission limit on (one worker).
	Admission *AdmissionRun `json:"admission,omitempty"`
}

// The admission run's service: a deadline the backlog of a whole burst
// would miss, and an admission limit under it.
const (
	admissionDeadline   = 20 * time.Second
	admissionMaxBacklog = 10 * time.Second
	// admissionWarmJobs run before the burst, so that the api's typical
	// call is measured (without finished jobs it assumes 10 s calls).
	admissionWarmJobs = 8
)

// AdmissionRun is the overload burst against MAX_BACKLOG_SECONDS: the jobs
// accepted must all end by their deadline, the others be refused with 503
// and Retry-After.
type AdmissionRun struct {
	Jobs     int `json:"jobs"`
	Accepted int `json:"accepted"`
	// Completed of the accepted; Missed, accepted jobs that ended
	// otherwise (partial, failed) or not at all.
	Completed int `json:"completed"`
	Missed    int `json:"missed"`
	// Refused answered 503 overloaded; RefusedWithRetryAfter of them
	// carried a Retry-After of at least a second; Errors are any other
	// failures.
	Refused               int     `json:"refused"`
	RefusedWithRetryAfter int     `json:"refused_with_retry_after"`
	RetryAfterP50Seconds  float64 `json:"retry_after_p50_seconds"`
	Errors                int     `json:"client_errors"`
	// Total is the accepted jobs' latency; the deadline and limit as set.
	Total              Summary `json:"total"`
	DeadlineSeconds    float64 `json:"deadline_seconds"`
	MaxBacklogSeconds  float64 `json:"max_backlog_seconds"`
	ExpectedWaitP50Sec float64 `json:"expected_wait_p50_seconds"`
}

// OverloadRun is one run of the overload scenario.
type OverloadRun struct {
	Workers   int `json:"workers"`
	Completed int `json:"completed"`
	// Failed are the jobs that did not complete: ended otherwise, or lost
	// to a client error (Errors of them).
	Failed int `json:"failed"`
	Errors int `json:"client_errors"`
	// WallSeconds runs from the first submission to the last job's end.
	WallSeconds float64 `json:"wall_seconds"`
	// AcceptSpanSeconds runs from the first submission to the last
	// acceptance: how spread out the submission order is.
	AcceptSpanSeconds float64 `json:"accept_span_seconds"`
	// Total is submission to the terminal event on SSE; FirstText is
	// submission to the job's first snapshot.delta event.
	Total     Summary `json:"total"`
	FirstText Summary `json:"first_text"`
	// The ratios the targets bound.
	WallOverFloor        float64 `json:"wall_over_floor"`
	P50OverWall          float64 `json:"p50_over_wall"`
	FirstTextP50OverWall float64 `json:"first_text_p50_over_wall"`
	// RankCorrelation is Spearman's ρ between the order in which the
	// submissions were accepted (their answers reached the client) and
	// the order in which the jobs ended.
	RankCorrelation float64 `json:"rank_correlation"`
	// ExpectedWait summarizes the jobs' expected_wait_ms (job.accepted),
	// to set beside FirstText.
	ExpectedWait Summary `json:"expected_wait"`
	// HandBacks is the workers' capacityGiveUpsMetric at the end (member
	// and aggregation tasks); nil when a worker's metrics could not be read.
	HandBacks    *int64 `json:"capacity_hand_backs,omitempty"`
	PeakInFlight int64  `json:"sim_peak_in_flight"`
}

// RunOverload submits jobs all at once, for each worker count in workers,
// against a provider cap of 64 calls in flight and 128 snapshot slots per
// worker, and follows every job over SSE to its end.
func RunOverload(ctx context.Context, binDir string, jobs int, workers []int, log io.Writer) (OverloadReport, error) {
	perJob := overloadSnapshots*overloadSnapshotLatency.Seconds() + overloadKeyChangesLatency.Seconds() + overloadNarrativeLatency.Seconds()
	rep := OverloadReport{Jobs: jobs, ProviderCap: overloadCap, SnapshotConcurrency: overloadSnapshotConcurrency,
		CallSecondsPerJob: perJob, FloorSeconds: capacityFloor(jobs, perJob, overloadCap)}
	for _, n := range workers {
		fmt.Fprintf(log, "overload: %d jobs, %d worker(s)\n", jobs, n)
		run, err := runOverload(ctx, binDir, jobs, n, log)
		if err != nil {
			return rep, fmt.Errorf("%d worker(s): %w", n, err)
		}
		if rep.FloorSeconds > 0 {
			run.WallOverFloor = run.WallSeconds / rep.FloorSeconds
		}
		rep.Runs = append(rep.Runs, run)
	}
	fmt.Fprintf(log, "overload: %d jobs, 1 worker, MAX_BACKLOG_SECONDS=%d, JOB_DEADLINE=%s\n", jobs, int(admissionMaxBacklog.Seconds()), admissionDeadline)
	adm, err := runAdmission(ctx, binDir, jobs, log)
	if err != nil {
		return rep, fmt.Errorf("admission limit: %w", err)
	}
	rep.Admission = &adm
	return rep, nil
}

// runAdmission submits the burst against a deadline it would miss, with
// the admission limit on, after a few jobs that give the api a typical
// call to reckon with.
func runAdmission(ctx context.Context, binDir string, jobs int, log io.Writer) (AdmissionRun, error) {
	run := AdmissionRun{Jobs: jobs, DeadlineSeconds: admissionDeadline.Seconds(), MaxBacklogSeconds: admissionMaxBacklog.Seconds()}
	svc, err := startService(ctx, serviceOptions{binDir: binDir, workers: 1,
		workerEnv: merge(benchModels, map[string]string{"LLM_MAX_IN_FLIGHT": strconv.Itoa(overloadCap),
			"SNAPSHOT_CONCURRENCY":  strconv.Itoa(overloadSnapshotConcurrency),
			"AGGREGATE_CONCURRENCY": strconv.Itoa(overloadAggregateConcurrency), "JOB_DEADLINE": admissionDeadline.String()}),
		apiEnv: map[string]string{"JOB_DEADLINE": admissionDeadline.String(), "LLM_MAX_IN_FLIGHT": strconv.Itoa(overloadCap),
			"MAX_BACKLOG_SECONDS": strconv.Itoa(int(admissionMaxBacklog.Seconds()))},
		simEnv: simLatencyEnv(overloadSnapshotLatency, overloadKeyChangesLatency, overloadNarrativeLatency, overloadTTFT)})
	if err != nil {
		return run, err
	}
	defer svc.Stop()
	warm, _ := submitBurst(ctx, svc, admissionWarmJobs, func(i int) string { return fmt.Sprintf("Warm-up question %d: what changed?", i) }, nil)
	for i, r := range warm {
		if r.err != nil || r.status != string(client.StatusCompleted) {
			return run, fmt.Errorf("warm-up job %d: %q, %v", i, r.status, r.err)
		}
	}
	// The api reads the typical call again once its reading is this old
	// (backlog.DefaultTypicalMaxAge).
	if err := pause.For(ctx, 10*time.Second+500*time.Millisecond); err != nil {
		return run, err
	}

	results, _ := submitBurst(ctx, svc, jobs, func(i int) string { return fmt.Sprintf("Admission question %d: how did this change?", i) }, nil)
	var totals, waits, retryAfters []time.Duration
	for i, r := range results {
		var apiErr *client.APIError
		switch {
		case errors.As(r.err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable && apiErr.Code == client.CodeOverloaded:
			run.Refused++
			if apiErr.RetryAfter >= time.Second {
				run.RefusedWithRetryAfter++
				retryAfters = append(retryAfters, apiErr.RetryAfter)
			}
			continue
		case r.id == "":
			run.Errors++
			fmt.Fprintf(log, "admission job %d: %v\n", i, r.err)
			continue
		}
		run.Accepted++
		if r.expectedWait != nil {
			waits = append(waits, *r.expectedWait)
		}
		if r.status == string(client.StatusCompleted) {
			run.Completed++
			totals = append(totals, r.total())
		} else {
			run.Missed++
			fmt.Fprintf(log, "admission job %d (%s): ended %q, %v\n", i, r.id, r.status, r.err)
		}
	}
	run.Total = Summarize(totals)
	run.ExpectedWaitP50Sec = Summarize(waits).P50 / 1000
	run.RetryAfterP50Seconds = Summarize(retryAfters).P50 / 1000
	return run, nil
}

func runOverload(ctx context.Context, binDir string, jobs, workers int, log io.Writer) (OverloadRun, error) {
	run := OverloadRun{Workers: workers}
	svc, err := startService(ctx, serviceOptions{binDir: binDir, workers: workers,
		workerEnv: merge(benchModels, map[string]string{"LLM_MAX_IN_FLIGHT": strconv.Itoa(overloadCap),
			"SNAPSHOT_CONCURRENCY":  strconv.Itoa(overloadSnapshotConcurrency),
			"AGGREGATE_CONCURRENCY": strconv.Itoa(overloadAggregateConcurrency)}),
		apiEnv: map[string]string{"JOB_DEADLINE": "15m", "LLM_MAX_IN_FLIGHT": strconv.Itoa(overloadCap)},
		simEnv: simLatencyEnv(overloadSnapshotLatency, overloadKeyChangesLatency, overloadNarrativeLatency, overloadTTFT)})
	if err != nil {
		return run, err
	}
	defer svc.Stop()

	results, wall := submitBurst(ctx, svc, jobs, func(i int) string { return fmt.Sprintf("Overload question %d: how did this change?", i) }, nil)

	var totals, firsts, waits []time.Duration
	var accepted, ended []float64
	var last, lastAccepted time.Duration
	for i, r := range results {
		if r.err != nil {
			run.Errors++
			fmt.Fprintf(log, "overload job %d: %v\n", i, r.err)
		}
		if r.status == string(client.StatusCompleted) {
			run.Completed++
		}
		lastAccepted = max(lastAccepted, r.accepted)
		if r.sawText {
			firsts = append(firsts, r.firstText-r.submitted)
		}
		if !r.ended {
			continue
		}
		if r.expectedWait != nil {
			waits = append(waits, *r.expectedWait)
		}
		totals = append(totals, r.total())
		accepted = append(accepted, r.accepted.Seconds())
		ended = append(ended, r.end.Seconds())
		last = max(last, r.end)
	}
	if last == 0 {
		last = wall
	}
	run.Failed = jobs - run.Completed
	run.WallSeconds, run.AcceptSpanSeconds = last.Seconds(), lastAccepted.Seconds()
	run.Total, run.FirstText = Summarize(totals), Summarize(firsts)
	wallMS := 1000 * run.WallSeconds
	run.P50OverWall, run.FirstTextP50OverWall = run.Total.P50/wallMS, run.FirstText.P50/wallMS
	run.RankCorrelation, _ = Spearman(accepted, ended)
	run.ExpectedWait = Summarize(waits)

	if n, err := workerHandBacks(ctx, svc); err != nil {
		fmt.Fprintf(log, "overload: worker metrics: %v\n", err)
	} else {
		run.HandBacks = &n
	}
	st, err := svc.SimStats(ctx)
	if err != nil {
		return run, err
	}
	run.PeakInFlight = st.Total.PeakInFlight // every model shares the provider's cap
	return run, nil
}

// workerHandBacks sums capacityGiveUpsMetric over the service's workers.
func workerHandBacks(ctx context.Context, svc *Service) (int64, error) {
	var total float64
	for _, w := range svc.Stack.WorkerList() {
		text, err := getText(ctx, "http://"+w.Addr+"/metrics")
		if err != nil {
			return 0, err
		}
		// No sample is none counted: the counter is labelled, and a
		// labelled counter shows only once counted.
		v, _, err := sumMetric(text, capacityGiveUpsMetric)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return int64(total), nil
}

// Targets are the run's targets of issue 20, one set per run.
func (r *OverloadReport) Targets() []Target {
	var out []Target
	add := func(name string, met bool, format string, args ...any) {
		out = append(out, Target{Name: name, Got: fmt.Sprintf(format, args...), Met: met})
	}
	for _, run := range r.Runs {
		p := fmt.Sprintf("overload, %d worker(s): ", run.Workers)
		ok := run.Completed > 0
		add(p+fmt.Sprintf("job p50 ≤ %.1f × wall", targetOverloadP50OverWall), ok && run.P50OverWall <= targetOverloadP50OverWall,
			"%.2f (%.1f s of %.1f s)", run.P50OverWall, run.Total.P50/1000, run.WallSeconds)
		add(p+fmt.Sprintf("wall ≤ %.1f × capacity floor", targetOverloadWallOverFloor), ok && run.WallOverFloor <= targetOverloadWallOverFloor,
			"%.2f (%.1f s, floor %.1f s)", run.WallOverFloor, run.WallSeconds, r.FloorSeconds)
		add(p+fmt.Sprintf("first text p50 ≤ %.1f × wall", targetOverloadFirstTextOverWall),
			run.FirstText.N > 0 && run.FirstTextP50OverWall <= targetOverloadFirstTextOverWall,
			"%.2f (%.1f s)", run.FirstTextP50OverWall, run.FirstText.P50/1000)
		add(p+fmt.Sprintf("submission / completion rank correlation ≥ %.1f", targetOverloadRankCorrelation),
			ok && run.RankCorrelation >= targetOverloadRankCorrelation, "%.3f", run.RankCorrelation)
		add(p+fmt.Sprintf("provider cap %d never exceeded", r.ProviderCap), run.PeakInFlight <= int64(r.ProviderCap), "peak %d", run.PeakInFlight)
	}
	if a := r.Admission; a != nil {
		add("overload with the admission limit: no accepted job misses its deadline", a.Accepted > 0 && a.Missed == 0 && a.Errors == 0,
			"%d of %d accepted jobs completed", a.Completed, a.Accepted)
		add("overload with the admission limit: refused jobs get 503 + Retry-After", a.Refused > 0 && a.RefusedWithRetryAfter == a.Refused,
			"%d refused, %d with Retry-After", a.Refused, a.RefusedWithRetryAfter)
	}
	return out
}

// Print writes the scenario's table.
func (r *OverloadReport) Print(w io.Writer) {
	fmt.Fprintf(w, "\n## Overload (%d jobs at once, snapshot 1 s, key changes and narrative 300 ms, provider cap %d, %d snapshot slots per worker; capacity floor %.1f s = %d × %.1f call-s / %d)\n\n",
		r.Jobs, r.ProviderCap, r.SnapshotConcurrency, r.FloorSeconds, r.Jobs, r.CallSecondsPerJob, r.ProviderCap)
	fmt.Fprintf(w, "| workers | completed | failed | wall s | wall / floor | job p50 / p95 / max s | p50 / wall | first text p50 s | first text p50 / wall | rank correlation | capacity hand-backs | peak in flight |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, run := range r.Runs {
		hb := "n/a"
		if run.HandBacks != nil {
			hb = strconv.FormatInt(*run.HandBacks, 10)
		}
		fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.2f | %.1f / %.1f / %.1f | %.2f | %.2f | %.3f | %.3f | %s | %d |\n",
			run.Workers, run.Completed, run.Failed, run.WallSeconds, run.WallOverFloor,
			run.Total.P50/1000, run.Total.P95/1000, run.Total.Max/1000, run.P50OverWall,
			run.FirstText.P50/1000, run.FirstTextP50OverWall, run.RankCorrelation, hb, run.PeakInFlight)
	}
	for _, run := range r.Runs {
		fmt.Fprintf(w, "\n%d worker(s): the last submission was accepted %.1f s after the first.", run.Workers, run.AcceptSpanSeconds)
	}
	fmt.Fprintf(w, "\nCapacity hand-backs: provider capacity waits that gave up (%s), member and aggregation tasks alike, summed over the workers.\n",
		capacityGiveUpsMetric)
	for _, run := range r.Runs {
		fmt.Fprintf(w, "%d worker(s): expected wait in job.accepted p50 %.1f s, max %.1f s (the api's typical call is 10 s until jobs have finished).\n",
			run.Workers, run.ExpectedWait.P50/1000, run.ExpectedWait.Max/1000)
	}
	if a := r.Admission; a != nil {
		fmt.Fprintf(w, "\nWith the admission limit (MAX_BACKLOG_SECONDS=%.0f, JOB_DEADLINE=%.0fs, 1 worker, after %d warm-up jobs):\n\n", a.MaxBacklogSeconds, a.DeadlineSeconds, admissionWarmJobs)
		fmt.Fprintf(w, "| submitted | accepted | completed | missed | refused (503) | with Retry-After | Retry-After p50 s | expected wait p50 s | job p50 / p95 / max s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		fmt.Fprintf(w, "| %d | %d | %d | %d | %d | %d | %.0f | %.1f | %.1f / %.1f / %.1f |\n", a.Jobs, a.Accepted, a.Completed, a.Missed, a.Refused,
			a.RefusedWithRetryAfter, a.RetryAfterP50Seconds, a.ExpectedWaitP50Sec, a.Total.P50/1000, a.Total.P95/1000, a.Total.Max/1000)
	}
}

// capacityFloor is the least time jobs can take when each holds
// callSecondsPerJob of a provider that runs providerCap calls at once.
func capacityFloor(jobs int, callSecondsPerJob float64, providerCap int) float64 {
	if providerCap <= 0 {
		return 0
	}
	return float64(jobs) * callSecondsPerJob / float64(providerCap)
}

// Spearman returns Spearman's rank correlation coefficient of x and y
// (equal lengths): the Pearson correlation of their ranks, tied values
// taking the average of the ranks they span. ok is false when it is not
// defined: fewer than two pairs, or either side all ties.
func Spearman(x, y []float64) (rho float64, ok bool) {
	if len(x) != len(y) || len(x) < 2 {
		return 0, false
	}
	rx, ry := averageRanks(x), averageRanks(y)
	n := float64(len(x))
	mean := (n + 1) / 2 // the mean of ranks 1..n, ties averaged or not
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mean, ry[i]-mean
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return 0, false
	}
	return sxy / math.Sqrt(sxx*syy), true
}

// averageRanks returns the rank of each value of v among v, from 1; equal
// values share the average of the ranks they span.
func averageRanks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case v[a] < v[b]:
			return -1
		case v[a] > v[b]:
			return 1
		}
		return 0
	})
	ranks := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && v[idx[j]] == v[idx[i]] {
			j++
		}
		// Positions i..j-1 hold ranks i+1..j: their average.
		avg := float64(i+1+j) / 2
		for _, k := range idx[i:j] {
			ranks[k] = avg
		}
		i = j
	}
	return ranks
}

// sumMetric returns the sum of every sample of the metric name in a
// Prometheus text exposition, whatever its labels; ok is false when it has
// none (a labelled counter has none until first counted).
func sumMetric(text, name string) (sum float64, ok bool, err error) {
	for _, line := range strings.Split(text, "\n") {
		rest, found := strings.CutPrefix(line, name)
		if !found || rest == "" {
			continue
		}
		switch rest[0] {
		case ' ':
		case '{':
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, false, fmt.Errorf("metric %s: bad sample %q", name, line)
			}
			rest = rest[end+1:]
		default:
			continue // another metric whose name name begins
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("metric %s: no value in %q", name, line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %s: %w", name, err)
		}
		sum, ok = sum+v, true
	}
	return sum, ok, nil
}

// getText reads a URL's body.
func getText(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
