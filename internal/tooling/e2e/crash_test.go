package e2e

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// killAndReplace runs on the stream of id and, at the first event for
// which at says so, kills the stack's only worker with SIGKILL and starts
// another. It returns the whole stream.
func killAndReplace(t *testing.T, e env, id string, at func(client.Event) bool) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	killed := false
	var evs []client.Event
	_, err := e.api.Events(ctx, id, "", func(ev client.Event) error {
		evs = append(evs, ev)
		if !killed && at(ev) {
			killed = true
			w := e.stack.WorkerList()[0]
			if err := w.Signal(syscall.SIGKILL); err != nil {
				return err
			}
			<-w.Done()
			if _, err := e.stack.StartWorker(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !killed {
		t.Fatalf("the stream never reached the moment to kill: %v", names(evs))
	}
	return evs
}

// A worker killed mid-snapshot: the worker that replaces it reaps the dead
// one's claimed tasks within seconds, so the job completes in full long
// before its deadline. (asynq's own recovery takes at least its 30 s lease:
// the aggregation, due 30 s after submission, would find the snapshots
// unfinished and end the job partial.)
func TestKilledWorkersSnapshotsRunAgainInSeconds(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, map[string]string{"JOB_DEADLINE": "40s"}, nil)
	id := submit(t, e, client.SubmitRequest{Question: "Who takes over a dead worker's snapshots?", Model: "sim-2s"})
	evs := killAndReplace(t, e, id, func(ev client.Event) bool { return ev.Name == client.EventSnapshotStarted })
	checkOrder(t, evs, 4)
	if got := terminalStatus(t, evs); got != "completed" {
		t.Fatalf("status %s, want completed: %v", got, names(evs))
	}
	retried := false
	for _, ev := range evs {
		var d client.SnapshotStartedData
		if ev.Name == client.EventSnapshotStarted && ev.Decode(&d) == nil && d.Attempt >= 2 {
			retried = true
		}
	}
	if !retried {
		t.Fatalf("no snapshot ran a second attempt: %v", names(evs))
	}
}

// A worker killed while it streams the narrative: the aggregation runs
// again, announces itself with attempt 2, and each aggregation part ends
// once; the narrative is the text after the last aggregate.started.
func TestKilledAggregationRunsAgainOnce(t *testing.T) {
	t.Parallel()
	models := map[string]string{"JOB_DEADLINE": "40s", "LLM_NARRATIVE_MODEL": "sim-2s"}
	e := startStack(t, 1, models, models)
	id := submit(t, e, client.SubmitRequest{Question: "Does a narrative survive its worker?"})
	evs := killAndReplace(t, e, id, func(ev client.Event) bool { return ev.Name == client.EventNarrativeDelta })
	checkOrder(t, evs, 4)
	if got := terminalStatus(t, evs); got != "completed" {
		t.Fatalf("status %s, want completed: %v", got, names(evs))
	}
	var attempts []int
	for _, ev := range evs {
		var d client.AggregateStartedData
		if ev.Name == client.EventAggregateStarted && ev.Decode(&d) == nil {
			attempts = append(attempts, d.Attempt)
		}
	}
	if len(attempts) != 2 || attempts[0] != 1 || attempts[1] != 2 {
		t.Fatalf("aggregate.started attempts %v, want [1 2]", attempts)
	}
	for _, name := range []string{client.EventNarrativeCompleted, client.EventJobCompleted} {
		if n := countNamed(evs, name); n != 1 {
			t.Fatalf("%d %s, want 1: %v", n, name, names(evs))
		}
	}
	if n := countNamed(evs, client.EventKeyChangesCompleted) + countNamed(evs, client.EventKeyChangesFailed); n != 1 {
		t.Fatalf("key changes ended %d times: %v", n, names(evs))
	}
	var final client.TextData
	for _, ev := range evs {
		if ev.Name == client.EventNarrativeCompleted {
			_ = json.Unmarshal(ev.Data, &final)
		}
	}
	deltas := ""
	for _, ev := range evs {
		switch ev.Name {
		case client.EventAggregateStarted:
			deltas = ""
		case client.EventNarrativeDelta:
			var d client.TextData
			_ = ev.Decode(&d)
			deltas += d.Text
		}
	}
	if deltas != final.Text || final.Text == "" {
		t.Fatalf("deltas after the last restart %q, narrative %q", deltas, final.Text)
	}
}

// A narrative slower than the job's deadline: the job ends at its
// deadline, partial, with its snapshots and key changes, and the
// narrative's call cut (not 20 s later, when the slow model would answer).
func TestDeadlineEndsAJobWhileItAggregates(t *testing.T) {
	t.Parallel()
	models := map[string]string{"JOB_DEADLINE": "8s", "LLM_NARRATIVE_MODEL": modelSlow}
	e := startStack(t, 1, models, models)
	id := submit(t, e, client.SubmitRequest{Question: "What if the narrative is slow?"})
	evs := collect(t, e, id)
	checkOrder(t, evs, 4)
	if got := terminalStatus(t, evs); got != "partial" {
		t.Fatalf("status %s, want partial: %v", got, names(evs))
	}
	v := jobView(t, e, id)
	if v.Narrative != "" || len(v.KeyChanges) == 0 {
		t.Fatalf("narrative %q, key changes %v: want the key changes and no narrative", v.Narrative, v.KeyChanges)
	}
	for _, s := range v.Snapshots {
		if s.Status != "completed" {
			t.Fatalf("snapshot %d is %s", s.Index, s.Status)
		}
	}
}
