// Package stack runs the whole time-travel service as real processes on
// loopback: a throwaway redis-server (or a Sentinel group or Cluster the
// caller started: Options.Topology), optionally the LLM simulator, any number
// of workers and one or more api replicas. Integration tests, the demo,
// benchmarks and the chaos suite use it.
//
// Build compiles the binaries; Start launches them, each on a free
// 127.0.0.1 port, configured through environment variables only, and returns
// once every process answers its readiness endpoint. Children are put in their
// own process group and get SIGKILL when the parent dies, so they never
// outlive it. A Stack never touches a process or Redis it did not start.
package stack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
)

// Binary names, as built by Build into the bin directory.
const (
	BinAPI    = "api"
	BinWorker = "worker"
	BinSim    = "llmsim"
)

// Timeouts of the process life cycle.
const (
	// DefaultReadyTimeout bounds how long Start waits for one process to be
	// ready.
	DefaultReadyTimeout = 20 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 10 * time.Second
	// SimAPIKey is the API key a worker gets when it talks to the simulator.
	SimAPIKey = "sim-key"
)

// modulePath identifies the repository's go.mod.
const modulePath = "github.com/timetravel-ai/timetravel"

// ModuleRoot returns the directory of the repository's go.mod, found by
// walking up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("stack: working directory: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && moduleLine(b) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("stack: no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func moduleLine(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// goTool returns the go command: the one on PATH, else the one of the
// toolchain that built this program.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// Build compiles cmd/api, cmd/worker and cmd/llmsim of the repository that
// contains the working directory into outDir (created when missing), as
// `go build -o outDir/ [flags] ./cmd/api ./cmd/worker ./cmd/llmsim`. Extra
// flags (e.g. "-race") go before the packages. The compiler's output is in
// the error when it fails.
func Build(ctx context.Context, outDir string, flags ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	return BuildAt(ctx, root, outDir, flags...)
}

// BuildAt is Build of the source tree at root instead of the working
// directory's repository, e.g. another revision extracted into a temporary
// directory, whose binaries Options.BinDir can then run. The tree must have
// cmd/api, cmd/worker and cmd/llmsim.
func BuildAt(ctx context.Context, root, outDir string, flags ...string) error {
	out, err := filepath.Abs(outDir)
	if err != nil {
		return fmt.Errorf("stack: build: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("stack: build: %w", err)
	}
	args := append([]string{"build", "-o", out + string(filepath.Separator)}, flags...)
	args = append(args, "./cmd/"+BinAPI, "./cmd/"+BinWorker, "./cmd/"+BinSim)
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("stack: go %s: %w\n%s", strings.Join(args, " "), err, bytes.TrimSpace(b))
	}
	return nil
}

// Options configure Start.
type Options struct {
	// BinDir holds the api, worker and llmsim binaries. Empty: Start builds
	// them into Dir/bin first.
	BinDir string
	// Dir receives the log files and Redis' directory. Empty: a temporary
	// directory that Stop removes.
	Dir string
	// Workers is the number of worker processes (default 1; negative: none).
	Workers int
	// APIs is the number of api replicas (default 1). Each listens on a
	// port of its own and shares the one Redis, so that any replica can
	// serve any job.
	APIs int
	// RedisAOF runs Redis with the append-only file, fsynced at every
	// write, so that Redis can be killed and restarted with its data
	// (Stack.Redis.Kill, Restart). Off, a restart comes back empty.
	RedisAOF bool
	// Sim starts the LLM simulator and points the workers at it. It also
	// keeps OPENAI_*, LLM_* and REDIS_URL of this process' environment away
	// from the children.
	Sim bool
	// Env is added to every child's environment; APIEnv, WorkerEnv and
	// SimEnv to that of one kind of process, overriding Env, which overrides
	// the defaults Start sets (addresses, REDIS_URL, LOG_LEVEL=info, and for
	// workers with Sim the simulator's URL and key).
	Env, APIEnv, WorkerEnv, SimEnv map[string]string
	// Output receives the children's stdout and stderr, each line prefixed
	// with the process' name. Nil: one log file per process in Dir.
	Output io.Writer
	// ReadyTimeout bounds the wait for each process to be ready (default
	// DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Topology, when set, runs the stack on a Redis the caller started
	// and stops (a Sentinel group or a Cluster, see SentinelTopology and
	// ClusterTopology) instead of a redis-server of its own: the children
	// get its variables (Topology.Env) in place of REDIS_URL, and none of
	// this process' REDIS_* variables. RedisAOF does not apply.
	Topology *config.Redis
}

