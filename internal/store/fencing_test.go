package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// A write repeated after a lost reply (the patient store retries) must
// count once: starting again, the same delta, the same part.
func TestRepeatedWritesCountOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	for range 2 {
		if a, _, err := b.store.StartSnapshot(ctx, b.job.ID, 0, "w1", "m"); err != nil || a != 1 {
			t.Fatalf("start: attempt %d, %v", a, err)
		}
	}
	for range 2 {
		if err := b.store.AppendSnapshotText(ctx, b.job.ID, 0, "w1", 1, "hello "); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.AppendSnapshotText(ctx, b.job.ID, 0, "w1", 2, "world"); err != nil {
		t.Fatal(err)
	}
	fan, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "w1", store.SnapshotOutcome{Text: "hello world"})
	if err != nil || !fan.Last() {
		t.Fatalf("finish: %+v %v", fan, err)
	}
	// Again: recorded already, and the caller learns it was the last.
	if fan, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "w1", store.SnapshotOutcome{Text: "hello world"}); !errors.Is(err, store.ErrSnapshotDone) || !fan.Last() {
		t.Fatalf("finish again: %+v %v, want ErrSnapshotDone and the last", fan, err)
	}
	want := []string{events.JobAccepted, events.SnapshotStarted, events.SnapshotDelta, events.SnapshotDelta, events.SnapshotCompleted}
	if got := b.types(t); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// An aggregation re-run announces itself with its attempt, each part's
// terminal event appears once whatever the attempts, and the part's record
// reaches the next attempt. A late write of the attempt given up for dead
// is refused, its end too.
func TestAggregationRestartIsAnnouncedAndPartsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	a1, err := b.store.BeginAggregate(ctx, b.job.ID, "agg1")
	if err != nil || a1.Attempt != 1 {
		t.Fatalf("begin 1: %+v %v", a1, err)
	}
	if again, err := b.store.BeginAggregate(ctx, b.job.ID, "agg1"); err != nil || again.Attempt != 1 {
		t.Fatalf("begin 1 again: %+v %v", again, err)
	}
	if err := b.store.EmitAggregatePart(ctx, b.job.ID, "agg1", "key_changes", events.KeyChangesCompleted, events.KeyChangesData{}, []byte(`{"k":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendNarrativeText(ctx, b.job.ID, "agg1", 1, "dead "); err != nil {
		t.Fatal(err)
	}
	a2, err := b.store.BeginAggregate(ctx, b.job.ID, "agg2")
	if err != nil || a2.Attempt != 2 || string(a2.Parts["key_changes"]) != `{"k":1}` || a2.Parts["narrative"] != nil {
		t.Fatalf("begin 2: %+v %v", a2, err)
	}
	// The dead attempt's late writes.
	if err := b.store.AppendNarrativeText(ctx, b.job.ID, "agg1", 2, "late"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("late delta: %v, want ErrStale", err)
	}
	if err := b.store.FinishAggregate(ctx, b.job.ID, "agg1", job.StatusCompleted, "", nil); !errors.Is(err, store.ErrStale) {
		t.Fatalf("late finish: %v, want ErrStale", err)
	}
	// The new attempt repeats the key changes: not appended again.
	if err := b.store.EmitAggregatePart(ctx, b.job.ID, "agg2", "key_changes", events.KeyChangesFailed, events.ErrorData{Error: "x"}, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendNarrativeText(ctx, b.job.ID, "agg2", 1, "alive"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.store.EmitAggregatePart(ctx, b.job.ID, "agg2", "narrative", events.NarrativeCompleted, events.NarrativeData{Text: "alive"}, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.FinishAggregate(ctx, b.job.ID, "agg2", job.StatusCompleted, "", &job.Aggregate{Narrative: "alive"}); err != nil {
		t.Fatal(err)
	}
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var attempts []int
	narrative := ""
	for _, e := range evs {
		types = append(types, e.Type)
		switch e.Type {
		case events.AggregateStarted:
			var d events.AggregateStartedData
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			attempts = append(attempts, d.Attempt)
			narrative = ""
		case events.NarrativeDelta:
			var d events.DeltaData
			_ = json.Unmarshal(e.Data, &d)
			narrative += d.Text
		}
	}
	if !slices.Equal(attempts, []int{1, 2}) {
		t.Fatalf("aggregate.started attempts %v, want [1 2]", attempts)
	}
	for _, typ := range []string{events.KeyChangesCompleted, events.NarrativeCompleted, events.JobCompleted} {
		if count(types, typ) != 1 {
			t.Fatalf("events %v: want one %s", types, typ)
		}
	}
	if count(types, events.KeyChangesFailed) != 0 {
		t.Fatalf("events %v: key changes ended twice", types)
	}
	if narrative != "alive" {
		t.Fatalf("narrative after the last restart %q, want %q", narrative, "alive")
	}
}

// A job that ends leaves no snapshot pending or running, and leaves the
// deadline watchdog's set.
func TestFinishEndsEverySnapshotAndForgetsDeadline(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status job.Status
		want   job.SnapshotStatus
	}{
		{job.StatusCanceled, job.SnapshotCanceled},
		{job.StatusPartial, job.SnapshotExpired},
	} {
		t.Run(string(tt.status), func(t *testing.T) {
			b := setup(t, 3)
			ctx := context.Background()
			overdue, err := b.store.Overdue(ctx, b.job.Deadline, 10)
			if err != nil || !slices.Contains(overdue, b.job.ID) {
				t.Fatalf("overdue at the deadline: %v %v, want the job", overdue, err)
			}
			if early, _ := b.store.Overdue(ctx, b.job.Deadline.Add(-time.Second), 10); slices.Contains(early, b.job.ID) {
				t.Fatal("overdue before its deadline")
			}
			_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "a", "m")
			_, _ = b.store.FinishSnapshot(ctx, b.job.ID, 0, "a", store.SnapshotOutcome{Text: "t"})
			_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 1, "b", "m")
			if err := b.store.Finish(ctx, b.job.ID, tt.status, "", nil); err != nil {
				t.Fatal(err)
			}
			j, _ := b.store.Get(ctx, b.job.ID)
			got := []job.SnapshotStatus{j.Snapshots[0].Status, j.Snapshots[1].Status, j.Snapshots[2].Status}
			if want := []job.SnapshotStatus{job.SnapshotCompleted, tt.want, tt.want}; !slices.Equal(got, want) {
				t.Fatalf("snapshots %v, want %v", got, want)
			}
			if overdue, _ := b.store.Overdue(ctx, b.job.Deadline.Add(time.Hour), 10); slices.Contains(overdue, b.job.ID) {
				t.Fatal("an ended job is still watched")
			}
		})
	}
}
