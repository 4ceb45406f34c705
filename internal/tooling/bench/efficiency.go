package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/timetravel-ai/timetravel/internal/pause"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// Service CPU is the CPU time of the processes that make up the service:
// the api, the workers and redis-server. The simulator stands in for the
// provider and the bench for the clients, so neither counts.
var serviceProcesses = []string{"api", "worker", "redis"}

// IdleWindow is how long the throughput scenario watches Redis once its
// jobs have ended and nothing is submitted.
const IdleWindow = 5 * time.Second

// idleSettle is the pause between the end of the last job and the start of
// the idle window, so that the window holds no tail of the jobs' own work
// (tasks acknowledged, caches written, SSE streams closed).
const idleSettle = time.Second

// LoopFigures are what a run of the job loop measured: clients that each
// submit a time-travel job and follow it over SSE to its terminal event,
// in a loop. Per-job figures are deltas over the timed part divided by the
// jobs completed in it.
type LoopFigures struct {
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Completed int64   `json:"completed"`
	Failed    int64   `json:"failed"`
	// WordsPerAnswer is the simulator's length of every prose answer, in
	// words: one token, so one streamed chunk, each.
	WordsPerAnswer   int              `json:"words_per_answer"`
	JobsPerSecond    float64          `json:"jobs_per_second"`
	CommandsPerJob   float64          `json:"redis_commands_per_job"`
	TopCommands      map[string]int64 `json:"top_commands_per_job"`
	RedisBytesPerJob float64          `json:"redis_bytes_per_finished_job"`
	Latency          Summary          `json:"latency"`
	// CPUPerJobMS is the CPU time each process spent per completed job;
	// "bench" is this process: the load generator and the simulator,
	// which runs in it.
	CPUPerJobMS map[string]float64 `json:"cpu_ms_per_job"`
	// StreamedTokensPerJob are the content chunks (one token each) the
	// simulator streamed to the workers, per completed job.
	StreamedTokensPerJob float64 `json:"streamed_tokens_per_job"`
	// ServiceCPUPerKTokensMS is the CPU time of the api, the workers and
	// redis-server together per 1,000 streamed tokens.
	ServiceCPUPerKTokensMS float64 `json:"service_cpu_ms_per_1000_streamed_tokens"`
}

// loopConfig shapes one run of the job loop.
type loopConfig struct {
	binDir    string
	clients   int
	d         time.Duration
	question  string
	workerEnv map[string]string
	sim       llmsim.Config
	// idle, when positive, adds an idle window of that length after the
	// timed part (see measureIdle).
	idle time.Duration
}

// loopResult is LoopFigures plus the idle window's reading.
type loopResult struct {
	LoopFigures
	idleCalls int64
	idleBy    map[string]int64 // idleCalls by command
	workers   int
}

// runLoop starts a service on the simulator cfg.sim (in this process), warms
// it up with three jobs, then runs driveJobs for cfg.d and measures the timed
// part: Redis commands (INFO commandstats), Redis memory, CPU time of every
// process, and the tokens the simulator streamed. A job that fails counts as
// failed; the run fails when none completes.
func runLoop(ctx context.Context, cfg loopConfig, log io.Writer) (loopResult, error) {
	res := loopResult{LoopFigures: LoopFigures{Clients: cfg.clients, WordsPerAnswer: cfg.sim.Words}, workers: 1}
	wenv := map[string]string{"SNAPSHOT_CONCURRENCY": "64", "AGGREGATE_CONCURRENCY": "32", "PPROF_ADDR": os.Getenv("BENCH_WORKER_PPROF")}
	for k, v := range cfg.workerEnv {
		wenv[k] = v
	}
	sim := cfg.sim
	svc, err := startService(ctx, serviceOptions{binDir: cfg.binDir, workers: res.workers, workerEnv: wenv, sim: &sim,
		apiEnv: map[string]string{"PPROF_ADDR": os.Getenv("BENCH_API_PPROF")}})
	if err != nil {
		return res, err
	}
	defer svc.Stop()
	// Warm up, then count from a clean slate.
	for i := range 3 {
		if _, err := timeJob(ctx, svc.API, "warm-up "+strconv.Itoa(i)); err != nil {
			return res, err
		}
	}
	if err := svc.Redis.ConfigResetStat(ctx).Err(); err != nil {
		return res, err
	}
	if err := svc.ResetSim(ctx); err != nil {
		return res, err
	}
	memBefore, err := usedMemory(ctx, svc)
	if err != nil {
		return res, err
	}
	cpuBefore := svc.cpuByProcess()
	benchBefore, _ := CPUTime(os.Getpid())

	completed, failed, timings, elapsed := driveJobs(ctx, svc.API, cfg.clients, cfg.d, cfg.question, log)
	cpuAfter := svc.cpuByProcess()
	benchAfter, _ := CPUTime(os.Getpid())
	total, by, err := commandCalls(ctx, svc.Redis)
	if err != nil {
		return res, err
	}
	memAfter, err := usedMemory(ctx, svc)
	if err != nil {
		return res, err
	}
	st, err := svc.SimStats(ctx)
	if err != nil {
		return res, err
	}
	r := &res.LoopFigures
	r.Seconds = elapsed.Seconds()
	r.Completed, r.Failed = completed, failed
	lat := make([]time.Duration, len(timings))
	for i, t := range timings {
		lat[i] = t.total
	}
	r.Latency = Summarize(lat)
	if completed == 0 {
		return res, fmt.Errorf("no job completed in %v (%d failed)", cfg.d, failed)
	}
	n := float64(completed)
	r.JobsPerSecond = n / elapsed.Seconds()
	r.CommandsPerJob = float64(total) / n
	r.RedisBytesPerJob = float64(memAfter-memBefore) / n
	r.TopCommands = top(by, 8, n)
	cpu := map[string]time.Duration{"bench": benchAfter - benchBefore}
	for k, v := range cpuAfter {
		cpu[k] = v - cpuBefore[k]
	}
	r.CPUPerJobMS = map[string]float64{}
	for k, v := range cpu {
		r.CPUPerJobMS[k] = ms(v) / n
	}
	r.StreamedTokensPerJob = float64(st.Total.StreamedTokens) / n
	r.ServiceCPUPerKTokensMS = perThousandTokensMS(serviceCPU(cpu), st.Total.StreamedTokens)

	if cfg.idle > 0 {
		fmt.Fprintf(log, "idle: %v with nothing submitted\n", cfg.idle)
		if res.idleCalls, res.idleBy, err = measureIdle(ctx, svc, idleSettle, cfg.idle); err != nil {
			return res, fmt.Errorf("idle: %w", err)
		}
	}
	return res, nil
}

