package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// exampleServer stands in for the API: it accepts one job and serves its
// event stream.
func exampleServer() *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/time-travel", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"job_id":"job-1","status":"queued","links":{"self":"/api/jobs/job-1","events":"/api/jobs/job-1/events"}}`)
	})
	mux.HandleFunc("GET /api/jobs/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, strings.Join([]string{
			"retry: 2000\n",
			"id: 1-0\nevent: snapshot.delta\ndata: {\"index\":0,\"text\":\"GPT-3.5 \"}\n",
			": ping\n",
			"id: 1-1\nevent: snapshot.delta\ndata: {\"index\":0,\"text\":\"leads.\"}\n",
			"id: 2-0\nevent: job.completed\ndata: {\"job_id\":\"job-1\",\"status\":\"completed\"}\n",
		}, "\n")+"\n")
	})
	return httptest.NewServer(mux)
}

func Example() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()

	c := client.New(srv.URL)
	acc, err := c.Submit(ctx, client.SubmitRequest{
		Question:   "What are the best AI models?",
		TimePoints: []client.TimePoint{{Date: "2023-01-01"}, client.Today},
	})
	if err != nil {
		fmt.Println("submit:", err)
		return
	}
	fmt.Println("job", acc.JobID, acc.Status)

	var text strings.Builder
	last, err := c.Follow(ctx, acc.JobID, func(e client.Event) error {
		switch e.Name {
		case client.EventSnapshotDelta:
			var d client.SnapshotDeltaData
			if err := e.Decode(&d); err != nil {
				return err
			}
			text.WriteString(d.Text)
		case client.EventJobCompleted:
			var d client.JobCompletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			fmt.Println("final status:", d.Status)
		}
		return nil
	})
	if err != nil {
		fmt.Println("follow:", err)
		return
	}
	fmt.Printf("snapshot 0: %q\nlast event id: %s\n", text.String(), last)
	// Output:
	// job job-1 queued
	// final status: completed
	// snapshot 0: "GPT-3.5 leads."
	// last event id: 2-0
}

// standIn mimics the API's answers for the examples, with the JSON of
// docs/api.md and without Redis: it accepts one submission a minute, runs
// every job to completion at once unless canceled first, and serves
// GET /api/usage and GET /api/models.
type standIn struct {
	mu       sync.Mutex
	jobs     map[string]*client.JobView
	accepted int
}

