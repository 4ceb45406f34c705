package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// Settings of the cached scenario.
const (
	// cachedQuestion is the question the scenario primes the caches with and
	// then asks again and again, with the default time points.
	cachedQuestion = "Cached benchmark: which AI models lead the field?"
	// cachedVariant is another spelling of cachedQuestion (white space
	// around it and inside the line, the folds that cannot change meaning)
	// that normalises to the same cache keys.
	cachedVariant = "  Cached benchmark:   which AI\tmodels lead  the field?\n"
	// cachedWarmup is the untimed cached jobs before the timed ones.
	cachedWarmup = 5
	// cachedVariantRuns is the timed submissions of cachedVariant.
	cachedVariantRuns = 10
	// cachedTargetP50MS is the target for POST to job.completed, p50.
	cachedTargetP50MS = 5
)

// CachedReport is what the cached scenario measured: jobs served wholly
// from the snapshot and result caches.
type CachedReport struct {
	Question string `json:"question"`
	Variant  string `json:"variant"`
	// PrimeMS is POST to job.completed of the job that filled the caches.
	PrimeMS float64 `json:"prime_ms"`
	// Total is POST to job.completed seen on SSE, for cachedQuestion.
	Total Summary `json:"total"`
	// Submit is the POST round trip alone, for cachedQuestion.
	Submit Summary `json:"submit"`
	// VariantTotal is POST to job.completed for cachedVariant.
	VariantTotal Summary `json:"variant_total"`
	// Hits counts the submissions of cachedVariant served from the
	// caches, of Runs.
	Hits int `json:"variant_hits"`
	Runs int `json:"variant_runs"`
	// SimRequests is the simulator's chat completions during the timed
	// runs (both spellings); a cached job makes none.
	SimRequests int64 `json:"sim_requests"`
}

// RunCached starts the service (simulated snapshot 200 ms, key changes and
// narrative 50 ms), primes the caches with one job of cachedQuestion
// followed to its end, then times runs sequential submissions of the same
// question, after cachedWarmup untimed ones, each followed over SSE to
// job.completed; every one must be answered cached. It then times
// cachedVariantRuns submissions of a spelling that normalises to the same
// keys and counts those served from the caches, and reads the simulator's
// request count over the timed runs. Progress goes to log.
func RunCached(ctx context.Context, binDir string, runs int, log io.Writer) (CachedReport, error) {
	rep := CachedReport{Question: cachedQuestion, Variant: cachedVariant, Runs: cachedVariantRuns}
	if cachedVariant == cachedQuestion || cache.NormalizeQuestion(cachedVariant) != cache.NormalizeQuestion(cachedQuestion) {
		return rep, fmt.Errorf("variant %q does not normalise to the key of %q", cachedVariant, cachedQuestion)
	}
	on := map[string]string{"CACHE_ENABLED": "true", "DEDUP_ENABLED": "true"}
	svc, err := startService(ctx, serviceOptions{binDir: binDir,
		workerEnv: merge(benchModels, on),
		apiEnv:    on,
		simEnv:    simLatencyEnv(200*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond)})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	c := svc.API

	// Prime: one job that computes every answer and writes it to the caches.
	id, status, prime, err := followJob(ctx, c, cachedQuestion)
	if err != nil {
		return rep, fmt.Errorf("priming job: %w", err)
	}
	if status != string(job.StatusCompleted) {
		return rep, fmt.Errorf("priming job %s ended %s, not completed: nothing to serve from the caches", id, status)
	}
	rep.PrimeMS = ms(prime)
	fmt.Fprintf(log, "cached: priming job %s completed in %.0f ms\n", id, rep.PrimeMS)

	// Workers write the caches before a job ends: the first submission
	// after job.completed must be served from them.
	if r, err := timeCached(ctx, c, cachedQuestion); err != nil {
		return rep, err
	} else if !r.acc.Cached {
		return rep, fmt.Errorf("job %s answered cached=false joined=%t after the priming job completed: %w",
			r.acc.JobID, r.acc.Joined, errNotCached)
	}
	for i := range cachedWarmup {
		if _, err := timeCachedHit(ctx, c, cachedQuestion); err != nil {
			return rep, fmt.Errorf("warmup %d: %w", i+1, err)
		}
	}

	before, err := simIdle(ctx, svc)
	if err != nil {
		return rep, err
	}
	if before.Total.Requests == 0 {
		// Then a count of zero during the timed runs would prove nothing.
		return rep, errors.New("the simulator counted no request for the priming job")
	}
	fmt.Fprintf(log, "cached: %d simulator requests before the timed runs (priming)\n", before.Total.Requests)
	var total, submit []time.Duration
	for i := range runs {
		r, err := timeCachedHit(ctx, c, cachedQuestion)
		if err != nil {
			return rep, fmt.Errorf("run %d: %w", i+1, err)
		}
		total, submit = append(total, r.total), append(submit, r.submit)
		if n := i + 1; n%50 == 0 || n == runs {
			fmt.Fprintf(log, "cached: %d of %d runs, last %.2f ms (POST %.2f ms)\n", n, runs, ms(r.total), ms(r.submit))
		}
	}
	var variant []time.Duration
	for i := range cachedVariantRuns {
		r, err := timeCached(ctx, c, cachedVariant)
		if err != nil {
			return rep, fmt.Errorf("variant run %d: %w", i+1, err)
		}
		variant = append(variant, r.total)
		if r.acc.Cached {
			rep.Hits++
		}
	}
	after, err := simIdle(ctx, svc)
	if err != nil {
		return rep, err
	}
	rep.SimRequests = after.Total.Requests - before.Total.Requests
	rep.Total, rep.Submit, rep.VariantTotal = Summarize(total), Summarize(submit), Summarize(variant)
	fmt.Fprintf(log, "cached: variant spelling served from the caches %d of %d times; %d simulator requests during the timed runs\n",
		rep.Hits, rep.Runs, rep.SimRequests)
	return rep, nil
}

