package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/client"
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
