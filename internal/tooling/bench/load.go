package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// LoadReport is what the load scenario measured.
type LoadReport struct {
	Jobs         int     `json:"jobs"`
	ProviderCap  int     `json:"provider_cap"`
	Completed    int     `json:"completed"`
	PeakInFlight int64   `json:"sim_peak_in_flight"`
	QueueWait    Summary `json:"queue_wait"`
	Total        Summary `json:"total"`
	WallSeconds  float64 `json:"wall_seconds"`
}

// RunLoad submits jobs all at once with snapshot latency 1 s and a provider
// cap of providerCap requests in flight (LLM_MAX_IN_FLIGHT, enforced across
// workers on Redis; the worker could run twice as many snapshot tasks), and
// follows every job to its end.
func RunLoad(ctx context.Context, binDir string, jobs, providerCap int, log io.Writer) (LoadReport, error) {
	rep := LoadReport{Jobs: jobs, ProviderCap: providerCap}
	svc, err := startService(ctx, serviceOptions{binDir: binDir,
		workerEnv: merge(benchModels, map[string]string{"LLM_MAX_IN_FLIGHT": strconv.Itoa(providerCap),
			"SNAPSHOT_CONCURRENCY": strconv.Itoa(2 * providerCap), "AGGREGATE_CONCURRENCY": "64"}),
		apiEnv: map[string]string{"JOB_DEADLINE": "15m"},
		simEnv: simLatencyEnv(time.Second, 300*time.Millisecond, 300*time.Millisecond, 100*time.Millisecond)})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()

	var mu sync.Mutex
	waitOf := map[string]time.Duration{}
	results, wall := submitBurst(ctx, svc, jobs, func(i int) string { return fmt.Sprintf("Load question %d: how did this change?", i) },
		func(ctx context.Context, j *burstJob) error {
			v, err := svc.API.Job(ctx, j.id)
			if err != nil {
				return err
			}
			if v.Timings.QueueWaitMS != nil {
				mu.Lock()
				waitOf[j.id] = time.Duration(*v.Timings.QueueWaitMS) * time.Millisecond
				mu.Unlock()
			}
			return nil
		})
	rep.WallSeconds = wall.Seconds()
	var totals, waits []time.Duration
	for i, r := range results {
		if r.err != nil {
			fmt.Fprintf(log, "load job %d: %v\n", i, r.err)
			continue
		}
		if r.status == "completed" {
			rep.Completed++
		}
		totals = append(totals, r.total())
		waits = append(waits, waitOf[r.id])
	}
	rep.Total, rep.QueueWait = Summarize(totals), Summarize(waits)
	st, err := svc.SimStats(ctx)
	if err != nil {
		return rep, err
	}
	rep.PeakInFlight = st.Total.PeakInFlight // every model shares the provider's cap
	return rep, nil
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
