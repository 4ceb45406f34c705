package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// Simulated models of the suite. Their latencies are set per scenario.
const (
	modelSnapshot  = "sim-snapshot"
	modelExtract   = "sim-extract"
	modelNarrative = "sim-narrative"
)

// clusterConfig shapes one scenario's service.
type clusterConfig struct {
	// Workers is the number of workers at the start (each behind a tap).
	Workers int
	// AOF runs Redis with the append-only file, fsynced at every write.
	AOF bool
	// Deadline is the jobs' JOB_DEADLINE.
	Deadline time.Duration
	// SnapshotLatency and NarrativeLatency are the simulator's total
	// answer times of those models (the key changes take 300 ms).
	SnapshotLatency, NarrativeLatency time.Duration
	// ShutdownTimeout is the workers' SHUTDOWN_TIMEOUT (default 5 s).
	ShutdownTimeout time.Duration
	// Topology, when set ("sentinel" or "cluster"), runs the service on a
	// real Sentinel group or Redis Cluster of its own (redisproc) instead
	// of one redis-server; AOF does not apply to it.
	Topology string
	// Settle bounds, from the fault, the wait for the queues to drain
	// before the streams are read (default settleAfterKill): long enough
	// for asynq's own recovery of tasks left active by a dead worker or a
	// Redis outage (60-120 s), whose late writes must not double-count.
	// It costs time only when tasks are left: drained queues end it.
	Settle time.Duration
}

// numAPIs is the number of api replicas of every scenario.
const numAPIs = 2

// snapshotConcurrency is each worker's SNAPSHOT_CONCURRENCY (the service's
// default, set so that the scenarios can aim at a saturated worker), and
// providerCap the provider's in-flight cap, room for two such workers.
const (
	snapshotConcurrency = 32
	providerCap         = 2 * snapshotConcurrency
)

// cluster is one scenario's running service and the suite's view of it.
type cluster struct {
	cfg  clusterConfig
	st   *stack.Stack
	apis []*client.Client
	sim  llmsim.Control
	rdb  redis.UniversalClient
	// sentinel or redisCluster is the Redis of a scenario with a
	// Topology.
	sentinel     *redisproc.SentinelGroup
	redisCluster *redisproc.Cluster
	changed      *notifier
	log          *progress
	jobs         *jobSet
	breaker      *breakerWatch

	mu      sync.Mutex
	workers []*worker
	faultAt time.Time

	readers   sync.WaitGroup
	readerCtx context.Context
	stopRead  context.CancelFunc
	stopWatch context.CancelFunc
}

// worker is a worker process and its tap.
type worker struct {
	proc *stack.Proc
	tap  *tap
}

// startCluster starts Redis, the simulator, cfg.Workers workers (each
// behind a tap of its own) and two api replicas, logging to files in dir.
func startCluster(ctx context.Context, cfg clusterConfig, binDir, dir string, log *progress) (*cluster, error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.Settle == 0 {
		cfg.Settle = settleAfterKill
	}
	var (
		topo     *config.Redis
		sentinel *redisproc.SentinelGroup
		rcluster *redisproc.Cluster
	)
	switch cfg.Topology {
	case "":
	case "sentinel":
		g, err := redisproc.StartSentinel(ctx, redisproc.SentinelOptions{Dir: filepath.Join(dir, "sentinel")})
		if err != nil {
			return nil, err
		}
		sentinel, topo = g, stack.SentinelTopology(g)
	case "cluster":
		rc, err := redisproc.StartCluster(ctx, redisproc.ClusterOptions{Dir: filepath.Join(dir, "cluster")})
		if err != nil {
			return nil, err
		}
		rcluster, topo = rc, stack.ClusterTopology(rc)
	default:
		return nil, fmt.Errorf("chaos: unknown topology %q", cfg.Topology)
	}
	closeTopology := func() {
		if sentinel != nil {
			sentinel.Close()
		}
		if rcluster != nil {
			rcluster.Close()
		}
	}
	latency := fmt.Sprintf("%s=%s,%s=300ms,%s=%s", modelSnapshot, cfg.SnapshotLatency, modelExtract, modelNarrative, cfg.NarrativeLatency)
	st, err := stack.Start(ctx, stack.Options{
		BinDir: binDir, Dir: dir, Workers: -1, APIs: numAPIs, Sim: true, RedisAOF: cfg.AOF, Topology: topo,
		// The models go to the api too: its cache keys name them.
		Env: map[string]string{
			"LOG_LEVEL":    "info",
			"JOB_DEADLINE": cfg.Deadline.String(),
			"LLM_MODEL":    modelSnapshot, "LLM_EXTRACTION_MODEL": modelExtract, "LLM_NARRATIVE_MODEL": modelNarrative,
		},
		WorkerEnv: map[string]string{
			"SHUTDOWN_TIMEOUT":     cfg.ShutdownTimeout.String(),
			"SNAPSHOT_CONCURRENCY": strconv.Itoa(snapshotConcurrency),
			"LLM_MAX_IN_FLIGHT":    strconv.Itoa(providerCap),
		},
		SimEnv: map[string]string{
			"LLMSIM_TTFT":              "50ms",
			"LLMSIM_TOKENS_PER_SECOND": "100",
			"LLMSIM_LATENCY":           latency,
		},
	})
	if err != nil {
		closeTopology()
		return nil, err
	}
	rdb, err := st.NewRedisClient("tt-chaos")
	if err != nil {
		st.Stop()
		closeTopology()
		return nil, err
	}
	c := &cluster{
		cfg: cfg, st: st, sim: llmsim.Control{BaseURL: st.SimURL}, rdb: rdb,
		sentinel: sentinel, redisCluster: rcluster,
		changed: newNotifier(), log: log, jobs: newJobSet(),
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}
	for _, u := range st.APIURLs() {
		// The suite reconnects itself, through the other replica.
		c.apis = append(c.apis, client.New(u, client.WithHTTPClient(hc), client.WithIdleTimeout(20*time.Second)))
	}
	c.readerCtx, c.stopRead = context.WithCancel(context.Background())
	for range cfg.Workers {
		if _, err := c.startWorker(ctx); err != nil {
			c.stop()
			return nil, err
		}
	}
	wctx, stopWatch := context.WithCancel(context.Background())
	c.stopWatch = stopWatch
	c.breaker = watchBreakers(wctx, c.liveWorkers)
	return c, nil
}

