package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// SSEPoint is the api's footprint at one number of SSE subscribers.
type SSEPoint struct {
	Subscribers int     `json:"subscribers"`
	RSSMB       float64 `json:"api_rss_mb"`
	Goroutines  float64 `json:"api_goroutines"`
	RedisConns  int     `json:"api_redis_connections"`
	HeapMB      float64 `json:"api_heap_inuse_mb"`
	StackMB     float64 `json:"api_stack_inuse_mb"`
}

// SSEReport is what the SSE scale scenario measured.
type SSEReport struct {
	Jobs   int        `json:"jobs"`
	Points []SSEPoint `json:"points"`
}

// RunSSEScale opens subscribers SSE streams spread over jobs live jobs on one
// api process and reads its memory, goroutines and Redis connections at
// several steps.
func RunSSEScale(ctx context.Context, binDir string, jobs, subscribers int, log io.Writer) (SSEReport, error) {
	rep := SSEReport{Jobs: jobs}
	svc, err := startService(ctx, serviceOptions{binDir: binDir,
		// Slow snapshots keep the jobs open and streaming while we measure.
		workerEnv: merge(benchModels, map[string]string{"SNAPSHOT_CONCURRENCY": "64"}),
		apiEnv:    map[string]string{"JOB_DEADLINE": "10m", "PPROF_ADDR": os.Getenv("BENCH_API_PPROF"), "GODEBUG": os.Getenv("BENCH_API_GODEBUG"), "GOGC": os.Getenv("BENCH_API_GOGC")},
		simEnv:    merge(simLatencyEnv(5*time.Minute, time.Second, time.Second, time.Second), map[string]string{"LLMSIM_TOKENS_PER_SECOND": "5"})})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	ids := make([]string, jobs)
	for i := range ids {
		acc, err := svc.API.Submit(ctx, client.SubmitRequest{Question: fmt.Sprintf("SSE scale question %d", i)})
		if err != nil {
			return rep, err
		}
		ids[i] = acc.JobID
	}
	// A client of its own, with no connection limit and no idle timeout hit.
	sub := client.New(svc.Stack.APIURL, client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}),
		client.WithIdleTimeout(10*time.Minute))

	measure := func(n int) error {
		// Let the api settle after the last connection opened.
		time.Sleep(500 * time.Millisecond)
		rss, err := RSS(svc.Stack.API.Pid())
		if err != nil {
			return err
		}
		g, err := metric(ctx, svc.Stack.APIURL+"/metrics", "go_goroutines")
		if err != nil {
			return err
		}
		pool, err := metric(ctx, svc.Stack.APIURL+"/metrics", "timetravel_api_redis_pool_connections")
		if err != nil {
			return err
		}
		conns := int(pool) + 1 // the hub's Pub/Sub connection
		heap, _ := metric(ctx, svc.Stack.APIURL+"/metrics", "go_memstats_heap_inuse_bytes")
		stack, _ := metric(ctx, svc.Stack.APIURL+"/metrics", "go_memstats_stack_inuse_bytes")
		p := SSEPoint{Subscribers: n, RSSMB: float64(rss) / (1 << 20), Goroutines: g, RedisConns: conns,
			HeapMB: heap / (1 << 20), StackMB: stack / (1 << 20)}
		rep.Points = append(rep.Points, p)
		fmt.Fprintf(log, "sse: %5d subscribers: api RSS %.1f MB (heap %.1f, stacks %.1f), %0.f goroutines, %d Redis connections\n",
			n, p.RSSMB, p.HeapMB, p.StackMB, g, conns)
		return nil
	}
	if err := measure(0); err != nil {
		return rep, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		opened  atomic.Int64
		failure atomic.Value
	)
	defer wg.Wait()
	defer cancel()
	steps := []int{subscribers / 5, subscribers}
	n := 0
	for _, target := range steps {
		for ; n < target; n++ {
			id := ids[n%len(ids)]
			first := make(chan struct{})
			wg.Go(func() {
				once := sync.Once{}
				_, err := sub.Events(sctx, id, "", func(client.Event) error {
					once.Do(func() { opened.Add(1); close(first) })
					return nil
				})
				if err != nil && !errors.Is(err, context.Canceled) && sctx.Err() == nil {
					failure.Store(err)
				}
			})
			if n%200 == 199 {
				<-first // pace the opening a little
			}
		}
		if err := waitFor(ctx, 2*time.Minute, "subscribers to receive their first event", func() (bool, error) {
			if f := failure.Load(); f != nil {
				return false, f.(error)
			}
			return opened.Load() >= int64(target), nil
		}); err != nil {
			return rep, err
		}
		if err := measure(target); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// MemoryReport is the worker's footprint with many calls in flight.
type MemoryReport struct {
	InFlight    int64   `json:"llm_calls_in_flight"`
	WorkerRSSMB float64 `json:"worker_rss_mb"`
	IdleRSSMB   float64 `json:"worker_idle_rss_mb"`
}

// RunMemory puts calls streaming LLM calls in flight on one worker and reads
// its RSS.
func RunMemory(ctx context.Context, binDir string, calls int, log io.Writer) (MemoryReport, error) {
	var rep MemoryReport
	svc, err := startService(ctx, serviceOptions{binDir: binDir,
		workerEnv: merge(benchModels, map[string]string{"SNAPSHOT_CONCURRENCY": fmt.Sprint(calls), "LLM_MAX_IN_FLIGHT": fmt.Sprint(calls + 16)}),
		apiEnv:    map[string]string{"JOB_DEADLINE": "10m"},
		simEnv:    merge(simLatencyEnv(2*time.Minute, time.Second, time.Second, 100*time.Millisecond), map[string]string{"LLMSIM_TOKENS_PER_SECOND": "5"})})
	if err != nil {
		return rep, err
	}
	defer svc.Stop()
	w := svc.Stack.WorkerList()[0]
	idle, err := RSS(w.Pid())
	if err != nil {
		return rep, err
	}
	rep.IdleRSSMB = float64(idle) / (1 << 20)
	for i := range (calls + 3) / 4 {
		if _, err := svc.API.Submit(ctx, client.SubmitRequest{Question: fmt.Sprintf("Memory question %d", i)}); err != nil {
			return rep, err
		}
	}
	if err := waitFor(ctx, time.Minute, fmt.Sprintf("%d calls in flight", calls), func() (bool, error) {
		st, err := svc.SimStats(ctx)
		if err != nil {
			return false, err
		}
		rep.InFlight = st.Models[simSnapshot].InFlight
		return rep.InFlight >= int64(calls), nil
	}); err != nil {
		return rep, err
	}
	time.Sleep(2 * time.Second) // let the streams run a while
	rss, err := RSS(w.Pid())
	if err != nil {
		return rep, err
	}
	rep.WorkerRSSMB = float64(rss) / (1 << 20)
	fmt.Fprintf(log, "memory: %d calls in flight: worker RSS %.1f MB (idle %.1f MB)\n", rep.InFlight, rep.WorkerRSSMB, rep.IdleRSSMB)
	return rep, nil
}
