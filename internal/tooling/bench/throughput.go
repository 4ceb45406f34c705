package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ThroughputReport is what the throughput scenario measured.
type ThroughputReport struct {
	Clients          int              `json:"clients"`
	Seconds          float64          `json:"seconds"`
	Completed        int64            `json:"completed"`
	Failed           int64            `json:"failed"`
	JobsPerSecond    float64          `json:"jobs_per_second"`
	CommandsPerJob   float64          `json:"redis_commands_per_job"`
	TopCommands      map[string]int64 `json:"top_commands_per_job"`
	RedisBytesPerJob float64          `json:"redis_bytes_per_finished_job"`
	Latency          Summary          `json:"latency"`
	// CPUPerJobMS is the CPU time each process spent per completed job; the
	// load generator (this process) is "bench".
	CPUPerJobMS map[string]float64 `json:"cpu_ms_per_job"`
}

// RunThroughput runs clients that each submit a job and follow it to its end,
// in a loop, for d, against a simulator that answers at once.
func RunThroughput(ctx context.Context, binDir string, clients int, d time.Duration, workerEnv map[string]string, log io.Writer) (ThroughputReport, error) {
	rep := ThroughputReport{Clients: clients}
	wenv := map[string]string{"SNAPSHOT_CONCURRENCY": "64", "AGGREGATE_CONCURRENCY": "32", "PPROF_ADDR": os.Getenv("BENCH_WORKER_PPROF")}
	for k, v := range workerEnv {
		wenv[k] = v
	}
	svc, err := startService(ctx, serviceOptions{binDir: binDir, workerEnv: wenv,
		simEnv: map[string]string{"LLMSIM_TTFT": "0s", "LLMSIM_TOKENS_PER_SECOND": "0"}})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	// Warm up, then count from a clean slate.
	for i := range 3 {
		if _, err := timeJob(ctx, svc.API, "warm-up "+strconv.Itoa(i)); err != nil {
			return rep, err
		}
	}
	if err := svc.Redis.ConfigResetStat(ctx).Err(); err != nil {
		return rep, err
	}
	memBefore, err := usedMemory(ctx, svc)
	if err != nil {
		return rep, err
	}
	cpuBefore := svc.cpuByProcess()
	benchBefore, _ := CPUTime(os.Getpid())

	completed, failed, timings, elapsed := driveJobs(ctx, svc.API, clients, d, "Throughput question", log)
	cpuAfter := svc.cpuByProcess()
	benchAfter, _ := CPUTime(os.Getpid())
	total, by, err := commandCalls(ctx, svc.Redis)
	if err != nil {
		return rep, err
	}
	memAfter, err := usedMemory(ctx, svc)
	if err != nil {
		return rep, err
	}
	rep.Seconds = elapsed.Seconds()
	rep.Completed, rep.Failed = completed, failed
	if rep.Completed > 0 {
		n := float64(rep.Completed)
		rep.JobsPerSecond = n / elapsed.Seconds()
		rep.CommandsPerJob = float64(total) / n
		rep.RedisBytesPerJob = float64(memAfter-memBefore) / n
		rep.TopCommands = top(by, 8, n)
		rep.CPUPerJobMS = map[string]float64{"bench": ms(benchAfter-benchBefore) / n}
		for k, v := range cpuAfter {
			rep.CPUPerJobMS[k] = ms(v-cpuBefore[k]) / n
		}
	}
	lat := make([]time.Duration, len(timings))
	for i, t := range timings {
		lat[i] = t.total
	}
	rep.Latency = Summarize(lat)
	return rep, nil
}

func usedMemory(ctx context.Context, svc *Service) (int64, error) {
	info, err := svc.Redis.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no used_memory in INFO")
}

// top returns the n most called commands, per job.
func top(by map[string]int64, n int, jobs float64) map[string]int64 {
	names := make([]string, 0, len(by))
	for k := range by {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int(by[b] - by[a]) })
	out := map[string]int64{}
	for _, k := range names[:min(n, len(names))] {
		out[k] = int64(float64(by[k])/jobs + 0.5)
	}
	return out
}
