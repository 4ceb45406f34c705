package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// wireEvent is one event as the fake API sends it.
type wireEvent struct{ ID, Name, Data string }

// conn records one request to the events endpoint.
type conn struct {
	LastEventID string
	Accept      string
}

// fakeAPI emulates the time-travel API for one job whose event stream is
// fixed. Connection i to the events endpoint ends after Drops[i] events
// (when set), optionally hanging instead of closing.
type fakeAPI struct {
	JobID        string
	Events       []wireEvent
	View         client.JobView
	RetryMS      int           // sent as "retry:" at the start of each stream (0: none)
	Drops        map[int]int   // connection index → events to send before closing
	Hang         bool          // after the events, keep the connection open instead of closing
	IgnoreLastID bool          // replay from the start on every connection
	Statuses     map[int]int   // connection index → status to answer instead of a stream
	Raw          string        // when set, the events endpoint writes this verbatim, then closes
	Heartbeat    time.Duration // when set, a ": ping" comment is sent at this interval while hanging

	mu        sync.Mutex
	conns     []conn
	submitted []json.RawMessage
	sent      chan string // ids sent, when not nil
}

func (f *fakeAPI) Conns() []conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]conn(nil), f.conns...)
}

func (f *fakeAPI) start(t testing.TB) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/time-travel", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" {
			writeError(w, 415, "unsupported_media_type", "Content-Type must be application/json", "")
			return
		}
		var body json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, 400, "malformed_json", err.Error(), "")
			return
		}
		var probe struct{ Question string }
		_ = json.Unmarshal(body, &probe)
		if strings.TrimSpace(probe.Question) == "" {
			writeError(w, 400, "invalid_field", "question must not be empty", "question")
			return
		}
		f.mu.Lock()
		f.submitted = append(f.submitted, body)
		f.mu.Unlock()
		w.Header().Set("Location", "/api/jobs/"+f.JobID)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"job_id":%q,"status":"queued","links":{"self":"/api/jobs/%[1]s","events":"/api/jobs/%[1]s/events"}}`, f.JobID)
	})
	mux.HandleFunc("GET /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != f.JobID {
			writeError(w, 404, "job_not_found", "no job "+r.PathValue("id"), "")
			return
		}
		writeJSON(w, 200, f.View)
	})
	mux.HandleFunc("DELETE /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != f.JobID {
			writeError(w, 404, "job_not_found", "no job "+r.PathValue("id"), "")
			return
		}
		if f.View.Status.Terminal() {
			writeError(w, 409, "job_finished", "job already ended "+string(f.View.Status), "")
			return
		}
		v := f.View
		v.Status = client.StatusCanceled
		writeJSON(w, 200, v)
	})
	mux.HandleFunc("GET /api/jobs/{id}/events", f.serveEvents)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeAPI) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != f.JobID {
		writeError(w, 404, "job_not_found", "no job "+r.PathValue("id"), "")
		return
	}
	last := r.Header.Get("Last-Event-ID")
	f.mu.Lock()
	n := len(f.conns)
	f.conns = append(f.conns, conn{LastEventID: last, Accept: r.Header.Get("Accept")})
	f.mu.Unlock()
	if st, ok := f.Statuses[n]; ok {
		writeError(w, st, "unavailable", "try later", "")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl := w.(http.Flusher)
	if f.Raw != "" {
		fmt.Fprint(w, f.Raw)
		return
	}
	if f.RetryMS > 0 {
		fmt.Fprintf(w, "retry: %d\n\n", f.RetryMS)
	}
	start := 0
	if last != "" && !f.IgnoreLastID {
		for i, e := range f.Events {
			if e.ID == last {
				start = i + 1
			}
		}
	}
	limit, drop := f.Drops[n]
	for i, e := range f.Events[start:] {
		if drop && i == limit {
			fl.Flush()
			return
		}
		fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", e.ID, e.Name, e.Data)
		fl.Flush()
		if f.sent != nil {
			f.sent <- e.ID
		}
	}
	if f.Hang {
		var tick <-chan time.Time
		if f.Heartbeat > 0 {
			tk := time.NewTicker(f.Heartbeat)
			defer tk.Stop()
			tick = tk.C
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick:
				fmt.Fprint(w, ": ping\n\n")
				fl.Flush()
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg, field string) {
	e := map[string]string{"code": code, "message": msg}
	if field != "" {
		e["field"] = field
	}
	writeJSON(w, status, map[string]any{"error": e})
}

// jobStream is a small, complete stream of a job with two time points.
func jobStream(id string) []wireEvent {
	return []wireEvent{
		{"1-0", "job.accepted", `{"job_id":"` + id + `","question":"Best AI models?","model":"gpt-4o","complexity":"brief","deadline":"2025-01-01T00:02:00Z","time_points":[{"index":0,"date":"2023-01-01","label":"January 2023"},{"index":1,"date":"2024-05-01","label":"May 2024"}]}`},
		{"2-0", "snapshot.started", `{"index":0,"date":"2023-01-01","label":"January 2023","attempt":1}`},
		{"2-1", "snapshot.started", `{"index":1,"date":"2024-05-01","label":"May 2024","attempt":1}`},
		{"3-0", "snapshot.delta", `{"index":0,"text":"GPT-3.5 "}`},
		{"3-1", "snapshot.delta", `{"index":1,"text":"GPT-4o "}`},
		{"3-2", "snapshot.delta", `{"index":0,"text":"leads."}`},
		{"3-3", "snapshot.delta", `{"index":1,"text":"leads."}`},
		{"4-0", "snapshot.completed", `{"index":0,"date":"2023-01-01","label":"January 2023","model":"gpt-4o","text":"GPT-3.5 leads.","duration_ms":1200}`},
		{"4-1", "snapshot.completed", `{"index":1,"date":"2024-05-01","label":"May 2024","model":"gpt-4o","text":"GPT-4o leads.","duration_ms":1500}`},
		{"5-0", "key_changes.completed", `{"key_changes":[{"from":"2023-01-01","to":"2024-05-01","from_label":"January 2023","to_label":"May 2024","changes":["GPT-4o replaced GPT-3.5"]}]}`},
		{"5-1", "narrative.delta", `{"text":"Things "}`},
		{"5-2", "narrative.delta", `{"text":"moved fast."}`},
		{"5-3", "narrative.completed", `{"text":"Things moved fast."}`},
		{"6-0", "job.completed", `{"job_id":"` + id + `","status":"completed"}`},
	}
}

func ids(evs []wireEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
