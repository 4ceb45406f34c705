package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// SeedReport compares the design this service replaces with the service.
type SeedReport struct {
	CriticalPathMS float64 `json:"critical_path_ms"`
	// Sequential: snapshots one after another, one key-change call per
	// consecutive pair, then the narrative (the original algorithm).
	Sequential Summary `json:"sequential"`
	// Concurrent: snapshots at once, one batched key-change call, then the
	// narrative (its optimised version).
	Concurrent Summary `json:"concurrent"`
	// Service: this service through the API, queue and SSE.
	Service Summary `json:"service"`
}

// simLatencyEnv is the simulator configuration shared by the scenarios with
// realistic latency.
func simLatencyEnv(snapshot, extract, narrative, ttft time.Duration) map[string]string {
	return map[string]string{
		"LLMSIM_TTFT": ttft.String(),
		"LLMSIM_LATENCY": fmt.Sprintf("%s=%s,%s=%s,%s=%s", simSnapshot, snapshot, simExtract, extract,
			simNarrative, narrative),
	}
}

var benchModels = map[string]string{
	"LLM_MODEL": simSnapshot, "LLM_EXTRACTION_MODEL": simExtract, "LLM_NARRATIVE_MODEL": simNarrative,
}

// RunSeed times runs of each of the three designs against one simulator with
// the given latencies.
func RunSeed(ctx context.Context, binDir string, runs int, cfg LatencyConfig, log io.Writer) (SeedReport, error) {
	rep := SeedReport{CriticalPathMS: ms(cfg.Snapshot + max(cfg.KeyChange, cfg.Narrative))}
	svc, err := startService(ctx, serviceOptions{binDir: binDir, workerEnv: benchModels,
		simEnv: simLatencyEnv(cfg.Snapshot, cfg.KeyChange, cfg.Narrative, cfg.TTFT)})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	model := llm.New(config.LLM{BaseURL: svc.Stack.SimURL + "/v1", APIKey: stack.SimAPIKey, APIType: "openai", Timeout: time.Minute})
	question := "What are the best AI models?"
	spec, ferr := timetravel.Submission{Question: &question}.Validate(time.Now())
	if ferr != nil {
		return rep, ferr
	}

	var seq, conc, service []time.Duration
	for i := range runs + 1 { // the first run of each warms up
		d, err := sequential(ctx, model, spec)
		if err != nil {
			return rep, fmt.Errorf("sequential: %w", err)
		}
		if i > 0 {
			seq = append(seq, d)
		}
		d, err = concurrent(ctx, model, spec)
		if err != nil {
			return rep, fmt.Errorf("concurrent: %w", err)
		}
		if i > 0 {
			conc = append(conc, d)
		}
		// The designs it is compared with cache nothing: neither may this
		// run, which asks the same question every time.
		r, err := timeRequest(ctx, svc.API, client.SubmitRequest{Question: question, Cache: "bypass"})
		if err != nil {
			return rep, fmt.Errorf("service: %w", err)
		}
		if i > 0 {
			service = append(service, r.total)
		}
		if i > 0 {
			fmt.Fprintf(log, "seed run %d: sequential %.0f ms, concurrent %.0f ms, service %.0f ms\n", i, ms(seq[i-1]), ms(conc[i-1]), ms(r.total))
		}
	}
	rep.Sequential, rep.Concurrent, rep.Service = Summarize(seq), Summarize(conc), Summarize(service)
	return rep, nil
}

func snapshotCall(ctx context.Context, m *llm.Client, spec job.Spec, i int) (job.Member, error) {
	params := timetravel.ParamsOf(spec)
	tp := params.TimePoints[i]
	p := timetravel.Snapshot(spec.Question, tp, params.Complexity)
	resp, err := m.Stream(ctx, llm.Request{Model: simSnapshot, System: p.System, User: p.User, MaxTokens: p.MaxTokens}, func(string) error { return nil })
	return job.Member{Index: i, Label: tp.Label, Ref: map[string]string{"date": tp.Date}, Text: resp.Text, Status: job.MemberCompleted}, err
}

func narrativeCall(ctx context.Context, m *llm.Client, spec job.Spec, snaps []job.Member) error {
	p := timetravel.Narrative(spec.Question, snaps, timetravel.ParamsOf(spec).Complexity)
	_, err := m.Complete(ctx, llm.Request{Model: simNarrative, System: p.System, User: p.User, MaxTokens: p.MaxTokens})
	return err
}

// sequential is the original algorithm.
func sequential(ctx context.Context, m *llm.Client, spec job.Spec) (time.Duration, error) {
	start := time.Now()
	n := len(timetravel.ParamsOf(spec).TimePoints)
	snaps := make([]job.Member, n)
	for i := range n {
		s, err := snapshotCall(ctx, m, spec, i)
		if err != nil {
			return 0, err
		}
		snaps[i] = s
	}
	for i := 0; i+1 < len(snaps); i++ {
		p := timetravel.KeyChanges(spec.Question, snaps[i:i+2])
		if _, err := m.Complete(ctx, llm.Request{Model: simExtract, System: p.System, User: p.User, JSON: true}); err != nil {
			return 0, err
		}
	}
	if err := narrativeCall(ctx, m, spec, snaps); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// concurrent is the optimised version of the original.
func concurrent(ctx context.Context, m *llm.Client, spec job.Spec) (time.Duration, error) {
	start := time.Now()
	n := len(timetravel.ParamsOf(spec).TimePoints)
	snaps := make([]job.Member, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { snaps[i], errs[i] = snapshotCall(ctx, m, spec, i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	p := timetravel.KeyChanges(spec.Question, snaps)
	if _, err := m.Complete(ctx, llm.Request{Model: simExtract, System: p.System, User: p.User, JSON: true}); err != nil {
		return 0, err
	}
	if err := narrativeCall(ctx, m, spec, snaps); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
