package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// completeSnapshots records snapshots 0..n-1 of j as answered, as workers
// would.
func (hs *harness) completeSnapshots(j *job.Job, n int) {
	hs.t.Helper()
	ctx := context.Background()
	for i := range n {
		d := dateOf(j, i)
		owner := "w" + d
		if _, _, err := hs.store.StartMember(ctx, j.ID, i, owner, snapModel); err != nil {
			hs.t.Fatal(err)
		}
		if _, err := hs.store.FinishMember(ctx, j.ID, i, owner, store.MemberOutcome{Text: snapshotText(d)}); err != nil {
			hs.t.Fatal(err)
		}
	}
}

func aggregateTask(jobID string) *asynq.Task {
	p, _ := json.Marshal(tasks.AggregatePayload{JobID: jobID})
	return asynq.NewTask(tasks.TypeAggregate, p)
}

// An aggregation that runs again after its worker died reuses the part the
// dead attempt finished (no second key-changes call, no second event),
// announces itself, and its narrative replaces the dead attempt's text.
func TestAggregationRerunReusesFinishedParts(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{noServers: true})
	dates := []string{"2023-01-01", "2024-01-01"}
	j := hs.submit(dates, time.Minute)
	hs.completeSnapshots(j, 2)
	ctx := context.Background()
	// The dead attempt: key changes done, half a narrative streamed.
	if _, err := hs.store.BeginAggregate(ctx, j.ID, "dead"); err != nil {
		t.Fatal(err)
	}
	kc, _ := json.Marshal([]timetravel.KeyChange{{From: dates[0], To: dates[1], Changes: []string{"from the dead"}}})
	if err := hs.store.EmitPart(ctx, j.ID, "dead", job.Part{Name: timetravel.PartKeyChanges, Value: kc}, false); err != nil {
		t.Fatal(err)
	}
	if err := hs.store.AppendPartText(ctx, j.ID, "dead", timetravel.PartNarrative, 1, "half a narr"); err != nil {
		t.Fatal(err)
	}

	if err := hs.h.HandleAggregate(ctx, aggregateTask(j.ID)); err != nil {
		t.Fatal(err)
	}
	if n := hs.model.count(kindKeyChanges, ""); n != 0 {
		t.Fatalf("%d key-changes calls, want none: the dead attempt's are reused", n)
	}
	evs := hs.events(j.ID)
	types := typesOf(evs)
	for _, typ := range []string{timetravel.EventKeyChangesCompleted, timetravel.EventNarrativeCompleted, events.JobCompleted} {
		if len(ofType(evs, typ)) != 1 {
			t.Fatalf("events %v: want one %s", types, typ)
		}
	}
	var attempts []int
	narrative := ""
	for _, e := range evs {
		switch e.Type {
		case events.AggregateStarted:
			attempts = append(attempts, decode[events.AggregateStartedData](t, e).Attempt)
			narrative = ""
		case timetravel.EventNarrativeDelta:
			narrative += decode[events.DeltaData](t, e).Text
		}
	}
	if len(attempts) != 2 || attempts[1] != 2 {
		t.Fatalf("aggregate.started attempts %v, want [1 2]", attempts)
	}
	if narrative != narrativeText() {
		t.Fatalf("narrative after the restart %q, want %q", narrative, narrativeText())
	}
	got := hs.job(j.ID)
	if agg := aggOf(t, got); got.Status != job.StatusCompleted || agg == nil || len(agg.KeyChanges) != 1 ||
		agg.KeyChanges[0].Changes[0] != "from the dead" || agg.Narrative != narrativeText() {
		t.Fatalf("ended job %+v aggregate %+v", got, agg)
	}
}