var errNotCached = errors.New("not served from the caches")

type cachedTiming struct {
	total, submit time.Duration
	acc           client.Accepted
}

// timeCachedHit is timeCached for a submission that must be served from
// the caches.
func timeCachedHit(ctx context.Context, c *client.Client, question string) (cachedTiming, error) {
	r, err := timeCached(ctx, c, question)
	if err != nil {
		return r, err
	}
	if !r.acc.Cached || r.acc.Status != client.StatusCompleted {
		return r, fmt.Errorf("job %s answered cached=%t joined=%t status %s: %w", r.acc.JobID, r.acc.Cached, r.acc.Joined,
			r.acc.Status, errNotCached)
	}
	return r, nil
}

// timeCached submits question with the default time points, follows the
// job's events to job.completed, and returns the POST round trip, the time
// from the POST to that event and the API's answer. A job that ends other
// than completed is an error.
func timeCached(ctx context.Context, c *client.Client, question string) (cachedTiming, error) {
	var r cachedTiming
	start := time.Now()
	acc, err := c.Submit(ctx, client.SubmitRequest{Question: question})
	if err != nil {
		return r, fmt.Errorf("submit: %w", err)
	}
	r.submit, r.acc = time.Since(start), acc
	var status client.JobStatus
	_, err = c.Events(ctx, acc.JobID, "", func(ev client.Event) error {
		if !ev.Terminal() {
			return nil
		}
		r.total = time.Since(start)
		var d client.JobCompletedData
		if err := ev.Decode(&d); err != nil {
			return err
		}
		status = d.Status
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("job %s events: %w", acc.JobID, err)
	}
	if status != client.StatusCompleted {
		return r, fmt.Errorf("job %s ended %s", acc.JobID, status)
	}
	return r, nil
}

// simIdle waits for the simulator to have no request in flight and returns
// its counters.
func simIdle(ctx context.Context, svc *Service) (llmsim.Stats, error) {
	var st llmsim.Stats
	err := waitFor(ctx, 30*time.Second, "the simulator to be idle", func() (bool, error) {
		var err error
		st, err = svc.SimStats(ctx)
		return err == nil && st.Total.InFlight == 0, err
	})
	return st, err
}
