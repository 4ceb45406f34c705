package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// Service is the running service of one scenario.
type Service struct {
	Stack  *stack.Stack
	API    *client.Client
	Redis  *redis.Client
	binDir string
	// sim is the simulator running in this process (serviceOptions.sim),
	// served by simSrv; nil when the service talks to the llmsim binary.
	sim    *llmsim.Server
	simSrv *http.Server
}

// serviceOptions shape one scenario's service.
type serviceOptions struct {
	binDir    string
	workers   int
	simEnv    map[string]string
	workerEnv map[string]string
	apiEnv    map[string]string
	// sim, when set, runs the simulator in this process with this
	// configuration and points the api and the workers at it, in place of
	// the llmsim binary's (which the stack still starts, idle, so that it
	// keeps the parent's provider variables away from the children). This
	// tree's simulator then serves both builds of an A/B run alike, with
	// options (Config.Words) and counters (streamed tokens) that an older
	// llmsim binary lacks. Its CPU time counts as the bench's.
	sim *llmsim.Config
}

// startService starts redis, the simulator, workers and the api, quietly.
func startService(ctx context.Context, o serviceOptions) (*Service, error) {
	if o.workers == 0 {
		o.workers = 1
	}
	common := map[string]string{"LOG_LEVEL": "warn"}
	for _, k := range []string{"LLM_MODEL", "LLM_EXTRACTION_MODEL", "LLM_NARRATIVE_MODEL"} {
		// The models are the cluster's: the api's cache keys name them.
		if v, ok := o.workerEnv[k]; ok {
			common[k] = v
		}
	}
	var sim *llmsim.Server
	var simSrv *http.Server
	if o.sim != nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("start the simulator: %w", err)
		}
		sim = llmsim.New(*o.sim)
		simSrv = &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = simSrv.Serve(ln) }()
		// Env overrides the simulator's address that the stack sets.
		common["OPENAI_BASE_URL"] = "http://" + ln.Addr().String() + "/v1"
	}
	stopSim := func() {
		if sim != nil {
			sim.Close()
			_ = simSrv.Close()
		}
	}
	s, err := stack.Start(ctx, stack.Options{
		BinDir: o.binDir, Sim: true, Workers: o.workers,
		Env:       common,
		APIEnv:    o.apiEnv,
		WorkerEnv: o.workerEnv,
		SimEnv:    o.simEnv,
	})
	if err != nil {
		stopSim()
		return nil, fmt.Errorf("start service: %w", err)
	}
	opt, err := redis.ParseURL(s.RedisURL)
	if err != nil {
		s.Stop()
		stopSim()
		return nil, err
	}
	opt.ClientName = "tt-bench"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}}
	return &Service{Stack: s, API: client.New(s.APIURL, client.WithHTTPClient(hc)), Redis: redis.NewClient(opt), binDir: o.binDir,
		sim: sim, simSrv: simSrv}, nil
}

// Stop stops everything.
func (s *Service) Stop() {
	_ = s.Redis.Close()
	s.Stack.Stop()
	if s.sim != nil {
		s.sim.Close()
		_ = s.simSrv.Close()
	}
}

// SimStats reads the simulator's counters.
func (s *Service) SimStats(ctx context.Context) (llmsim.Stats, error) {
	if s.sim != nil {
		return s.sim.Stats(), nil
	}
	var st llmsim.Stats
	err := getJSON(ctx, s.Stack.SimURL+"/sim/stats", &st)
	return st, err
}

// ResetSim resets the simulator's counters.
func (s *Service) ResetSim(ctx context.Context) error {
	if s.sim != nil {
		s.sim.ResetStats()
		return nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.Stack.SimURL+"/sim/stats/reset", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func getJSON(ctx context.Context, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return jsonDecode(resp.Body, v)
}

// RSS returns a process's resident set size in bytes.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// CPUTime returns the user plus system CPU time a process has used.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(u+st) * time.Second / ticks, nil
}

// cpuByProcess reads the CPU time of the service's processes.
func (s *Service) cpuByProcess() map[string]time.Duration {
	out := map[string]time.Duration{}
	add := func(name string, pid int) {
		if d, err := CPUTime(pid); err == nil {
			out[name] += d
		}
	}
	add("api", s.Stack.API.Pid())
	for _, w := range s.Stack.WorkerList() {
		add("worker", w.Pid())
	}
	if s.Stack.Sim != nil && s.sim == nil {
		add("llmsim", s.Stack.Sim.Pid())
	}
	add("redis", s.Stack.Redis.Pid())
	return out
}

// metric reads one unlabelled gauge from a Prometheus text endpoint.
func metric(ctx context.Context, url, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found at %s", name, url)
}

// commandCalls sums the calls in INFO commandstats, and returns them by command.
func commandCalls(ctx context.Context, rdb *redis.Client) (int64, map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return 0, nil, err
	}
	c, err := parseNodeInfo(info)
	if err != nil {
		return 0, nil, err
	}
	return c.total(), c.calls, nil
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
