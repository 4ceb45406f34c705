package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// ClusterWorkers is the number of worker processes in both runs of the
// cluster scenario: more than one, so that the queue traffic of several
// workers meets on Redis as in a deployment that outgrew one worker.
const ClusterWorkers = 2

// ClusterNode is one Redis node's share of a run. Figures are deltas over
// the timed part of the run, divided by the jobs completed in it.
type ClusterNode struct {
	Addr string `json:"addr"`
	// Role is "master" or "replica" (as the cluster started).
	Role string `json:"role"`
	// Slots are the hash slots a cluster master serves, e.g. "0-5460";
	// empty for a single server and for replicas.
	Slots string `json:"slots,omitempty"`
	// Queues are the asynq queues of the workload (snapshot, aggregate)
	// whose keys the master serves: asynq tags each queue's keys with its
	// name, so one queue's traffic lands on one master.
	Queues []string `json:"queues,omitempty"`
	// CommandsPerJob sums the calls of INFO commandstats: every command
	// the node ran, those inside Lua scripts included, and on a replica
	// those applied from its master's replication stream.
	CommandsPerJob float64          `json:"commands_per_job"`
	TopCommands    map[string]int64 `json:"top_commands_per_job"`
	// CPUPerJobMS is the node's used_cpu_user plus used_cpu_sys (INFO cpu),
	// every thread of the process.
	CPUPerJobMS float64 `json:"cpu_ms_per_job"`
	// CPUPercent is that CPU time over the run's wall time: 100 is one core
	// busy all the time.
	CPUPercent float64 `json:"cpu_percent"`
}

// ClusterRun is the throughput workload on one Redis topology.
type ClusterRun struct {
	// Topology is "single" (one redis-server) or "cluster".
	Topology      string  `json:"topology"`
	Seconds       float64 `json:"seconds"`
	Completed     int64   `json:"completed"`
	Failed        int64   `json:"failed"`
	JobsPerSecond float64 `json:"jobs_per_second"`
	// Latency is POST to the terminal event on SSE; Submit the POST round
	// trip; QueueWait and FanIn the service's own timings of the job (its
	// snapshot tasks' wait in the queue, and the last snapshot's end to
	// the aggregation's start).
	Latency   Summary `json:"latency"`
	Submit    Summary `json:"submit"`
	QueueWait Summary `json:"queue_wait"`
	FanIn     Summary `json:"fan_in"`
	// CommandsPerJob and RedisCPUPerJobMS sum the masters (the single
	// server is its own master); ReplicaCommandsPerJob and
	// ReplicaCPUPerJobMS the replicas, apart: a replica's commands are
	// its master's writes applied again, not work the service asked for.
	CommandsPerJob        float64 `json:"redis_commands_per_job"`
	ReplicaCommandsPerJob float64 `json:"replica_commands_per_job"`
	RedisCPUPerJobMS      float64 `json:"redis_cpu_ms_per_job"`
	ReplicaCPUPerJobMS    float64 `json:"replica_cpu_ms_per_job"`
	// Nodes are the masters in slot order, then their replicas in the
	// same order.
	Nodes []ClusterNode `json:"nodes"`
	// CPUPerJobMS is the CPU time of the service's processes per job
	// ("api", "worker" for both workers, "llmsim", and "bench", this
	// process).
	CPUPerJobMS map[string]float64 `json:"cpu_ms_per_job"`
}

// Masters returns the run's master nodes.
func (r ClusterRun) Masters() []ClusterNode { return r.role("master") }

// Replicas returns the run's replica nodes.
func (r ClusterRun) Replicas() []ClusterNode { return r.role("replica") }

func (r ClusterRun) role(role string) []ClusterNode {
	var out []ClusterNode
	for _, n := range r.Nodes {
		if n.Role == role {
			out = append(out, n)
		}
	}
	return out
}

// ClusterReport is what the cluster scenario measured: the same workload
// against one redis-server and against a Redis Cluster.
type ClusterReport struct {
	Clients int `json:"clients"`
	Workers int `json:"workers"`
	// Seconds is how long the clients start new jobs in each run; a run
	// lasts until the jobs in flight then end (ClusterRun.Seconds).
	Seconds float64 `json:"seconds"`
	// Masters is the number of cluster masters, each with one replica.
	Masters int        `json:"masters"`
	Single  ClusterRun `json:"single"`
	Cluster ClusterRun `json:"cluster"`
}