// A job whose aggregation's worker died and whose deadline passed is ended
// by the deadline watchdog, partial, with what it has; every snapshot has a
// terminal status.
func TestWatchdogEndsAnOrphanedJob(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{noServers: true})
	dates := []string{"2023-01-01", "2024-01-01", "2025-01-01"}
	j := newJob(t, dates, time.Minute)
	j.Deadline = time.Now().Add(-time.Millisecond) // overdue from the start
	hs.submitJob(j)
	hs.completeSnapshots(j, 2)
	ctx := context.Background()
	if _, err := hs.store.BeginAggregate(ctx, j.ID, "dead"); err != nil {
		t.Fatal(err)
	}
	kc, _ := json.Marshal([]timetravel.KeyChange{{From: dates[0], To: dates[1], Changes: []string{"c"}}})
	if err := hs.store.EmitPart(ctx, j.ID, "dead", job.Part{Name: timetravel.PartKeyChanges, Value: kc}, false); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go hs.h.WatchDeadlines(wctx, "watchdog")
	evs := hs.follow(j.ID, time.Minute)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusPartial)
	if agg := aggOf(t, got); agg == nil || len(agg.KeyChanges) != 1 || agg.NarrativeError == "" {
		t.Fatalf("aggregate %+v: want the key changes and the narrative unfinished", agg)
	}
	for _, s := range got.Members {
		if !s.Status.Terminal() {
			t.Fatalf("snapshot %d is %s after the job ended", s.Index, s.Status)
		}
	}
	if got.Members[2].Status != job.MemberExpired {
		t.Fatalf("unfinished snapshot is %s, want expired", got.Members[2].Status)
	}
	if n := len(ofType(evs, events.JobCompleted)); n != 1 {
		t.Fatalf("%d job.completed", n)
	}
}

// At the deadline, a running aggregation's calls are cancelled and the job
// ends partial with what it has: the key changes, no narrative.
func TestDeadlineCutsTheAggregation(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{noServers: true, script: func(c call) *answer {
		if c.Kind == kindNarrative {
			return &answer{Block: true}
		}
		return nil
	}})
	dates := []string{"2023-01-01", "2024-01-01"}
	j := hs.submit(dates, 2*time.Second)
	hs.completeSnapshots(j, 2)
	done := make(chan error, 1)
	go func() { done <- hs.h.HandleAggregate(context.Background(), aggregateTask(j.ID)) }()
	hs.model.waitBlocked(t, 1, time.Minute)
	r := hs.model.waitReleased(t, 1, time.Minute)[0]
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.Call.Kind != kindNarrative {
		t.Fatalf("released %+v", r)
	}
	got := hs.job(j.ID)
	if agg := aggOf(t, got); got.Status != job.StatusPartial || agg == nil || len(agg.KeyChanges) != 1 || agg.Narrative != "" {
		t.Fatalf("job %s aggregate %+v: want partial with key changes and no narrative", got.Status, agg)
	}
	if len(ofType(hs.events(j.ID), events.JobCompleted)) != 1 {
		t.Fatal("not exactly one job.completed")
	}
}

// The api queues a job's tasks before it writes the job (so that a crash
// between the two cannot leave a job without its tasks): a snapshot task
// that runs first goes back to its queue, having called no model, and
// answers once the job is there.
func TestSnapshotBeforeItsJobWaitsForIt(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{noServers: true})
	j := newJob(t, []string{"2023-01-01"}, time.Minute)
	ctx := context.Background()
	task := hs.memberTask(j, 0)
	if p := hs.memberPayload(j, 0); p.DeadlineMS != j.Deadline.UnixMilli() {
		t.Fatalf("member payload %+v without the job's deadline", p)
	}
	if err := hs.enq.EnqueueAggregate(ctx, j); err != nil {
		t.Fatal(err)
	}
	err := hs.h.HandleMember(ctx, task)
	if err == nil || !strings.Contains(err.Error(), "job not written yet") {
		t.Fatalf("snapshot before its job: %v, want it handed back", err)
	}
	if n := len(hs.model.Calls()); n != 0 {
		t.Fatalf("%d model calls before the job exists", n)
	}
	if _, err := hs.store.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := hs.h.HandleMember(ctx, task); err != nil {
		t.Fatalf("snapshot once its job exists: %v", err)
	}
	if s := hs.job(j.ID).Members[0]; s.Status != job.MemberCompleted {
		t.Fatalf("snapshot %+v, want completed", s)
	}
}
