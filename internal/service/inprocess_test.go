package service_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// TestInProcessNoLeaks runs the api and the worker in this process, as
// cmd/api and cmd/worker wire them, against a real Redis and the
// simulator, with webhooks and the queue admin UI on; runs one time-travel
// job to its end over SSE, its webhook delivered; stops both; and finds no
// goroutine of theirs left running (their connections to the provider and
// the receiver closed too).
func TestInProcessNoLeaks(t *testing.T) {
	// Not parallel: goleak looks at every goroutine of the process. The
	// simulator stands for the provider, outside the processes: it runs
	// on, and the worker must have closed its connections to it.
	db := redistest.New(t)
	sim := httptest.NewServer(llmsim.New(llmsim.Config{}))
	t.Cleanup(sim.Close)
	// The job's callback receiver, outside the processes too.
	delivered := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case delivered <- r.Header.Get("webhook-id"):
		default:
		}
	}))
	t.Cleanup(receiver.Close)
	ignore := goleak.IgnoreCurrent()

	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_URL": db.URL, "API_ADDR": "127.0.0.1:0", "WORKER_ADDR": "127.0.0.1:0",
		"OPENAI_BASE_URL": sim.URL + "/v1", "OPENAI_API_KEY": "sim-key",
		"LLM_MODEL": "sim-model", "LLM_EXTRACTION_MODEL": "sim-extract",
		"SHUTDOWN_TIMEOUT": "5s",
		"WEBHOOK_SECRET":   "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1",
		// The queue admin UI, with connections of its own (Server.Close).
		"ADMIN_TOKEN": "an-admin-token-of-at-least-32-characters",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := startInProcess(t, cfg)
	base := p.base

	id, status := runJob(t, base, receiver.URL+"/hook")
	if status != "completed" {
		t.Errorf("job ended %q, want completed", status)
	}
	select {
	case got := <-delivered:
		if got != worker.WebhookID(id) {
			t.Errorf("webhook-id %q, want %q", got, worker.WebhookID(id))
		}
	case <-time.After(time.Minute):
		t.Fatal("no webhook delivered within a minute")
	}

	p.stop(t)
	goleak.VerifyNone(t, ignore)
}

// inProcess is an api and a worker running in this process, as cmd/api
// and cmd/worker wire them, each with its own Redis client.
type inProcess struct {
	base       string // the api's address
	cancel     context.CancelFunc
	srv        *api.Server
	ardb, wrdb io.Closer
	apiDone    chan error
	workerDone chan error
}

// startInProcess starts the worker and the api of cfg in this process.
func startInProcess(t *testing.T, cfg config.Config) *inProcess {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := kinds.Registry()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := &inProcess{cancel: cancel, apiDone: make(chan error, 1), workerDone: make(chan error, 1)}
	wrdb, err := redisx.NewClient(cfg.Redis, "tt-worker", worker.PoolSize(cfg), false)
	if err != nil {
		t.Fatal(err)
	}
	p.wrdb = wrdb
	go func() { p.workerDone <- worker.Run(ctx, cfg, worker.Deps{Redis: wrdb, Kinds: reg, Log: log}) }()
	ardb, err := redisx.NewClient(cfg.Redis, "tt-api", 8, false)
	if err != nil {
		t.Fatal(err)
	}
	p.ardb = ardb
	p.srv = api.New(cfg, api.Deps{Redis: ardb, Kinds: reg, Log: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.apiDone <- p.srv.Serve(ctx, ln) }()
	p.base = "http://" + ln.Addr().String()
	return p
}

// stop stops both, waits for them to return (an error of either fails the
// test), and closes what they were given, the test's own connections to
// the api too.
func (p *inProcess) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	for name, done := range map[string]chan error{"api": p.apiDone, "worker": p.workerDone} {
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := p.srv.Close(); err != nil {
		t.Error(err)
	}
	_ = p.ardb.Close()
	_ = p.wrdb.Close()
	http.DefaultClient.CloseIdleConnections()
}

// runJob submits a time-travel job with callback URL callback and follows
// its events to the end; it returns the job's id and final status.
func runJob(t *testing.T, base, callback string) (string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"question": "What is the tallest building?",
		"time_points": []string{"2023-01-01", "2024-05-01"}, "callback_url": callback})
	resp, err := http.Post(base+"/api/time-travel", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var acc api.Accepted
	err = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+acc.Links.Events, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	terminal := false
	for sc.Scan() {
		line := sc.Text()
		if line == "event: job.completed" {
			terminal = true
			continue
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && terminal {
			var ev struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("terminal event %s: %v", data, err)
			}
			return acc.JobID, ev.Status
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("events: %v", err)
	}
	t.Fatal("the event stream ended without job.completed")
	return "", ""
}