func newStandIn() *httptest.Server {
	s := &standIn{jobs: map[string]*client.JobView{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/time-travel", s.submit)
	mux.HandleFunc("GET /api/jobs/{id}", s.job)
	mux.HandleFunc("DELETE /api/jobs/{id}", s.cancel)
	mux.HandleFunc("GET /api/jobs/{id}/events", s.events)
	mux.HandleFunc("GET /api/usage", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		answer(w, http.StatusOK, client.Usage{
			Key:    client.KeyInfo{ID: "0123456789abcdef", Name: "team-a"},
			Limits: client.Limits{SubmissionsPerMinute: 1, RunningJobs: 16, StoredJobs: 5000, TokensPerDay: 2000000, SSEConnections: 32},
			Usage:  client.UsageCounts{SubmissionsAvailable: int64(1 - s.accepted), StoredJobs: int64(len(s.jobs)), TokensToday: 48211},
		})
	})
	mux.HandleFunc("GET /api/models", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.Models{Default: "gpt-4o", Models: []string{"gpt-4o", "gpt-4o-mini"}})
	})
	return httptest.NewServer(mux)
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, status int, code, msg string) {
	answer(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (s *standIn) submit(w http.ResponseWriter, r *http.Request) {
	var req client.SubmitRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		refuse(w, http.StatusBadRequest, client.CodeMalformedJSON, "request body is not valid JSON")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accepted == 1 {
		w.Header().Set("Retry-After", "2")
		w.Header().Set("RateLimit-Policy", `"submissions_per_minute";q=1;w=60`)
		w.Header().Set("RateLimit", `"submissions_per_minute";r=0;t=2`)
		answer(w, http.StatusTooManyRequests, map[string]any{"error": map[string]string{
			"code": client.CodeQuotaExceeded, "limit": "submissions_per_minute",
			"message": "too many submissions: at most 1 a minute for this API key",
		}})
		return
	}
	s.accepted++
	id := fmt.Sprintf("job-%d", len(s.jobs)+1)
	links := client.Links{Self: "/api/jobs/" + id, Events: "/api/jobs/" + id + "/events?token=t0k"}
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s.jobs[id] = &client.JobView{
		ID: id, Status: client.StatusRunning, Question: req.Question, Complexity: client.ComplexityStandard,
		Cache: client.CacheUse, CreatedAt: created, Deadline: created.Add(2 * time.Minute),
		Snapshots: []client.Snapshot{
			{Index: 0, Date: "2023-01-01", Label: "January 2023", Status: client.SnapshotRunning, Attempts: 1},
			{Index: 1, Date: "2025-01-02", Label: "Today", Status: client.SnapshotPending},
		},
		KeyChanges: []client.KeyChange{}, Errors: []string{}, Links: links,
	}
	w.Header().Set("Location", links.Self)
	answer(w, http.StatusAccepted, client.Accepted{JobID: id, Status: client.StatusQueued, Links: links})
}

// lookup returns the job of the request's path, or answers 404.
func (s *standIn) lookup(w http.ResponseWriter, r *http.Request) (*client.JobView, bool) {
	v, ok := s.jobs[r.PathValue("id")]
	if !ok {
		refuse(w, http.StatusNotFound, client.CodeJobNotFound, fmt.Sprintf("no job %q (unknown or expired)", r.PathValue("id")))
	}
	return v, ok
}

func (s *standIn) job(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.lookup(w, r); ok {
		answer(w, http.StatusOK, v)
	}
}

func (s *standIn) cancel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if v.Status.Terminal() {
		refuse(w, http.StatusConflict, client.CodeJobFinished, "job "+v.ID+" has ended already ("+string(v.Status)+")")
		return
	}
	v.Status, v.Errors = client.StatusCanceled, []string{"canceled by the client"}
	for i := range v.Snapshots {
		v.Snapshots[i].Status = client.SnapshotCanceled
	}
	answer(w, http.StatusOK, v)
}

// events serves the whole stream of a job that runs to completion.
func (s *standIn) events(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	v, ok := s.lookup(w, r)
	if ok {
		v.Status = client.StatusCompleted
		for i := range v.Snapshots {
			v.Snapshots[i].Status = client.SnapshotCompleted
		}
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = io.WriteString(w, "retry: 2000\n\n")
	for i, ev := range []struct{ name, data string }{
		{client.EventJobAccepted, `{"job_id":"` + v.ID + `","question":"What are the best AI models?","complexity":"standard","deadline":"2025-01-02T03:06:05Z","time_points":[{"index":0,"date":"2023-01-01","label":"January 2023"},{"index":1,"date":"2025-01-02","label":"Today"}]}`},
		{client.EventSnapshotStarted, `{"index":0,"date":"2023-01-01","label":"January 2023","attempt":1}`},
		{client.EventSnapshotStarted, `{"index":1,"date":"2025-01-02","label":"Today","attempt":1}`},
		{client.EventSnapshotDelta, `{"index":0,"text":"GPT-4 leads."}`},
		{client.EventSnapshotCompleted, `{"index":0,"date":"2023-01-01","label":"January 2023","model":"gpt-4o","text":"GPT-4 leads.","duration_ms":1200}`},
		{client.EventSnapshotDelta, `{"index":1,"text":"Many models compete."}`},
		{client.EventSnapshotCompleted, `{"index":1,"date":"2025-01-02","label":"Today","model":"gpt-4o","text":"Many models compete.","duration_ms":1500}`},
		{client.EventAggregateStarted, `{"attempt":1}`},
		{client.EventKeyChangesCompleted, `{"key_changes":[{"from":"2023-01-01","to":"2025-01-02","from_label":"January 2023","to_label":"Today","changes":["the field widened"]}]}`},
		{client.EventNarrativeDelta, `{"text":"One leader became many."}`},
		{client.EventNarrativeCompleted, `{"text":"One leader became many."}`},
		{client.EventJobCompleted, `{"job_id":"` + v.ID + `","status":"completed"}`},
	} {
		fmt.Fprintf(w, "id: 1735787045000-%d\nevent: %s\ndata: %s\n\n", i, ev.name, ev.data)
		if i == 3 {
			_, _ = io.WriteString(w, ": ping\n\n")
		}
	}
}

// Submit a job, then follow its events to the end, printing each.
func ExampleClient_Follow() {
	srv := newStandIn()
	defer srv.Close()
	ctx := context.Background()
	c := client.New(srv.URL, client.WithAPIKey("ttk_example"))

	acc, err := c.Submit(ctx, client.SubmitRequest{
		Question:   "What are the best AI models?",
		TimePoints: []client.TimePoint{{Date: "2023-01-01"}, {Date: "today", Label: "Today"}},
	})
	if err != nil {
		fmt.Println("submit:", err)
		return
	}
	fmt.Println("accepted", acc.JobID, "events at", acc.Links.Events)

	_, err = c.Follow(ctx, acc.JobID, func(e client.Event) error {
		switch e.Name {
		case client.EventSnapshotStarted:
			var d client.SnapshotStartedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			fmt.Printf("%s %s (attempt %d)\n", e.Name, d.Label, d.Attempt)
		case client.EventSnapshotCompleted:
			var d client.SnapshotCompletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			fmt.Printf("%s %s by %s: %s\n", e.Name, d.Label, d.Model, d.Text)
		case client.EventKeyChangesCompleted:
			var d client.KeyChangesData
			if err := e.Decode(&d); err != nil {
				return err
			}
			for _, k := range d.KeyChanges {
				fmt.Printf("%s %s → %s: %s\n", e.Name, k.FromLabel, k.ToLabel, strings.Join(k.Changes, "; "))
			}
		case client.EventNarrativeCompleted:
			var d client.TextData
			if err := e.Decode(&d); err != nil {
				return err
			}
			fmt.Printf("%s %s\n", e.Name, d.Text)
		case client.EventJobCompleted:
			var d client.JobCompletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			fmt.Printf("%s %s (terminal: %v)\n", e.Name, d.Status, e.Terminal())
		default:
			fmt.Println(e.Name)
		}
		return nil
	})
	if err != nil {
		fmt.Println("follow:", err)
		return
	}

	v, err := c.Job(ctx, acc.JobID)
	if err != nil {
		fmt.Println("job:", err)
		return
	}
	fmt.Println("job", v.ID, v.Status, "snapshots:", len(v.Snapshots))
	// Output:
	// accepted job-1 events at /api/jobs/job-1/events?token=t0k
	// job.accepted
	// snapshot.started January 2023 (attempt 1)
	// snapshot.started Today (attempt 1)
	// snapshot.delta
	// snapshot.completed January 2023 by gpt-4o: GPT-4 leads.
	// snapshot.delta
	// snapshot.completed Today by gpt-4o: Many models compete.
	// aggregate.started
	// key_changes.completed January 2023 → Today: the field widened
	// narrative.delta
	// narrative.completed One leader became many.
	// job.completed completed (terminal: true)
	// job job-1 completed snapshots: 2
}

// Cancel a running job; canceling it again is refused with
// job_finished.
func ExampleClient_Cancel() {
	srv := newStandIn()
	defer srv.Close()
	ctx := context.Background()
	c := client.New(srv.URL)

	acc, err := c.Submit(ctx, client.SubmitRequest{Question: "Who leads in EV sales?"})
	if err != nil {
		fmt.Println("submit:", err)
		return
	}
	v, err := c.Cancel(ctx, acc.JobID)
	if err != nil {
		fmt.Println("cancel:", err)
		return
	}
	fmt.Println(v.ID, v.Status, v.Snapshots[0].Status, v.Errors)

	_, err = c.Cancel(ctx, acc.JobID)
	fmt.Println("again, job finished:", client.IsCode(err, client.CodeJobFinished))
	fmt.Println(err)
	// Output:
	// job-1 canceled canceled [canceled by the client]
	// again, job finished: true
	// api: 409 job_finished: job job-1 has ended already (canceled)
}

// A submission over a quota is a 429 *APIError that names the quota and
// says when to try again.
func ExampleAPIError_quotaExceeded() {
	srv := newStandIn() // it accepts one submission a minute
	defer srv.Close()
	ctx := context.Background()
	c := client.New(srv.URL)

	for i := range 2 {
		acc, err := c.Submit(ctx, client.SubmitRequest{Question: "What are the best AI models?"})
		var ae *client.APIError
		switch {
		case errors.As(err, &ae) && ae.Code == client.CodeQuotaExceeded:
			fmt.Printf("submission %d refused: %d, quota %s, retry after %s\n", i+1, ae.StatusCode, ae.Limit, ae.RetryAfter)
			fmt.Println(ae.Message)
		case err != nil:
			fmt.Println("submit:", err)
		default:
			fmt.Printf("submission %d accepted: %s\n", i+1, acc.JobID)
		}
	}
	// Output:
	// submission 1 accepted: job-1
	// submission 2 refused: 429, quota submissions_per_minute, retry after 2s
	// too many submissions: at most 1 a minute for this API key
}

func ExampleClient_Usage() {
	srv := newStandIn()
	defer srv.Close()
	c := client.New(srv.URL, client.WithAPIKey("ttk_example"))

	u, err := c.Usage(context.Background())
	if err != nil {
		fmt.Println("usage:", err)
		return
	}
	fmt.Printf("key %s (%s): %d of %d tokens used today, %d submission(s) available now\n",
		u.Key.ID, u.Key.Name, u.Usage.TokensToday, u.Limits.TokensPerDay, u.Usage.SubmissionsAvailable)
	// Output:
	// key 0123456789abcdef (team-a): 48211 of 2000000 tokens used today, 1 submission(s) available now
}

func ExampleClient_Models() {
	srv := newStandIn()
	defer srv.Close()
	c := client.New(srv.URL)

	m, err := c.Models(context.Background())
	if err != nil {
		fmt.Println("models:", err)
		return
	}
	fmt.Println("default:", m.Default, "offered:", strings.Join(m.Models, ", "))
	// Output:
	// default: gpt-4o offered: gpt-4o, gpt-4o-mini
}
