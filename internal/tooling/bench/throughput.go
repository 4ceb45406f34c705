package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// ThroughputReport is what the throughput scenario measured.
type ThroughputReport struct {
	LoopFigures
	// Workers is the number of worker processes.
	Workers int `json:"workers"`
	// IdleSeconds is the idle window after the timed part: every job has
	// ended and nothing is submitted. IdleCommandsPerSecond are the Redis
	// commands per second in it, of every process (the api's included);
	// IdleCommandsPerSecondPerWorker is that over Workers.
	IdleSeconds                    float64 `json:"idle_seconds"`
	IdleCommandsPerSecond          float64 `json:"idle_redis_commands_per_second"`
	IdleCommandsPerSecondPerWorker float64 `json:"idle_redis_commands_per_second_per_worker"`
	// IdleTopCommands are the commands most called in the idle window,
	// per second (rounded).
	IdleTopCommands map[string]int64 `json:"idle_top_commands_per_second"`
}

// ThroughputWords is the length of the prose answers of the throughput
// scenario, in words (so in streamed chunks): short answers, so that the
// figures are the cost of a job, not of its text.
const ThroughputWords = 20

// RunThroughput runs clients that each submit a job and follow it to its end,
// in a loop, for d, against a simulator that answers at once, its prose
// answers ThroughputWords words long; then watches Redis for IdleWindow with
// nothing submitted.
func RunThroughput(ctx context.Context, binDir string, clients int, d time.Duration, workerEnv map[string]string, log io.Writer) (ThroughputReport, error) {
	res, err := runLoop(ctx, loopConfig{binDir: binDir, clients: clients, d: d, question: "Throughput question",
		workerEnv: workerEnv, sim: llmsim.Config{Words: ThroughputWords}, idle: IdleWindow}, log)
	rep := ThroughputReport{LoopFigures: res.LoopFigures, Workers: res.workers}
	if err != nil {
		return rep, err
	}
	rep.IdleSeconds = IdleWindow.Seconds()
	rep.IdleCommandsPerSecond, rep.IdleCommandsPerSecondPerWorker = idleRates(res.idleCalls, IdleWindow, res.workers)
	rep.IdleTopCommands = top(res.idleBy, 8, IdleWindow.Seconds())
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

// top returns the n most called commands, their calls divided by per (jobs,
// or seconds), rounded.
func top(by map[string]int64, n int, per float64) map[string]int64 {
	names := make([]string, 0, len(by))
	for k := range by {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int(by[b] - by[a]) })
	out := map[string]int64{}
	for _, k := range names[:min(n, len(names))] {
		out[k] = int64(float64(by[k])/per + 0.5)
	}
	return out
}
