package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// serve runs the api on a loopback listener until the test ends and
// returns its base URL.
func serve(t *testing.T, env map[string]string) string {
	t.Helper()
	db := redistest.New(t)
	env["REDIS_URL"] = db.URL
	cfg, err := config.LoadFrom(env)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// submitTo submits question to the api at base.
func submitTo(t *testing.T, base, question string) api.Accepted {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"question": question})
	resp, err := http.Post(base+"/api/time-travel", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var acc api.Accepted
	if err := json.NewDecoder(resp.Body).Decode(&acc); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	return acc
}

// A request whose body never comes is cut at HTTP_READ_TIMEOUT; an event
// stream, which is a response that lasts, is not.
func TestReadTimeoutCutsSlowBodiesNotStreams(t *testing.T) {
	t.Parallel()
	base := serve(t, map[string]string{
		"HTTP_READ_HEADER_TIMEOUT": "1s", "HTTP_READ_TIMEOUT": "1s", "SSE_HEARTBEAT": "1500ms",
	})
	addr := strings.TrimPrefix(base, "http://")

	// Headers promise a body that never arrives: the server closes the
	// connection (the read returns) instead of holding it.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /api/time-travel HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _ = io.ReadAll(conn) // ends when the server closes (or answers and closes)
	if waited := time.Since(start); waited > 20*time.Second {
		t.Fatalf("the slow body held the connection for %v", waited)
	}

	// A stream of a queued job outlives the read timeout: its heartbeat,
	// sent after 1.5 s, arrives.
	acc := submitTo(t, base, "Does a stream outlive the read timeout?")
	stream, err := http.Get(base + acc.Links.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	r := bufio.NewReader(stream.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended before its heartbeat: %v", err)
		}
		if strings.HasPrefix(line, ": ping") {
			break
		}
	}
}

// Streams beyond a caller's cap get 429 with the quota's headers.
func TestSSEConnectionsCapped(t *testing.T) {
	t.Parallel()
	base := serve(t, map[string]string{"QUOTA_SSE_CONNECTIONS": "1"})
	acc := submitTo(t, base, "How many streams may I open?")
	first, err := http.Get(base + acc.Links.Events)
	if err != nil {
		t.Fatal(err)
	}
	// The first stream is open once its retry hint has arrived.
	if line, err := bufio.NewReader(first.Body).ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first stream: %q %v", line, err)
	}
	second, err := http.Get(base + acc.Links.Events)
	if err != nil {
		t.Fatal(err)
	}
	var body api.ErrorBody
	_ = json.NewDecoder(second.Body).Decode(&body)
	second.Body.Close()
	if second.StatusCode != http.StatusTooManyRequests || body.Error.Limit != "sse_connections" || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %+v (Retry-After %q)", second.StatusCode, body.Error, second.Header.Get("Retry-After"))
	}
	first.Body.Close()
}