// RunCluster runs the throughput workload (clients that each submit a job
// and follow it over SSE to its end, in a loop, for d, against a simulator
// that answers at once) with ClusterWorkers worker processes twice: first
// against one redis-server, then against a Redis Cluster of three masters
// with one replica each (redisproc.StartCluster, in a temporary directory
// removed afterwards). Each run starts its own service and counts, per
// Redis node, the commands (INFO commandstats) and CPU (INFO cpu) of the
// timed part. Any job that does not end completed counts as failed; the
// scenario fails when a run completes none.
func RunCluster(ctx context.Context, binDir string, clients int, d time.Duration, log io.Writer) (ClusterReport, error) {
	rep := ClusterReport{Clients: clients, Workers: ClusterWorkers, Masters: 3, Seconds: d.Seconds()}
	dir, err := os.MkdirTemp("", "bench-cluster-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(log, "cluster: one redis-server, %d workers, %d clients, %v\n", ClusterWorkers, clients, d)
	rep.Single, err = runOnTopology(ctx, binDir, filepath.Join(dir, "single"), nil, clients, d, log)
	if err != nil {
		return rep, fmt.Errorf("one redis-server: %w", err)
	}
	fmt.Fprintf(log, "cluster: starting a Redis Cluster of %d masters with one replica each\n", rep.Masters)
	t0 := time.Now()
	c, err := redisproc.StartCluster(ctx, redisproc.ClusterOptions{Dir: filepath.Join(dir, "redis-cluster"), Masters: rep.Masters})
	if err != nil {
		return rep, err
	}
	defer c.Close()
	fmt.Fprintf(log, "cluster: Redis Cluster ready in %v; %d workers, %d clients, %v\n", time.Since(t0).Round(time.Millisecond), ClusterWorkers, clients, d)
	rep.Cluster, err = runOnTopology(ctx, binDir, filepath.Join(dir, "cluster"), c, clients, d, log)
	if err != nil {
		return rep, fmt.Errorf("Redis Cluster: %w", err)
	}
	return rep, nil
}

// benchNode is one Redis node the bench reads INFO from.
type benchNode struct {
	ClusterNode
	rdb *redis.Client
}

// runOnTopology starts the service in dir on c (nil: a redis-server of the
// stack's own) and runs the workload.
func runOnTopology(ctx context.Context, binDir, dir string, c *redisproc.Cluster, clients int, d time.Duration, log io.Writer) (ClusterRun, error) {
	run := ClusterRun{Topology: "single"}
	opts := stack.Options{BinDir: binDir, Dir: dir, Sim: true, Workers: ClusterWorkers,
		Env:       map[string]string{"LOG_LEVEL": "warn"},
		WorkerEnv: map[string]string{"SNAPSHOT_CONCURRENCY": "64", "AGGREGATE_CONCURRENCY": "32"},
		SimEnv:    map[string]string{"LLMSIM_TTFT": "0s", "LLMSIM_TOKENS_PER_SECOND": "0"}}
	if c != nil {
		run.Topology = "cluster"
		opts.Topology = stack.ClusterTopology(c)
	}
	s, err := stack.Start(ctx, opts)
	if err != nil {
		return run, fmt.Errorf("start service: %w", err)
	}
	defer s.Stop()
	nodes, err := topologyNodes(ctx, s, c)
	defer func() {
		for _, n := range nodes {
			_ = n.rdb.Close()
		}
	}()
	if err != nil {
		return run, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	api := client.New(s.APIURL, client.WithHTTPClient(hc))
	// Warm up (connections, the cluster clients' slot maps), then count
	// from here.
	for i := range 3 {
		if _, err := timeJob(ctx, api, "warm-up "+strconv.Itoa(i)); err != nil {
			return run, err
		}
	}
	before, err := readNodes(ctx, nodes)
	if err != nil {
		return run, err
	}
	cpuBefore := stackCPU(s)
	benchBefore, _ := CPUTime(os.Getpid())

	completed, failed, timings, elapsed := driveJobs(ctx, api, clients, d, "Cluster question", log)

	cpuAfter := stackCPU(s)
	benchAfter, _ := CPUTime(os.Getpid())
	after, err := readNodes(ctx, nodes)
	if err != nil {
		return run, err
	}
	run.Seconds = elapsed.Seconds()
	run.Completed, run.Failed = completed, failed
	var total, submit, wait, fanIn []time.Duration
	for _, t := range timings {
		total, submit, wait, fanIn = append(total, t.total), append(submit, t.submit), append(wait, t.queueWait), append(fanIn, t.fanIn)
	}
	run.Latency, run.Submit, run.QueueWait, run.FanIn = Summarize(total), Summarize(submit), Summarize(wait), Summarize(fanIn)
	if completed == 0 {
		return run, fmt.Errorf("no job completed in %v (%d failed)", d, failed)
	}
	n := float64(completed)
	run.JobsPerSecond = n / elapsed.Seconds()
	run.CPUPerJobMS = map[string]float64{"bench": ms(benchAfter-benchBefore) / n}
	for k, v := range cpuAfter {
		run.CPUPerJobMS[k] = ms(v-cpuBefore[k]) / n
	}
	for i, nd := range nodes {
		node := nd.ClusterNode
		delta := after[i].sub(before[i])
		node.CommandsPerJob = float64(delta.total()) / n
		node.TopCommands = top(delta.calls, 8, n)
		node.CPUPerJobMS = ms(delta.cpu) / n
		node.CPUPercent = 100 * delta.cpu.Seconds() / elapsed.Seconds()
		if node.Role == "master" {
			run.CommandsPerJob += node.CommandsPerJob
			run.RedisCPUPerJobMS += node.CPUPerJobMS
		} else {
			run.ReplicaCommandsPerJob += node.CommandsPerJob
			run.ReplicaCPUPerJobMS += node.CPUPerJobMS
		}
		run.Nodes = append(run.Nodes, node)
	}
	fmt.Fprintf(log, "cluster: %s: %d completed, %d failed, %.1f jobs/s, %.0f Redis commands/job\n",
		run.Topology, run.Completed, run.Failed, run.JobsPerSecond, run.CommandsPerJob)
	return run, nil
}

// topologyNodes opens a client of every Redis node of the stack: its own
// server, or the cluster's masters (with the slots and the workload's
// queues each serves) and replicas. The caller closes the clients, also
// when an error is returned.
func topologyNodes(ctx context.Context, s *stack.Stack, c *redisproc.Cluster) ([]benchNode, error) {
	open := func(addr, password, role string) benchNode {
		return benchNode{ClusterNode: ClusterNode{Addr: addr, Role: role},
			rdb: redis.NewClient(&redis.Options{Addr: addr, Password: password, ClientName: "tt-bench", PoolSize: 1})}
	}
	if c == nil {
		return []benchNode{open(s.Redis.Addr, "", "master")}, nil
	}
	var nodes []benchNode
	for _, m := range c.Masters() {
		nodes = append(nodes, open(m.Addr, c.Password, "master"))
	}
	for _, r := range c.Replicas() {
		nodes = append(nodes, open(r.Addr, c.Password, "replica"))
	}
	slots, err := nodes[0].rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nodes, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	ranges := map[string][][2]int{}
	for _, sl := range slots {
		if len(sl.Nodes) > 0 {
			ranges[sl.Nodes[0].Addr] = append(ranges[sl.Nodes[0].Addr], [2]int{sl.Start, sl.End})
		}
	}
	for _, q := range []string{tasks.QueueSnapshot, tasks.QueueAggregate} {
		// asynq's keys of queue q all carry the hash tag {q}.
		slot, err := nodes[0].rdb.ClusterKeySlot(ctx, "asynq:{"+q+"}:pending").Result()
		if err != nil {
			return nodes, fmt.Errorf("CLUSTER KEYSLOT: %w", err)
		}
		for i := range nodes {
			if servesSlot(ranges[nodes[i].Addr], int(slot)) {
				nodes[i].Queues = append(nodes[i].Queues, q)
			}
		}
	}
	for i := range nodes {
		nodes[i].Slots = formatSlots(ranges[nodes[i].Addr])
	}
	return nodes, nil
}

// readNodes reads every node's counters.
func readNodes(ctx context.Context, nodes []benchNode) ([]nodeCounters, error) {
	out := make([]nodeCounters, len(nodes))
	for i, n := range nodes {
		info, err := n.rdb.Info(ctx, "commandstats", "cpu").Result()
		if err != nil {
			return nil, fmt.Errorf("%s: INFO: %w", n.Addr, err)
		}
		if out[i], err = parseNodeInfo(info); err != nil {
			return nil, fmt.Errorf("%s: %w", n.Addr, err)
		}
	}
	return out, nil
}

// stackCPU reads the CPU time of the stack's api, workers (summed) and
// simulator.
func stackCPU(s *stack.Stack) map[string]time.Duration {
	out := map[string]time.Duration{}
	add := func(name string, p *stack.Proc) {
		if p == nil {
			return
		}
		if d, err := CPUTime(p.Pid()); err == nil {
			out[name] += d
		}
	}
	add("api", s.API)
	for _, w := range s.WorkerList() {
		add("worker", w)
	}
	add("llmsim", s.Sim)
	return out
}

// driveJobs runs clients that each submit a job (question, numbered) and
// follow it to its end, in a loop, until d has passed; a job that fails or
// does not end completed counts as failed and is logged.
func driveJobs(ctx context.Context, api *client.Client, clients int, d time.Duration, question string, log io.Writer) (completed, failed int64, timings []jobTiming, elapsed time.Duration) {
	var (
		nOK, nFailed atomic.Int64
		mu           sync.Mutex
		wg           sync.WaitGroup
	)
	start := time.Now()
	stopAt := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			for n := 0; time.Now().Before(stopAt) && ctx.Err() == nil; n++ {
				r, err := timeJob(ctx, api, fmt.Sprintf("%s %d-%d: what changed?", question, c, n))
				if err != nil {
					nFailed.Add(1)
					fmt.Fprintf(log, "client %d: %v\n", c, err)
					continue
				}
				nOK.Add(1)
				mu.Lock()
				timings = append(timings, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return nOK.Load(), nFailed.Load(), timings, time.Since(start)
}

// nodeCounters are a Redis node's cumulative counters at one moment.
type nodeCounters struct {
	// calls by command, from INFO commandstats (subcommands as
	// "config|get").
	calls map[string]int64
	// cpu is used_cpu_user plus used_cpu_sys.
	cpu time.Duration
}

func (c nodeCounters) total() int64 {
	var t int64
	for _, n := range c.calls {
		t += n
	}
	return t
}

// sub returns c minus an earlier reading of the same node.
func (c nodeCounters) sub(earlier nodeCounters) nodeCounters {
	out := nodeCounters{calls: make(map[string]int64, len(c.calls)), cpu: c.cpu - earlier.cpu}
	for k, v := range c.calls {
		if d := v - earlier.calls[k]; d != 0 {
			out.calls[k] = d
		}
	}
	return out
}

// parseNodeInfo reads the commandstats and cpu sections of an INFO answer.
// It fails when the cpu fields are missing, so that a changed format shows
// rather than reading as zero.
func parseNodeInfo(info string) (nodeCounters, error) {
	c := nodeCounters{calls: map[string]int64{}}
	var user, sys float64
	var haveUser, haveSys bool
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(key, "cmdstat_"):
			// calls=N,usec=...,usec_per_call=...
			for _, kv := range strings.Split(val, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					v, err := strconv.ParseInt(n, 10, 64)
					if err != nil {
						return c, fmt.Errorf("INFO commandstats line %q: %w", line, err)
					}
					c.calls[strings.TrimPrefix(key, "cmdstat_")] = v
				}
			}
		case key == "used_cpu_user" || key == "used_cpu_sys":
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return c, fmt.Errorf("INFO cpu line %q: %w", line, err)
			}
			if key == "used_cpu_user" {
				user, haveUser = v, true
			} else {
				sys, haveSys = v, true
			}
		}
	}
	if !haveUser || !haveSys {
		return c, fmt.Errorf("INFO has no used_cpu_user and used_cpu_sys")
	}
	c.cpu = time.Duration((user + sys) * float64(time.Second))
	return c, nil
}