// SentinelTopology is the configuration that reaches the master of g
// through its sentinels, with g's passwords.
func SentinelTopology(g *redisproc.SentinelGroup) *config.Redis {
	return &config.Redis{SentinelMaster: g.MasterName, SentinelAddrs: slices.Clone(g.SentinelAddrs),
		SentinelPassword: g.SentinelPassword, ServerPassword: g.Password}
}

// ClusterTopology is the configuration that reaches c through its nodes as
// seeds, with c's password.
func ClusterTopology(c *redisproc.Cluster) *config.Redis {
	return &config.Redis{ClusterAddrs: slices.Clone(c.Addrs), ServerPassword: c.Password}
}

// TopologyEnv returns the environment variables that name r to the
// service (the inverse of config's parsing of them), only those set.
func TopologyEnv(r config.Redis) map[string]string {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("REDIS_URL", r.URL)
	set("REDIS_SENTINEL_MASTER", r.SentinelMaster)
	set("REDIS_SENTINEL_ADDRS", strings.Join(r.SentinelAddrs, ","))
	set("REDIS_SENTINEL_USERNAME", r.SentinelUsername)
	set("REDIS_SENTINEL_PASSWORD", r.SentinelPassword)
	set("REDIS_CLUSTER_ADDRS", strings.Join(r.ClusterAddrs, ","))
	set("REDIS_USERNAME", r.ServerUsername)
	set("REDIS_PASSWORD", r.ServerPassword)
	if r.DB != 0 {
		m["REDIS_DB"] = fmt.Sprint(r.DB)
	}
	if r.TLS {
		m["REDIS_TLS"] = "true"
	}
	set("REDIS_TLS_CA_FILE", r.TLSCAFile)
	set("REDIS_TLS_SERVER_NAME", r.TLSServerName)
	return m
}

// Stack is a running service. Its fields must not be changed; Workers grows
// with StartWorker and APIs with StartAPI.
type Stack struct {
	// RedisURL is database 0 of the stack's Redis; empty with
	// Options.Topology.
	RedisURL string
	// RedisConfig is the Redis the processes use: RedisURL, or
	// Options.Topology. NewRedisClient opens a client of it.
	RedisConfig config.Redis
	// APIURL is the first api replica's root, e.g. http://127.0.0.1:PORT.
	APIURL string
	// SimURL is the simulator's root (without /v1) when Sim is set.
	SimURL string
	// Redis is the stack's redis-server. It may be stopped and restarted
	// on the same address while the other processes run. Nil with
	// Options.Topology.
	Redis *redisproc.Server
	// API is the first api replica (APIs[0]).
	API *Proc
	Sim *Proc
	// Workers are the worker processes, in start order. Use WorkerList to
	// read it while StartWorker may run.
	Workers []*Proc
	// APIs are the api replicas, in start order. Use APIList to read it
	// while StartAPI may run.
	APIs []*Proc

	opts     Options
	binDir   string
	dir      string
	ownDir   bool
	outMu    sync.Mutex
	mu       sync.Mutex
	nWorker  int
	nAPI     int
	stopOnce sync.Once
}

