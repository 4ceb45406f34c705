package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
)

// The test binary doubles as fake api, worker and llmsim binaries: Start runs
// it through symlinks named after them. A fake listens on its address
// variable, answers its readiness path, and shows its environment at /env.
// FAKE_MODE=exit makes it fail at start; FAKE_MODE=unready keeps it unready
// and prints "fake ROLE unready" once it has answered a readiness probe.
func TestMain(m *testing.M) {
	switch role := filepath.Base(os.Args[0]); role {
	case BinAPI, BinWorker, BinSim:
		os.Exit(runFake(role))
	}
	os.Exit(m.Run())
}

func runFake(role string) int {
	cfg := map[string][2]string{
		BinAPI:    {"API_ADDR", "/readyz"},
		BinWorker: {"WORKER_ADDR", "/readyz"},
		BinSim:    {"LLMSIM_ADDR", "/healthz"},
	}[role]
	addrVar, ready := cfg[0], cfg[1]
	fmt.Printf("fake %s starting\n", role)
	if os.Getenv("FAKE_MODE") == "exit" {
		fmt.Fprintln(os.Stderr, "boom: cannot start")
		return 3
	}
	l, err := net.Listen("tcp", os.Getenv(addrVar))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	var probed sync.Once
	mux.HandleFunc("GET "+ready, func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("FAKE_MODE") == "unready" {
			w.WriteHeader(http.StatusServiceUnavailable)
			probed.Do(func() { fmt.Printf("fake %s unready\n", role) })
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(os.Environ())
	})
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		fmt.Printf("fake %s stopping", role) // no newline: the last line must still reach the output
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return 1
	}
	return 0
}

