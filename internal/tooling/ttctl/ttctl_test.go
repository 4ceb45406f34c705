package ttctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// fakeAPI serves one job that ends with status.
type fakeAPI struct {
	status   job.Status
	hang     bool // stop the stream after the first delta and wait
	mu       sync.Mutex
	body     map[string]any
	canceled bool
	streamed chan struct{}
}

func (f *fakeAPI) server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/time-travel", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body["question"] == "bad" {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":{"code":"invalid_field","message":"time_points[0] is in the future","field":"time_points[0]"}}`)
			return
		}
		f.mu.Lock()
		f.body = body
		f.mu.Unlock()
		w.WriteHeader(202)
		_, _ = io.WriteString(w, `{"job_id":"j1","status":"queued","links":{}}`)
	})
	mux.HandleFunc("GET /api/jobs/j1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		evs := []client.Event{acceptedEvent("A"), started(0, 1), delta(0, "Hello")}
		if !f.hang {
			evs = append(evs, snapDone(0, "Hello", 10),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "j1", Status: client.JobStatus(f.status)}))
		}
		for i, ev := range evs {
			fmt.Fprintf(w, "id: %d-0\nevent: %s\ndata: %s\n\n", i+1, ev.Name, ev.Data)
		}
		w.(http.Flusher).Flush()
		if f.hang {
			close(f.streamed)
			<-r.Context().Done()
		}
	})
	mux.HandleFunc("GET /api/jobs/j1", func(w http.ResponseWriter, r *http.Request) {
		one := int64(10)
		_ = json.NewEncoder(w).Encode(job.View{ID: "j1", Kind: timetravel.Name, Status: f.status,
			Timings: job.TimingsView{Timings: job.Timings{TotalMS: &one}, Noun: timetravel.Noun},
			Fields: timetravel.View{Snapshots: []job.Member{{Label: "A", Status: job.MemberCompleted}},
				KeyChanges: []timetravel.KeyChange{}}})
	})
	mux.HandleFunc("DELETE /api/jobs/j1", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.canceled = true
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(job.View{ID: "j1", Status: job.StatusCanceled})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func noEnv(string) string { return "" }

func TestAsk(t *testing.T) {
	tests := []struct {
		name       string
		status     job.Status
		args       []string
		code       int
		stdout     []string
		stderr     []string
		wantFields map[string]any
	}{
		{name: "completed", status: job.StatusCompleted, args: []string{"What", "changed?"}, code: 0,
			stdout:     []string{"== A (2023-01-01) ==\nHello\n-- done in 10ms", "== Job completed ==", "Status:      completed (1 of 1 snapshot answered)", "Total:       10ms"},
			wantFields: map[string]any{"question": "What changed?"}},
		{name: "partial", status: job.StatusPartial, args: []string{"q"}, code: 0},
		{name: "failed", status: job.StatusFailed, args: []string{"q"}, code: 1, stdout: []string{"== Job failed =="}},
		{name: "canceled", status: job.StatusCanceled, args: []string{"q"}, code: 1},
		{name: "flags after the question", status: job.StatusCompleted,
			args: []string{"q", "-model", "m1", "-complexity", "brief", "-time-points", "2023-01-01, today,2024-05-01=May 2024", "-force"}, code: 0,
			wantFields: map[string]any{"model": "m1", "complexity": "brief", "force_time_travel": true,
				"time_points": []any{"2023-01-01", "today", map[string]any{"date": "2024-05-01", "label": "May 2024"}}}},
		{name: "no question", args: []string{"-model", "m"}, code: 2, stderr: []string{"a question is required"}},
		{name: "bad flag", args: []string{"-nope", "q"}, code: 2},
		{name: "refused", args: []string{"bad"}, code: 2, stderr: []string{"invalid_field", "time_points[0] is in the future"}},
		{name: "bad time points", args: []string{"-time-points", "2023-01-01,,today", "q"}, code: 2, stderr: []string{"empty time point"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{status: tt.status}
			srv := f.server(t)
			var stdout, stderr bytes.Buffer
			args := append([]string{"ask", "-api", srv.URL}, tt.args...)
			code := Main(t.Context(), args, noEnv, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			for k, want := range tt.wantFields {
				if got := f.body[k]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("request %s = %v, want %v", k, got, want)
				}
			}
		})
	}
}

func TestAskDefaultAPIFromEnv(t *testing.T) {
	f := &fakeAPI{status: job.StatusCompleted}
	srv := f.server(t)
	env := func(k string) string {
		if k == "TTCTL_API" {
			return srv.URL
		}
		return ""
	}
	if code := Main(t.Context(), []string{"ask", "q"}, env, io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestAskConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	var stderr bytes.Buffer
	if code := Main(t.Context(), []string{"ask", "-api", u, "q"}, noEnv, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

func TestAskInterruptCancelsJob(t *testing.T) {
	f := &fakeAPI{hang: true, streamed: make(chan struct{})}
	srv := f.server(t)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-f.streamed
		cancel()
	}()
	var stderr bytes.Buffer
	code := Main(ctx, []string{"ask", "-api", srv.URL, "q"}, noEnv, io.Discard, &stderr)
	f.mu.Lock()
	defer f.mu.Unlock()
	if code != 1 || !f.canceled || !strings.Contains(stderr.String(), "job j1 canceled") {
		t.Fatalf("exit %d, canceled %v, stderr %s", code, f.canceled, stderr.String())
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{{nil, 2}, {[]string{"nope"}, 2}, {[]string{"help"}, 0}} {
		var out bytes.Buffer
		if code := Main(t.Context(), tt.args, noEnv, &out, &out); code != tt.code || !strings.Contains(out.String(), "Usage:") {
			t.Errorf("%v: exit %d\n%s", tt.args, code, out.String())
		}
	}
}

func TestParseTimePoints(t *testing.T) {
	tests := []struct {
		in      string
		want    []client.TimePoint
		wantErr bool
	}{
		{"", nil, false},
		{"  ", nil, false},
		{"2023-01-01,today", []client.TimePoint{{Date: "2023-01-01"}, client.Today}, false},
		{" 2024-05-01 = May 2024 ", []client.TimePoint{{Date: "2024-05-01", Label: "May 2024"}}, false},
		{"2023-01-01,", nil, true},
		{"=x", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseTimePoints(tt.in)
		if (err != nil) != tt.wantErr || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%q: %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestDemoUsage(t *testing.T) {
	var stderr bytes.Buffer
	if code := Main(t.Context(), []string{"demo", "-question", "a", "b"}, noEnv, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d", code)
	}
}