// startWorker starts one more worker behind a tap of its own.
func (c *cluster) startWorker(ctx context.Context) (*worker, error) {
	t, err := startTap(c.st.SimURL, c.changed)
	if err != nil {
		return nil, err
	}
	p, err := c.st.StartWorkerEnv(ctx, map[string]string{"OPENAI_BASE_URL": t.URL() + "/v1"})
	if err != nil {
		t.Close()
		return nil, err
	}
	w := &worker{proc: p, tap: t}
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	c.log.printf("started %s (pid %d)", p.Name, p.Pid())
	return w, nil
}

// liveWorkers returns the workers that have not exited.
func (c *cluster) liveWorkers() []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*worker
	for _, w := range c.workers {
		if !w.proc.Exited() {
			out = append(out, w)
		}
	}
	return out
}

// stop stops the service and the suite's goroutines.
func (c *cluster) stop() {
	c.stopRead()
	c.readers.Wait()
	if c.stopWatch != nil {
		c.stopWatch()
		c.breaker.wait()
	}
	_ = c.rdb.Close()
	c.st.Stop()
	if c.sentinel != nil {
		c.sentinel.Close()
	}
	if c.redisCluster != nil {
		c.redisCluster.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		w.tap.Close()
	}
}

// markFault records when the scenario's fault began.
func (c *cluster) markFault(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faultAt = t
}

func (c *cluster) faultTime() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.faultAt
}

// alive returns the indexes of the api replicas still running, in order.
func (c *cluster) alive() []int {
	var out []int
	for i, p := range c.st.APIList() {
		if i < len(c.apis) && !p.Exited() {
			out = append(out, i)
		}
	}
	return out
}

// waitCalls waits, at most limit, until cond holds over the taps; cond is
// re-checked at every call that starts or ends.
func (c *cluster) waitCalls(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("no %s within %s", what, limit))
	defer cancel()
	return c.changed.waitFor(ctx, cond)
}

// inFlightTokens returns the tokens of the jobs with a call in flight
// through w's tap.
func inFlightTokens(w *worker) map[int]bool {
	out := map[int]bool{}
	for _, call := range w.tap.InFlight() {
		if call.Token >= 0 {
			out[call.Token] = true
		}
	}
	return out
}

// totalCalls counts the calls of model in flight through every live
// worker's tap.
func (c *cluster) totalCalls(model string) int {
	n := 0
	for _, w := range c.liveWorkers() {
		n += w.tap.Count(model)
	}
	return n
}

