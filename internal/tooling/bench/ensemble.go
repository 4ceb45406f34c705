package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// ModelLatency is one simulated model and the total duration of each of its
// answers.
type ModelLatency struct {
	Model   string
	Latency time.Duration
}

// ModelMS is a ModelLatency as a report shows it.
type ModelMS struct {
	Model     string  `json:"model"`
	LatencyMS float64 `json:"latency_ms"`
}

// EnsembleConfig sets the ensemble scenario: the members' simulated
// latencies, those of the two aggregation calls, and how many sequential
// jobs to time.
type EnsembleConfig struct {
	Jobs   int
	Warmup int
	// Members answer the question, one task each, all at once.
	Members []ModelLatency
	// Synthesis is the streamed synthesis call (its model is the job's
	// synthesis_model); Analysis the JSON analysis (the extraction model).
	// They run side by side after the last member.
	Synthesis time.Duration
	Analysis  time.Duration
	TTFT      time.Duration
	// BinDir holds built binaries; empty builds them.
	BinDir string
}

// DefaultEnsemble is the scenario of issue 16's acceptance: three members
// of different speeds (400, 700 and 1000 ms), synthesis 300 ms and analysis
// 350 ms, so that the critical path is the slowest member plus the slower
// aggregation call, 1350 ms; 30 sequential jobs.
var DefaultEnsemble = EnsembleConfig{Jobs: 30, Warmup: 3,
	Members: []ModelLatency{
		{"bench-answer-fast", 400 * time.Millisecond},
		{"bench-answer-mid", 700 * time.Millisecond},
		{"bench-answer-slow", time.Second},
	},
	Synthesis: 300 * time.Millisecond, Analysis: 350 * time.Millisecond, TTFT: 100 * time.Millisecond}

// CriticalPath is the least time an ensemble job can take with these
// latencies: the slowest member, then the slower of the two aggregation
// calls, which run concurrently.
func (c EnsembleConfig) CriticalPath() time.Duration {
	var slowest time.Duration
	for _, m := range c.Members {
		slowest = max(slowest, m.Latency)
	}
	return slowest + max(c.Synthesis, c.Analysis)
}

// EnsembleReport is what the ensemble scenario measured.
type EnsembleReport struct {
	Members        []ModelMS `json:"members"`
	SynthesisMS    float64   `json:"synthesis_ms"`
	AnalysisMS     float64   `json:"analysis_ms"`
	CriticalPathMS float64   `json:"critical_path_ms"`
	SimTTFTMS      float64   `json:"sim_ttft_ms"`
	// Total is POST to job.completed seen on SSE.
	Total Summary `json:"total"`
	// Overhead is Total minus the critical path of the model calls.
	Overhead Summary `json:"overhead"`
	// FirstText is POST to the first answer.delta on SSE.
	FirstText Summary `json:"first_text"`
	// FirstTextOverhead is FirstText minus the simulator's time to first
	// token.
	FirstTextOverhead Summary `json:"first_text_overhead"`
	// Submit is the POST round trip.
	Submit Summary `json:"submit"`
	// QueueWait and FanIn are the service's own stage timings.
	QueueWait Summary `json:"queue_wait"`
	FanIn     Summary `json:"fan_in"`
}

// ensembleTargetP50MS is issue 16's target for the overhead over the
// critical path, p50.
const ensembleTargetP50MS = 25

// RunEnsemble starts the service with the simulator and times cfg.Jobs
// sequential ensemble jobs (POST /api/ensemble, every question new) after
// cfg.Warmup untimed ones. Every job must end completed. Progress goes to
// log.
func RunEnsemble(ctx context.Context, cfg EnsembleConfig, log io.Writer) (EnsembleReport, error) {
	critical := cfg.CriticalPath()
	rep := EnsembleReport{SynthesisMS: ms(cfg.Synthesis), AnalysisMS: ms(cfg.Analysis),
		CriticalPathMS: ms(critical), SimTTFTMS: ms(cfg.TTFT)}
	if len(cfg.Members) < 2 {
		return rep, fmt.Errorf("an ensemble needs at least 2 members, got %d", len(cfg.Members))
	}
	models := make([]string, len(cfg.Members))
	latency := []string{simNarrative + "=" + cfg.Synthesis.String(), simExtract + "=" + cfg.Analysis.String()}
	for i, m := range cfg.Members {
		if slices.Contains(models, m.Model) || m.Model == simNarrative || m.Model == simExtract {
			return rep, fmt.Errorf("member model %q named twice", m.Model)
		}
		models[i] = m.Model
		rep.Members = append(rep.Members, ModelMS{Model: m.Model, LatencyMS: ms(m.Latency)})
		latency = append(latency, m.Model+"="+m.Latency.String())
	}
	// The members are no configured model of the service's: the api's
	// allow-list must name them.
	allowed := map[string]string{"LLM_ALLOWED_MODELS": strings.Join(append(slices.Clone(models), simNarrative), ",")}
	svc, err := startService(ctx, serviceOptions{binDir: cfg.BinDir,
		workerEnv: merge(benchModels, allowed), apiEnv: allowed,
		simEnv: map[string]string{"LLMSIM_TTFT": cfg.TTFT.String(), "LLMSIM_LATENCY": strings.Join(latency, ",")}})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	c := svc.API

	var total, overhead, first, firstOver, submit, queueWait, fanIn []time.Duration
	for i := range cfg.Warmup + cfg.Jobs {
		req := client.EnsembleRequest{
			Question:       fmt.Sprintf("Ensemble benchmark question %d: which AI models lead the field?", i),
			Models:         models,
			SynthesisModel: simNarrative,
		}
		r, err := timeSubmission(ctx, c, client.EventAnswerDelta, func(ctx context.Context) (client.Accepted, error) {
			return c.Ensemble(ctx, req)
		})
		if err != nil {
			return rep, fmt.Errorf("job %d: %w", i, err)
		}
		if i < cfg.Warmup {
			continue
		}
		total = append(total, r.total)
		overhead = append(overhead, r.total-critical)
		first = append(first, r.first)
		firstOver = append(firstOver, r.first-cfg.TTFT)
		submit = append(submit, r.submit)
		queueWait = append(queueWait, r.queueWait)
		fanIn = append(fanIn, r.fanIn)
		fmt.Fprintf(log, "ensemble job %2d: total %7.1f ms  overhead %6.1f ms  first text %6.1f ms\n", i-cfg.Warmup+1,
			ms(r.total), ms(r.total-critical), ms(r.first))
	}
	rep.Total, rep.Overhead = Summarize(total), Summarize(overhead)
	rep.FirstText, rep.FirstTextOverhead = Summarize(first), Summarize(firstOver)
	rep.Submit, rep.QueueWait, rep.FanIn = Summarize(submit), Summarize(queueWait), Summarize(fanIn)
	return rep, nil
}

// describeMembers writes "a 400 ms, b 700 ms" for a report's heading.
func describeMembers(members []ModelMS) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = fmt.Sprintf("%s %.0f ms", m.Model, m.LatencyMS)
	}
	return strings.Join(parts, ", ")
}