// serviceCPU sums the CPU time of the service's processes
// (serviceProcesses) in cpu.
func serviceCPU(cpu map[string]time.Duration) time.Duration {
	var t time.Duration
	for _, p := range serviceProcesses {
		t += cpu[p]
	}
	return t
}

// perThousandTokensMS returns cpu per 1,000 tokens, in milliseconds; 0 when
// no token was streamed.
func perThousandTokensMS(cpu time.Duration, tokens int64) float64 {
	if tokens <= 0 {
		return 0
	}
	return ms(cpu) * 1000 / float64(tokens)
}

// measureIdle waits settle, resets the Redis statistics, waits window with
// nothing submitted and returns the commands Redis ran in it, in all and by
// command, every client's (the api's and the workers'), less the bench's
// own CONFIG RESETSTAT (the INFO that reads them is not yet counted in its
// own answer). A timer is the measure here: the window is what is being
// measured.
func measureIdle(ctx context.Context, svc *Service, settle, window time.Duration) (int64, map[string]int64, error) {
	if err := pause.For(ctx, settle); err != nil {
		return 0, nil, err
	}
	if err := svc.Redis.ConfigResetStat(ctx).Err(); err != nil {
		return 0, nil, err
	}
	if err := pause.For(ctx, window); err != nil {
		return 0, nil, err
	}
	total, by, err := commandCalls(ctx, svc.Redis)
	if err != nil {
		return 0, nil, err
	}
	calls := idleCalls(total, by)
	delete(by, "config|resetstat")
	return calls, by, nil
}

// idleCalls returns the calls of an idle window's INFO commandstats less
// the CONFIG RESETSTAT that opened it (when by still holds it).
func idleCalls(total int64, by map[string]int64) int64 {
	return max(total-by["config|resetstat"], 0)
}

// idleRates returns calls over window per second, for all the processes
// and per worker process.
func idleRates(calls int64, window time.Duration, workers int) (all, perWorker float64) {
	if window <= 0 {
		return 0, 0
	}
	all = float64(calls) / window.Seconds()
	if workers > 0 {
		perWorker = all / float64(workers)
	}
	return all, perWorker
}

// StreamingReport is what the streaming scenario measured: the job loop
// against long answers, streamed at a steady pace.
type StreamingReport struct {
	LoopFigures
	// AnswerSeconds is how long the simulator takes over every answer.
	AnswerSeconds float64 `json:"answer_seconds"`
}

// Streaming answers: long ones, over one second each.
const (
	StreamingWords  = 400
	StreamingAnswer = time.Second
)

// RunStreaming runs clients that each submit a job and follow it to its
// end, in a loop, for d, against a simulator whose every answer (snapshot,
// key changes, narrative) takes StreamingAnswer, its prose answers
// StreamingWords words streamed one per chunk, evenly over that time.
func RunStreaming(ctx context.Context, binDir string, clients int, d time.Duration, log io.Writer) (StreamingReport, error) {
	res, err := runLoop(ctx, loopConfig{binDir: binDir, clients: clients, d: d, question: "Streaming question",
		workerEnv: benchModels,
		sim: llmsim.Config{Words: StreamingWords, Latency: map[string]time.Duration{
			simSnapshot: StreamingAnswer, simExtract: StreamingAnswer, simNarrative: StreamingAnswer}}}, log)
	return StreamingReport{LoopFigures: res.LoopFigures, AnswerSeconds: StreamingAnswer.Seconds()}, err
}