// settle waits until no task is active, pending, scheduled or waiting for
// a retry in any queue, or until the deadline passes, and says which.
func (c *cluster) settle(ctx context.Context, until time.Time) string {
	insp := asynq.NewInspectorFromRedisClient(c.rdb)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	left := -1
	for {
		if n, err := openTasks(insp); err == nil {
			left = n
			if n == 0 {
				return fmt.Sprintf("queues drained after %.1f s", time.Since(start).Seconds())
			}
		}
		if time.Now().After(until) {
			return fmt.Sprintf("queues not drained after %.1f s: %d tasks open", time.Since(start).Seconds(), left)
		}
		select {
		case <-ctx.Done():
			return "settle interrupted"
		case <-tick.C:
		}
	}
}

// activeJobs returns the ids of the jobs that have a task in asynq's
// active lists (the job_id of the task's payload).
func (c *cluster) activeJobs() (map[string]bool, error) {
	insp := asynq.NewInspectorFromRedisClient(c.rdb)
	qs, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, q := range qs {
		tasks, err := insp.ListActiveTasks(q, asynq.PageSize(10000))
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			var p struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal(t.Payload, &p) == nil && p.JobID != "" {
				out[p.JobID] = true
			}
		}
	}
	return out, nil
}

// openTasks counts the tasks of every queue that may still run.
func openTasks(insp *asynq.Inspector) (int, error) {
	qs, err := insp.Queues()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range qs {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) {
				continue
			}
			return 0, err
		}
		n += info.Active + info.Pending + info.Scheduled + info.Retry + info.Aggregating
	}
	return n, nil
}

// simStats returns the simulator's counters once nothing is in flight, or
// after 15 s with what is.
func (c *cluster) simStats(ctx context.Context) (llmsim.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		st, err := c.sim.Stats(ctx)
		if err != nil || st.Total.InFlight == 0 {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// breakerWatch samples the workers' timetravel_llm_breaker_state gauges
// (0 closed, 1 half-open, 2 open) twice a second and keeps the moments
// the cluster's breakers went from all closed to some not closed and back.
// An open breaker lasts LLM_BREAKER_OPEN_FOR (30 s by default), so the
// sampling cannot miss one.
type breakerWatch struct {
	mu          sync.Mutex
	transitions []breakerTransition
	open        bool
	done        chan struct{}
}

type breakerTransition struct {
	At   time.Time
	Open bool
}

func watchBreakers(ctx context.Context, workers func() []*worker) *breakerWatch {
	b := &breakerWatch{done: make(chan struct{})}
	hc := &http.Client{Timeout: time.Second}
	go func() {
		defer close(b.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			open := false
			for _, w := range workers() {
				if v, err := breakerMax(ctx, hc, "http://"+w.proc.Addr+"/metrics"); err == nil && v > 0 {
					open = true
				}
			}
			b.mu.Lock()
			if open != b.open {
				b.open = open
				b.transitions = append(b.transitions, breakerTransition{At: time.Now(), Open: open})
			}
			b.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return b
}

func (b *breakerWatch) wait() { <-b.done }

// breakerMax returns the largest breaker state a worker reports (0 when
// it reports none).
func breakerMax(ctx context.Context, hc *http.Client, url string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseBreakerMax(resp.Body)
}

// parseBreakerMax reads Prometheus text and returns the largest value of
// timetravel_llm_breaker_state.
func parseBreakerMax(r io.Reader) (float64, error) {
	const name = "timetravel_llm_breaker_state"
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	best := 0.0
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > best {
			best = v
		}
	}
	return best, sc.Err()
}

// BreakerReport is what the breaker watch saw.
type BreakerReport struct {
	// Opened is set when any worker reported a breaker not closed.
	Opened bool `json:"opened"`
	// FirstOpen is when that was first seen.
	FirstOpen time.Time `json:"first_open,omitzero"`
	// ClosedAt is when every breaker was last seen closed again after
	// having been open; zero while one is still open at the end.
	ClosedAt time.Time `json:"closed_at,omitzero"`
	// Opens counts the transitions from all closed to some open.
	Opens int `json:"opens"`
}

func (b *breakerWatch) report() BreakerReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	var r BreakerReport
	for _, t := range b.transitions {
		if t.Open {
			r.Opens++
			if !r.Opened {
				r.Opened, r.FirstOpen = true, t.At
			}
			r.ClosedAt = time.Time{}
		} else {
			r.ClosedAt = t.At
		}
	}
	return r
}

// progress writes a scenario's progress lines, stamped with the time since
// it began.
type progress struct {
	w     io.Writer
	name  string
	start time.Time
	mu    sync.Mutex
}

func (p *progress) printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%s %6.1fs] %s\n", p.name, time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}
