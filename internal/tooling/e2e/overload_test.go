package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// errFirst stops a stream after its first event.
var errFirst = errors.New("first event read")

// TestOverloadRefusesNewJobs: with the providers' capacity at one call and
// MAX_BACKLOG_SECONDS=1, slow calls pile up until the api refuses new jobs
// with 503 overloaded and Retry-After, having said in each accepted job's
// job.accepted how long its calls were expected to wait, and showing the
// backlog in /api/monitoring/stats.
func TestOverloadRefusesNewJobs(t *testing.T) {
	e := startStack(t, 1, map[string]string{"MAX_BACKLOG_SECONDS": "1"}, nil, func(o *stack.Options) {
		o.Env["LLM_MAX_IN_FLIGHT"] = "1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var accepted []string
	var refused *client.APIError
	for i := range 10 {
		a, err := e.api.Submit(ctx, client.SubmitRequest{
			Question: "Which question is number " + strconv.Itoa(i) + "?", Model: modelSlow,
			TimePoints: []client.TimePoint{{Date: "2023-01-01"}},
		})
		if errors.As(err, &refused) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, a.JobID)
	}
	if refused == nil {
		t.Fatalf("%d jobs accepted, none refused", len(accepted))
	}
	if refused.StatusCode != http.StatusServiceUnavailable || refused.Code != api.CodeOverloaded || refused.Message == "" || refused.RetryAfter < time.Second {
		t.Fatalf("refusal %+v", refused)
	}
	if len(accepted) == 0 {
		t.Fatal("the first job was refused: an empty backlog has room for one call")
	}

	// The first job's one call had a free slot: no wait.
	var d client.JobAcceptedData
	_, err := e.api.Events(ctx, accepted[0], "", func(ev client.Event) error {
		if ev.Name != client.EventJobAccepted {
			t.Fatalf("first event %s", ev.Name)
		}
		if err := ev.Decode(&d); err != nil {
			t.Fatal(err)
		}
		return errFirst
	})
	if !errors.Is(err, errFirst) {
		t.Fatalf("events: %v", err)
	}
	if d.ExpectedWaitMS == nil || *d.ExpectedWaitMS != 0 {
		t.Fatalf("first job's expected_wait_ms %v, want 0", d.ExpectedWaitMS)
	}

	resp, err := http.Get(e.apiURL + "/api/monitoring/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats api.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || resp.StatusCode != http.StatusOK || stats.Backlog == nil {
		t.Fatalf("stats %d: %+v %v", resp.StatusCode, stats, err)
	}
	if b := stats.Backlog; b.Capacity != 1 || b.MemberCalls < int64(len(accepted)) || b.ExpectedWaitMS <= 1000 || b.MaxBacklogMS != 1000 {
		t.Fatalf("backlog %+v with %d jobs accepted", *b, len(accepted))
	}
}