// fakeBins makes a bin directory whose binaries are this test binary.
func fakeBins(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, b := range []string{BinAPI, BinWorker, BinSim} {
		if err := os.Symlink(exe, filepath.Join(dir, b)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func childEnv(t *testing.T, p *Proc) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + p.Addr + "/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []string
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestEnv(t *testing.T) {
	parent := []string{"HOME=h", "OPENAI_API_KEY=real", "OPENAI_BASE_URL=https://example.invalid/v1", "LLM_MODEL=big", "REDIS_URL=redis://elsewhere/0", "LLMSIM_TTFT=1s", "EMPTY=", "broken"}
	tests := []struct {
		name               string
		sim, topology      bool
		def, common, model map[string]string
		want               []string
	}{
		{
			name: "sim strips the provider and Redis variables",
			sim:  true,
			def:  map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "OPENAI_API_KEY": "sim-key"},
			want: []string{"EMPTY=", "HOME=h", "LLMSIM_TTFT=1s", "OPENAI_API_KEY=sim-key", "REDIS_URL=redis://127.0.0.1:1/0"},
		},
		{
			name: "without sim the provider variables pass",
			def:  map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"},
			want: []string{"EMPTY=", "HOME=h", "LLMSIM_TTFT=1s", "LLM_MODEL=big", "OPENAI_API_KEY=real", "OPENAI_BASE_URL=https://example.invalid/v1", "REDIS_URL=redis://127.0.0.1:1/0"},
		},
		{
			name:   "specific over common over defaults",
			sim:    true,
			def:    map[string]string{"A": "def", "B": "def", "C": "def"},
			common: map[string]string{"B": "common", "C": "common", "LLM_MODEL": "small"},
			model:  map[string]string{"C": "specific"},
			want:   []string{"A=def", "B=common", "C=specific", "EMPTY=", "HOME=h", "LLMSIM_TTFT=1s", "LLM_MODEL=small"},
		},
		{
			name:     "a topology strips the parent's Redis variables even without sim",
			topology: true,
			def:      map[string]string{"REDIS_CLUSTER_ADDRS": "127.0.0.1:1,127.0.0.1:2"},
			want:     []string{"EMPTY=", "HOME=h", "LLMSIM_TTFT=1s", "LLM_MODEL=big", "OPENAI_API_KEY=real", "OPENAI_BASE_URL=https://example.invalid/v1", "REDIS_CLUSTER_ADDRS=127.0.0.1:1,127.0.0.1:2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := env(parent, tt.sim, tt.topology, tt.def, tt.common, tt.model)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "tooling", "stack")); err != nil {
		t.Errorf("root %s: %v", root, err)
	}
}

func TestStartStop(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "must-not-leak")
	t.Setenv("LLM_NARRATIVE_MODEL", "must-not-leak")
	var out syncBuffer
	s, err := Start(t.Context(), Options{
		BinDir:    fakeBins(t),
		Dir:       t.TempDir(),
		Workers:   2,
		Sim:       true,
		Env:       map[string]string{"LLM_MODEL": "sim-model", "LOG_LEVEL": "debug", "X": "env"},
		WorkerEnv: map[string]string{"X": "worker"},
		APIEnv:    map[string]string{"Y": "api"},
		SimEnv:    map[string]string{"LLMSIM_TTFT": "5ms"},
		Output:    &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	if len(s.Workers) != 2 || s.API == nil || s.Sim == nil || s.Redis == nil {
		t.Fatalf("stack %+v", s)
	}
	if s.APIURL != "http://"+s.API.Addr || s.SimURL != "http://"+s.Sim.Addr || s.RedisURL != s.Redis.URL(0) {
		t.Errorf("urls %s %s %s", s.APIURL, s.SimURL, s.RedisURL)
	}
	w := childEnv(t, s.Workers[0])
	for k, v := range map[string]string{
		"REDIS_URL":           s.RedisURL,
		"WORKER_ADDR":         s.Workers[0].Addr,
		"OPENAI_BASE_URL":     s.SimURL + "/v1",
		"OPENAI_API_KEY":      SimAPIKey,
		"LLM_MODEL":           "sim-model",
		"LLM_NARRATIVE_MODEL": "",
		"LOG_LEVEL":           "debug",
		"X":                   "worker",
	} {
		if w[k] != v {
			t.Errorf("worker %s=%q, want %q", k, w[k], v)
		}
	}
	a := childEnv(t, s.API)
	if a["API_ADDR"] != s.API.Addr || a["X"] != "env" || a["Y"] != "api" || a["REDIS_URL"] != s.RedisURL || a["OPENAI_API_KEY"] != "" || a["LLM_MODEL"] != "sim-model" {
		t.Errorf("api env: %v", a)
	}
	if sim := childEnv(t, s.Sim); sim["LLMSIM_ADDR"] != s.Sim.Addr || sim["LLMSIM_TTFT"] != "5ms" {
		t.Errorf("sim env: %v", sim)
	}

	// A crash test adds a worker and kills one.
	w3, err := s.StartWorker(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if w3.Name != "worker-3" || len(s.WorkerList()) != 3 {
		t.Errorf("new worker %s, %d workers", w3.Name, len(s.WorkerList()))
	}
	s.Workers[0].Kill()
	if err := s.Workers[0].Wait(); err == nil || !s.Workers[0].Exited() {
		t.Errorf("killed worker: %v", err)
	}

	procs := append([]*Proc{s.API, s.Sim}, s.WorkerList()...)
	redisAddr := s.Redis.Addr
	s.Stop()
	s.Stop() // twice is fine
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still running", p.Name)
		}
	}
	if err := s.API.Wait(); err != nil {
		t.Errorf("api after SIGTERM: %v", err)
	}
	if c, err := net.DialTimeout("tcp", redisAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("redis still listening")
	}
	log := out.String()
	for _, want := range []string{"[api] fake api starting\n", "[worker-2] fake worker starting\n", "[llmsim] fake llmsim starting\n", "[api] fake api stopping\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(s.API.LogTail(), "fake api starting") {
		t.Errorf("log tail %q", s.API.LogTail())
	}
}

func TestStartLogFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(t.Context(), Options{BinDir: fakeBins(t), Dir: dir, Workers: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if len(s.Workers) != 0 || s.Sim != nil {
		t.Errorf("workers %d, sim %v", len(s.Workers), s.Sim)
	}
	b, err := os.ReadFile(filepath.Join(dir, "api.log"))
	if err != nil || !bytes.Contains(b, []byte("fake api starting")) || s.API.LogPath != filepath.Join(dir, "api.log") {
		t.Errorf("api.log: %q, %v", b, err)
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"exits at start", Options{WorkerEnv: map[string]string{"FAKE_MODE": "exit"}}, []string{"worker-1 exited before it was ready", "boom: cannot start"}},
		{"missing binary", Options{BinDir: "nowhere"}, []string{"binary api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.BinDir == "" {
				tt.opts.BinDir = fakeBins(t)
			}
			tt.opts.Dir = t.TempDir()
			s, err := Start(t.Context(), tt.opts)
			if err == nil {
				s.Stop()
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// errProbed ends Start in TestStartNeverReady.
var errProbed = errors.New("the fake api answered its readiness probe with 503")

// An api that never becomes ready fails Start with its log. The test does
// not race a short readiness timeout against the machine's speed: it ends
// the wait itself once the fake api has provably answered a probe with
// 503, and every readiness wait is far longer than any start.
func TestStartNeverReady(t *testing.T) {
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	out := &lineWatch{line: "[api] fake api unready\n", seen: make(chan struct{})}
	go func() {
		select {
		case <-out.seen:
			cancel(errProbed)
		case <-ctx.Done():
		}
	}()
	s, err := Start(ctx, Options{
		BinDir: fakeBins(t), Dir: t.TempDir(),
		APIEnv: map[string]string{"FAKE_MODE": "unready"}, Output: out,
		ReadyTimeout: time.Hour,
	})
	if err == nil {
		s.Stop()
		t.Fatal("no error")
	}
	if !errors.Is(err, errProbed) {
		t.Errorf("error %v, want the test's cancellation after the probe", err)
	}
	for _, w := range []string{"api not ready", "fake api starting", "fake api unready"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}

// Options.ReadyTimeout bounds the wait. An api that is never ready can only
// end in that timeout, however slow the machine, so the outcome does not
// depend on timing; nothing else (no worker, no simulator) is subject to
// the short timeout.
func TestStartReadyTimeout(t *testing.T) {
	s, err := Start(t.Context(), Options{
		BinDir: fakeBins(t), Dir: t.TempDir(), Workers: -1,
		APIEnv: map[string]string{"FAKE_MODE": "unready"}, ReadyTimeout: 100 * time.Millisecond,
	})
	if err == nil {
		s.Stop()
		t.Fatal("no error")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "api not ready") {
		t.Errorf("error %v, want the api's readiness timeout", err)
	}
}

// Two api replicas and a worker with an environment of its own.
func TestAPIReplicasAndWorkerEnv(t *testing.T) {
	s, err := Start(t.Context(), Options{
		BinDir: fakeBins(t), Dir: t.TempDir(), APIs: 2, Workers: -1, Sim: true,
		WorkerEnv: map[string]string{"X": "all", "Y": "all"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	apis := s.APIList()
	if len(apis) != 2 || apis[0] != s.API || apis[0].Name != "api" || apis[1].Name != "api-2" || apis[0].Addr == apis[1].Addr {
		t.Fatalf("replicas %+v", apis)
	}
	if urls := s.APIURLs(); len(urls) != 2 || urls[0] != s.APIURL || urls[1] != "http://"+apis[1].Addr {
		t.Errorf("urls %v", urls)
	}
	for _, a := range apis {
		if e := childEnv(t, a); e["API_ADDR"] != a.Addr || e["REDIS_URL"] != s.RedisURL {
			t.Errorf("%s env: %v", a.Name, e)
		}
	}
	w, err := s.StartWorkerEnv(t.Context(), map[string]string{"Y": "own", "OPENAI_BASE_URL": "http://proxy/v1"})
	if err != nil {
		t.Fatal(err)
	}
	e := childEnv(t, w)
	if e["X"] != "all" || e["Y"] != "own" || e["OPENAI_BASE_URL"] != "http://proxy/v1" || e["OPENAI_API_KEY"] != SimAPIKey {
		t.Errorf("worker env: %v", e)
	}
	// A replica killed, another started: the stack keeps both in its list.
	apis[0].Kill()
	a3, err := s.StartAPI(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if a3.Name != "api-3" || len(s.APIList()) != 3 {
		t.Errorf("new replica %s, %d replicas", a3.Name, len(s.APIList()))
	}
	s.Stop()
	for _, p := range append(s.APIList(), w) {
		if !p.Exited() {
			t.Errorf("%s still running", p.Name)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	pw := &prefixWriter{prefix: "[p] ", w: &buf, mu: &mu}
	for _, s := range []string{"a", "b\nc\n", "", "d\ne"} {
		_, _ = pw.Write([]byte(s))
	}
	if got, want := buf.String(), "[p] ab\n[p] c\n[p] d\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 5}
	_, _ = tb.Write([]byte("abc"))
	_, _ = tb.Write([]byte("defg"))
	if got := tb.String(); got != "cdefg" {
		t.Errorf("got %q", got)
	}
}

// lineWatch closes seen when a line written to it equals line (with its
// newline). Writes come from a prefixWriter, a whole line at a time.
type lineWatch struct {
	line string
	seen chan struct{}
	once sync.Once
}

func (w *lineWatch) Write(p []byte) (int, error) {
	if string(p) == w.line {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTopologyEnv(t *testing.T) {
	tests := []struct {
		name string
		r    config.Redis
		want map[string]string
	}{
		{"single", config.Redis{URL: "redis://127.0.0.1:1/0"}, map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}},
		{"sentinel", config.Redis{SentinelMaster: "m", SentinelAddrs: []string{"a:1", "b:2"}, SentinelPassword: "sp", ServerPassword: "p", DB: 2},
			map[string]string{"REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_ADDRS": "a:1,b:2", "REDIS_SENTINEL_PASSWORD": "sp", "REDIS_PASSWORD": "p", "REDIS_DB": "2"}},
		{"cluster", config.Redis{ClusterAddrs: []string{"a:1", "b:2"}, ServerUsername: "u", TLS: true},
			map[string]string{"REDIS_CLUSTER_ADDRS": "a:1,b:2", "REDIS_USERNAME": "u", "REDIS_TLS": "true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TopologyEnv(tt.r); !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// With a topology the stack starts no redis-server: api and worker get the
// topology's variables, never a REDIS_URL (theirs or this process').
func TestStartOnTopology(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://must-not-leak:1/0")
	topo := &config.Redis{ClusterAddrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, ServerPassword: "pw"}
	s, err := Start(t.Context(), Options{BinDir: fakeBins(t), Dir: t.TempDir(), Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if s.Redis != nil || s.RedisURL != "" || s.RedisConfig.Topology() != config.RedisCluster {
		t.Fatalf("Redis %v, RedisURL %q, RedisConfig %+v: want the cluster only", s.Redis, s.RedisURL, s.RedisConfig)
	}
	for _, p := range []*Proc{s.API, s.Workers[0]} {
		e := childEnv(t, p)
		if url, ok := e["REDIS_URL"]; ok || e["REDIS_CLUSTER_ADDRS"] != "127.0.0.1:1,127.0.0.1:2" || e["REDIS_PASSWORD"] != "pw" {
			t.Errorf("%s: REDIS_URL %q (set %v), REDIS_CLUSTER_ADDRS %q, REDIS_PASSWORD %q", p.Name, url, ok, e["REDIS_CLUSTER_ADDRS"], e["REDIS_PASSWORD"])
		}
	}
	rdb, err := s.NewRedisClient("test")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Errorf("NewRedisClient gave a %T, want a cluster client", rdb)
	}
}