// Start launches redis-server, the simulator (with Sim), the workers and the
// api replicas, in this order, and returns once each answers its readiness
// endpoint.
// It fails, stopping whatever it started, when a process exits early
// (the error holds the end of its log), is not ready within Options.ReadyTimeout, or
// ctx ends. ctx only bounds the start: the processes run until Stop.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	s := &Stack{opts: opts, dir: opts.Dir}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "ttstack-")
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		s.dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	s.binDir = opts.BinDir
	if s.binDir == "" {
		s.binDir = filepath.Join(s.dir, "bin")
		if err := Build(ctx, s.binDir); err != nil {
			return nil, err
		}
	}
	for _, b := range s.binaries() {
		if _, err := os.Stat(filepath.Join(s.binDir, b)); err != nil {
			return nil, fmt.Errorf("stack: binary %s: %w (build it with stack.Build)", b, err)
		}
	}

	if opts.Topology != nil {
		s.RedisConfig = *opts.Topology
	} else {
		s.Redis, err = redisproc.StartWith(ctx, filepath.Join(s.dir, "redis"), redisproc.Options{AOF: opts.RedisAOF})
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		s.RedisURL = s.Redis.URL(0)
		s.RedisConfig = config.Redis{URL: s.RedisURL}
	}

	if opts.Sim {
		s.Sim, err = s.startProc(ctx, BinSim, "llmsim", "LLMSIM_ADDR", "/healthz", opts.SimEnv, nil)
		if err != nil {
			return nil, err
		}
		s.SimURL = "http://" + s.Sim.Addr
	}
	n := opts.Workers
	if n == 0 {
		n = 1
	}
	for range max(n, 0) {
		if _, err := s.StartWorker(ctx); err != nil {
			return nil, err
		}
	}
	for range max(opts.APIs, 1) {
		if _, err := s.StartAPI(ctx); err != nil {
			return nil, err
		}
	}
	s.API = s.APIs[0]
	s.APIURL = "http://" + s.API.Addr
	return s, nil
}

func (s *Stack) binaries() []string {
	b := []string{BinAPI}
	if s.opts.Workers >= 0 {
		b = append(b, BinWorker)
	}
	if s.opts.Sim {
		b = append(b, BinSim)
	}
	return b
}

// Dir returns the directory with the logs and Redis' files.
func (s *Stack) Dir() string { return s.dir }

// NewRedisClient opens a client of the Redis the processes use, whatever
// its topology (redisx.NewClient of RedisConfig), e.g. for a test to look
// at keys or queues. The caller closes it.
func (s *Stack) NewRedisClient(name string) (redis.UniversalClient, error) {
	rdb, err := redisx.NewClient(s.RedisConfig, name, 4, false)
	if err != nil {
		return nil, fmt.Errorf("stack: redis client: %w", err)
	}
	return rdb, nil
}

// StartWorker starts one more worker and returns once it is ready. Its name
// is worker-N, N counting from 1.
func (s *Stack) StartWorker(ctx context.Context) (*Proc, error) {
	return s.StartWorkerEnv(ctx, nil)
}

// StartWorkerEnv is StartWorker with env added to this worker's
// environment, over Options.WorkerEnv (e.g. a provider URL of its own).
func (s *Stack) StartWorkerEnv(ctx context.Context, env map[string]string) (*Proc, error) {
	s.mu.Lock()
	s.nWorker++
	name := fmt.Sprintf("worker-%d", s.nWorker)
	s.mu.Unlock()
	p, err := s.startProc(ctx, BinWorker, name, "WORKER_ADDR", "/readyz", overlay(s.opts.WorkerEnv, env), s.simDefaults(true))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.Workers = append(s.Workers, p)
	s.mu.Unlock()
	return p, nil
}

// StartAPI starts one more api replica and returns once it is ready. The
// first is named api, the next api-2, api-3 and so on.
func (s *Stack) StartAPI(ctx context.Context) (*Proc, error) {
	s.mu.Lock()
	s.nAPI++
	name := "api"
	if s.nAPI > 1 {
		name = fmt.Sprintf("api-%d", s.nAPI)
	}
	s.mu.Unlock()
	p, err := s.startProc(ctx, BinAPI, name, "API_ADDR", "/readyz", s.opts.APIEnv, s.simDefaults(false))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.APIs = append(s.APIs, p)
	s.mu.Unlock()
	return p, nil
}

// APIList returns a copy of APIs, safe to call while StartAPI runs.
func (s *Stack) APIList() []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.APIs)
}

// APIURLs returns the root URL of every api replica, in start order.
func (s *Stack) APIURLs() []string {
	var out []string
	for _, p := range s.APIList() {
		out = append(out, "http://"+p.Addr)
	}
	return out
}

