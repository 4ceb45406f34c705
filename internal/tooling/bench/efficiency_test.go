package bench

import (
	"math"
	"testing"
	"time"
)

func TestServiceCPUPerThousandTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cpu    map[string]time.Duration
		tokens int64
		want   float64 // ms per 1,000 tokens
	}{
		{"api, worker and redis count", map[string]time.Duration{"api": 100 * time.Millisecond, "worker": 300 * time.Millisecond,
			"redis": 100 * time.Millisecond}, 10_000, 50},
		{"bench and simulator do not", map[string]time.Duration{"worker": 20 * time.Millisecond, "bench": time.Second,
			"llmsim": time.Second}, 1000, 20},
		{"no tokens", map[string]time.Duration{"worker": time.Second}, 0, 0},
		{"no processes", nil, 500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := perThousandTokensMS(serviceCPU(tt.cpu), tt.tokens); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("got %v ms per 1,000 tokens, want %v", got, tt.want)
			}
		})
	}
}

func TestIdleRates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		total         int64
		by            map[string]int64
		window        time.Duration
		workers       int
		all, perWorkr float64
	}{
		{"resetstat left out", 251, map[string]int64{"config|resetstat": 1, "evalsha": 200, "zrangebyscore": 50},
			5 * time.Second, 1, 50, 50},
		{"two workers", 401, map[string]int64{"config|resetstat": 1, "brpoplpush": 400}, 4 * time.Second, 2, 100, 50},
		{"nothing at all", 1, map[string]int64{"config|resetstat": 1}, 5 * time.Second, 1, 0, 0},
		{"no window", 10, map[string]int64{"get": 10}, 0, 1, 0, 0},
		{"no worker", 10, map[string]int64{"get": 10}, time.Second, 0, 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			all, per := idleRates(idleCalls(tt.total, tt.by), tt.window, tt.workers)
			if math.Abs(all-tt.all) > 1e-9 || math.Abs(per-tt.perWorkr) > 1e-9 {
				t.Errorf("got %v /s, %v /s per worker; want %v, %v", all, per, tt.all, tt.perWorkr)
			}
		})
	}
}

// TestEfficiencyTargets checks the issue 19 targets on either side of
// their bounds, and that a run that measured nothing does not meet them.
func TestEfficiencyTargets(t *testing.T) {
	t.Parallel()
	thr := func(commands, idlePerWorker float64, completed int64) *ThroughputReport {
		return &ThroughputReport{LoopFigures: LoopFigures{Completed: completed, CommandsPerJob: commands, WordsPerAnswer: ThroughputWords},
			Workers: 1, IdleSeconds: 5, IdleCommandsPerSecondPerWorker: idlePerWorker}
	}
	str := func(cpu, tokens float64) *StreamingReport {
		return &StreamingReport{LoopFigures: LoopFigures{ServiceCPUPerKTokensMS: cpu, StreamedTokensPerJob: tokens}}
	}
	tests := []struct {
		name string
		r    Report
		want []bool // met, in order: commands per job, idle per worker, CPU per 1,000 tokens
	}{
		{"all met at the bounds", Report{Throughput: thr(150, 50, 10), Streaming: str(20, 1200)}, []bool{true, true, true}},
		{"all missed", Report{Throughput: thr(151, 50.5, 10), Streaming: str(20.1, 1200)}, []bool{false, false, false}},
		{"nothing measured", Report{Throughput: thr(0, 0, 0), Streaming: str(0, 0)}, []bool{false, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.r.Evaluate()
			if len(tt.r.Targets) != len(tt.want) {
				t.Fatalf("got %d targets, want %d: %+v", len(tt.r.Targets), len(tt.want), tt.r.Targets)
			}
			for i, want := range tt.want {
				if got := tt.r.Targets[i]; got.Met != want {
					t.Errorf("%s: met %v, want %v (got %s)", got.Name, got.Met, want, got.Got)
				}
			}
		})
	}
}

func TestEfficiencyFigures(t *testing.T) {
	t.Parallel()
	r := Report{
		Throughput: &ThroughputReport{LoopFigures: LoopFigures{JobsPerSecond: 100, StreamedTokensPerJob: 60, ServiceCPUPerKTokensMS: 90},
			IdleSeconds: 5, IdleCommandsPerSecondPerWorker: 42},
		Streaming: &StreamingReport{LoopFigures: LoopFigures{JobsPerSecond: 5, ServiceCPUPerKTokensMS: 12, CommandsPerJob: 300,
			CPUPerJobMS: map[string]float64{"worker": 30, "bench": 99}}},
	}
	want := map[[2]string]float64{
		{"throughput", "service CPU per 1,000 streamed tokens"}: 90,
		{"throughput", "idle Redis commands/s per worker"}:      42,
		{"streaming", "jobs completed"}:                         5,
		{"streaming", "service CPU per 1,000 streamed tokens"}:  12,
		{"streaming", "Redis commands/job"}:                     300,
		{"streaming", "worker CPU per job"}:                     30,
	}
	got := map[[2]string]float64{}
	for _, f := range Figures(r) {
		got[[2]string{f.Scenario, f.Measure}] = f.Value
		if f.Scenario == "streaming" && f.Measure == "bench CPU per job" {
			t.Errorf("the bench's CPU is not a figure of the service: %+v", f)
		}
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s/%s = %v (present %v), want %v", k[0], k[1], g, ok, v)
		}
	}
}