// servesSlot reports whether one of ranges (inclusive) holds slot.
func servesSlot(ranges [][2]int, slot int) bool {
	for _, r := range ranges {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// formatSlots writes slot ranges in order, e.g. "0-5460" or "0-10,20".
func formatSlots(ranges [][2]int) string {
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b [2]int) int { return a[0] - b[0] })
	parts := make([]string, len(rs))
	for i, r := range rs {
		if r[0] == r[1] {
			parts[i] = strconv.Itoa(r[0])
		} else {
			parts[i] = fmt.Sprintf("%d-%d", r[0], r[1])
		}
	}
	return strings.Join(parts, ",")
}

// Print writes the two runs side by side: one row per measure, one column
// per topology. The single server stands in the "master 1" rows.
func (r *ClusterReport) Print(w io.Writer) {
	s, c := r.Single, r.Cluster
	fmt.Fprintf(w, "\n## Redis Cluster (%d clients, %d workers, %.0f s per run, simulator at zero latency)\n\n", r.Clients, r.Workers, r.Seconds)
	fmt.Fprintf(w, "| measure | one Redis | Cluster, %d masters + %d replicas |\n| --- | --- | --- |\n", len(c.Masters()), len(c.Replicas()))
	row := func(name, a, b string) { fmt.Fprintf(w, "| %s | %s | %s |\n", name, a, b) }
	row("completed / failed", fmt.Sprintf("%d / %d", s.Completed, s.Failed), fmt.Sprintf("%d / %d", c.Completed, c.Failed))
	row("jobs/s", f1(s.JobsPerSecond), f1(c.JobsPerSecond))
	pp := func(x Summary) string { return fmt.Sprintf("%.1f / %.1f", x.P50, x.P95) }
	row("run wall s (until the last job ended)", f1(s.Seconds), f1(c.Seconds))
	row("job latency p50 / p95 ms", pp(s.Latency), pp(c.Latency))
	row("  POST round trip p50 / p95 ms", pp(s.Submit), pp(c.Submit))
	row("  queue wait p50 / p95 ms (service timing)", pp(s.QueueWait), pp(c.QueueWait))
	row("  fan-in p50 / p95 ms (service timing)", pp(s.FanIn), pp(c.FanIn))
	row("Redis commands/job, masters", f0(s.CommandsPerJob), f0(c.CommandsPerJob))
	sm, cm := s.Masters(), c.Masters()
	at := func(ns []ClusterNode, i int, f func(ClusterNode) string) string {
		if i < len(ns) {
			return f(ns[i])
		}
		return "–"
	}
	for i := range max(len(sm), len(cm)) {
		row(fmt.Sprintf("  master %d", i+1), at(sm, i, func(n ClusterNode) string { return f0(n.CommandsPerJob) }),
			at(cm, i, func(n ClusterNode) string { return f0(n.CommandsPerJob) }))
	}
	row("Redis commands/job, replicas (replication)", dash(s.Replicas(), s.ReplicaCommandsPerJob, f0), dash(c.Replicas(), c.ReplicaCommandsPerJob, f0))
	row("Redis CPU ms/job, masters", f2(s.RedisCPUPerJobMS), f2(c.RedisCPUPerJobMS))
	cpu := func(n ClusterNode) string {
		return fmt.Sprintf("%.2f (%.0f %% of a core)", n.CPUPerJobMS, n.CPUPercent)
	}
	for i := range max(len(sm), len(cm)) {
		row(fmt.Sprintf("  master %d", i+1), at(sm, i, cpu), at(cm, i, cpu))
	}
	row("Redis CPU ms/job, replicas", dash(s.Replicas(), s.ReplicaCPUPerJobMS, f2), dash(c.Replicas(), c.ReplicaCPUPerJobMS, f2))
	for _, p := range []string{"api", "worker", "llmsim", "bench"} {
		row(p+" CPU ms/job", f2(s.CPUPerJobMS[p]), f2(c.CPUPerJobMS[p]))
	}
	fmt.Fprintf(w, "\nCluster masters: ")
	for i, n := range cm {
		if i > 0 {
			fmt.Fprint(w, "; ")
		}
		fmt.Fprintf(w, "%d = slots %s", i+1, n.Slots)
		if len(n.Queues) > 0 {
			fmt.Fprintf(w, ", asynq queues %s", strings.Join(n.Queues, ", "))
		}
	}
	fmt.Fprintf(w, ".\nTop Redis commands per job, one Redis: %v\n", nodeTops(sm))
	fmt.Fprintf(w, "Top Redis commands per job, Cluster masters: %v\n", nodeTops(cm))
}

// nodeTops lists each node's top commands, numbered as in the table.
func nodeTops(ns []ClusterNode) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprintf("%d: %v", i+1, n.TopCommands)
	}
	return strings.Join(parts, "; ")
}

func dash(ns []ClusterNode, v float64, f func(float64) string) string {
	if len(ns) == 0 {
		return "–"
	}
	return f(v)
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