// overlay returns a copy of base with over's entries on top.
func overlay(base, over map[string]string) map[string]string {
	if len(over) == 0 {
		return base
	}
	m := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

// simDefaults are the variables that point a worker at the simulator
// (provider too) or name the simulated models (the api, whose cache keys
// name the models the workers use, and never holds the provider's key).
// The names are simulated ones by default, so that no output suggests a
// real model answered; Env and the specific maps may name others.
func (s *Stack) simDefaults(provider bool) map[string]string {
	if !s.opts.Sim || s.Sim == nil {
		return nil
	}
	// The api needs the provider's address too (its identity is part of
	// the cache keys), never its key.
	m := map[string]string{"LLM_MODEL": "sim-model", "LLM_EXTRACTION_MODEL": "sim-extract",
		"OPENAI_BASE_URL": "http://" + s.Sim.Addr + "/v1"}
	if provider {
		m["OPENAI_API_KEY"] = SimAPIKey
	}
	return m
}

// unlimited lifts the per-key quotas and the caps on stored jobs and
// streams: benchmarks, chaos runs and the demo submit far faster than a
// person, as the anonymous caller. Tests of the quotas set them in Env.
var unlimited = map[string]string{
	"QUOTA_SUBMISSIONS_PER_MINUTE": "0", "QUOTA_RUNNING_JOBS": "0", "QUOTA_STORED_JOBS": "0",
	"QUOTA_TOKENS_PER_DAY": "0", "QUOTA_SSE_CONNECTIONS": "0", "MAX_STORED_JOBS": "0", "MAX_SSE_CONNECTIONS": "0",
}

// WorkerList returns a copy of Workers, safe to call while StartWorker runs.
func (s *Stack) WorkerList() []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.Workers)
}

// Stop stops the api replicas, then the workers (each kind concurrently),
// then the simulator, each with SIGTERM and, after StopTimeout, SIGKILL;
// then Redis. It removes the directory when Start made it. It is safe to
// call more than once and on a partly started stack.
func (s *Stack) Stop() {
	s.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, a := range s.APIList() {
			wg.Go(a.Stop)
		}
		wg.Wait()
		for _, w := range s.WorkerList() {
			wg.Go(w.Stop)
		}
		wg.Wait()
		if s.Sim != nil {
			s.Sim.Stop()
		}
		if s.Redis != nil {
			s.Redis.Stop()
		}
		if s.ownDir {
			_ = os.RemoveAll(s.dir)
		}
	})
}

// env builds a child's environment: the parent's (less the LLM and Redis
// variables when Sim, less every REDIS_* variable when topology), then the
// defaults, Env and the specific map, later ones winning. The result is
// sorted.
func env(parent []string, sim, topology bool, defaults, common, specific map[string]string) []string {
	m := make(map[string]string, len(parent)+len(defaults)+len(common)+len(specific))
	for _, kv := range parent {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if sim && (strings.HasPrefix(k, "OPENAI_") || strings.HasPrefix(k, "LLM_") || k == "REDIS_URL") {
			continue
		}
		// Another topology's variable would make the configuration
		// ambiguous, which the service refuses.
		if topology && strings.HasPrefix(k, "REDIS_") {
			continue
		}
		m[k] = v
	}
	for _, layer := range []map[string]string{defaults, common, specific} {
		for k, v := range layer {
			m[k] = v
		}
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// lookup returns the value of key in a sorted KEY=VALUE list.
func lookup(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// startProc starts one process listening on the address in addrVar (a free
// port unless the caller's maps set it) and waits for GET readyPath → 200.
// A process that exits because its port was taken meanwhile is started again
// on another port.
func (s *Stack) startProc(ctx context.Context, bin, name, addrVar, readyPath string, specific, extra map[string]string) (*Proc, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := redisproc.FreePort()
		if err != nil {
			return nil, fmt.Errorf("stack: %s: %w", name, err)
		}
		defaults := map[string]string{
			"LOG_LEVEL": "info",
			addrVar:     fmt.Sprintf("127.0.0.1:%d", port),
		}
		for k, v := range TopologyEnv(s.RedisConfig) {
			defaults[k] = v
		}
		for k, v := range unlimited {
			defaults[k] = v
		}
		for k, v := range extra {
			defaults[k] = v
		}
		environ := env(os.Environ(), s.opts.Sim, s.opts.Topology != nil, defaults, s.opts.Env, specific)
		addr := lookup(environ, addrVar)
		p, err := s.spawn(filepath.Join(s.binDir, bin), name, addr, environ)
		if err != nil {
			return nil, err
		}
		timeout := s.opts.ReadyTimeout
		if timeout <= 0 {
			timeout = DefaultReadyTimeout
		}
		err = p.waitReady(ctx, "http://"+hostPort(addr)+readyPath, timeout)
		if err == nil {
			return p, nil
		}
		p.Stop()
		lastErr = err
		if ctx.Err() != nil || !strings.Contains(p.LogTail(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// hostPort makes a listen address dialable: ":8080" → "127.0.0.1:8080".
func hostPort(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "127.0.0.1" + addr
	}
	return addr
}

func (s *Stack) spawn(path, name, addr string, environ []string) (*Proc, error) {
	p := &Proc{Name: name, Addr: hostPort(addr), done: make(chan struct{}), tail: &tailBuffer{max: 16 << 10}}
	var out io.Writer
	var pw *prefixWriter
	if s.opts.Output != nil {
		pw = &prefixWriter{prefix: "[" + name + "] ", w: s.opts.Output, mu: &s.outMu}
		out = pw
	} else {
		p.LogPath = filepath.Join(s.dir, name+".log")
		f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("stack: %s log: %w", name, err)
		}
		p.logFile = f
		out = f
	}
	// The tail first: whoever reads a line from out can then find it in
	// LogTail too.
	w := io.MultiWriter(p.tail, out)
	cmd := exec.Command(path)
	cmd.Env = environ
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second // output pipes held open by a stray grandchild
	if err := cmd.Start(); err != nil {
		if p.logFile != nil {
			p.logFile.Close()
		}
		return nil, fmt.Errorf("stack: start %s: %w", name, err)
	}
	p.cmd = cmd
	go func() {
		err := cmd.Wait()
		if p.logFile != nil {
			p.logFile.Close()
		}
		if pw != nil && len(pw.partial) > 0 {
			pw.partial = append(pw.partial, '\n')
			pw.flush()
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Proc is a child process of a Stack.
type Proc struct {
	// Name is "api", "api-N", "llmsim" or "worker-N".
	Name string
	// Addr is the host:port it listens on.
	Addr string
	// LogPath is its log file, when Options.Output was nil.
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	tail    *tailBuffer
	done    chan struct{}
	mu      sync.Mutex
	err     error
	stop    sync.Once
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process' group (the process and anything it
// started). Signalling an exited process is not an error.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stack: signal %s: %w", p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process' group and waits for the process to exit.
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0; an *exec.ExitError otherwise).
func (p *Proc) Wait() error {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to StopTimeout, then kills. It returns once
// the process has exited and is safe to call more than once.
func (p *Proc) Stop() {
	p.stop.Do(func() {
		_ = p.Signal(syscall.SIGTERM)
		t := time.NewTimer(StopTimeout)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			p.Kill()
		}
	})
	<-p.done
}

// LogTail returns the last 16 KiB of the process' output.
func (p *Proc) LogTail() string { return p.tail.String() }

// waitReady polls url until it answers 200, the process exits, timeout
// passes or ctx ends.
func (p *Proc) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("stack: %s readiness: %w", p.Name, err)
		}
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("stack: %s exited before it was ready (%v); end of its log:\n%s", p.Name, p.Wait(), p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("stack: %s not ready at %s: %w; end of its log:\n%s", p.Name, url, context.Cause(ctx), p.LogTail())
		case <-tick.C:
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// prefixWriter writes each line to w with a prefix, holding mu per line so
// that lines of several processes do not mix.
type prefixWriter struct {
	prefix  string
	w       io.Writer
	mu      *sync.Mutex
	partial []byte
}

func (pw *prefixWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			pw.partial = append(pw.partial, p...)
			if len(pw.partial) > 64<<10 { // a huge unterminated line: write it anyway
				pw.flush()
			}
			break
		}
		pw.partial = append(pw.partial, p[:i+1]...)
		pw.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (pw *prefixWriter) flush() {
	pw.mu.Lock()
	_, _ = pw.w.Write(append([]byte(pw.prefix), pw.partial...))
	pw.mu.Unlock()
	pw.partial = pw.partial[:0]
}
