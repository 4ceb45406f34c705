package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
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
		if a, _, err := b.store.StartMember(ctx, b.job.ID, 0, "w1", "m"); err != nil || a != 1 {
			t.Fatalf("start: attempt %d, %v", a, err)
		}
	}
	for range 2 {
		if err := b.store.AppendMemberText(ctx, b.job.ID, 0, "w1", 1, "hello "); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.AppendMemberText(ctx, b.job.ID, 0, "w1", 2, "world"); err != nil {
		t.Fatal(err)
	}
	fan, err := b.store.FinishMember(ctx, b.job.ID, 0, "w1", store.MemberOutcome{Text: "hello world"})
	if err != nil || !fan.Last() {
		t.Fatalf("finish: %+v %v", fan, err)
	}
	// Again: recorded already, and the caller learns it was the last.
	if fan, err := b.store.FinishMember(ctx, b.job.ID, 0, "w1", store.MemberOutcome{Text: "hello world"}); !errors.Is(err, store.ErrMemberDone) || !fan.Last() {
		t.Fatalf("finish again: %+v %v, want ErrMemberDone and the last", fan, err)
	}
	want := []string{events.JobAccepted, snapshotStarted, snapshotDelta, snapshotDelta, snapshotCompleted}
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
	kc := job.Part{Name: "key_changes", Value: json.RawMessage(`[{"from":"2023-01-01","to":"2023-02-01","changes":["c"]}]`), Model: "x1", LLMAttempts: 1, MS: 7}
	if err := b.store.EmitPart(ctx, b.job.ID, "agg1", kc, false); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg1", "narrative", 1, "dead "); err != nil {
		t.Fatal(err)
	}
	a2, err := b.store.BeginAggregate(ctx, b.job.ID, "agg2")
	if err != nil || a2.Attempt != 2 || a2.Parts["narrative"] != nil {
		t.Fatalf("begin 2: %+v %v", a2, err)
	}
	var rec job.Part
	if err := json.Unmarshal(a2.Parts["key_changes"], &rec); err != nil || !reflect.DeepEqual(rec, kc) {
		t.Fatalf("begin 2: key changes record %s (%v), want %+v", a2.Parts["key_changes"], err, kc)
	}
	// The dead attempt's late writes.
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg1", "narrative", 2, "late"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("late delta: %v, want ErrStale", err)
	}
	if err := b.store.FinishAggregate(ctx, b.job.ID, "agg1", job.StatusCompleted, "", nil); !errors.Is(err, store.ErrStale) {
		t.Fatalf("late finish: %v, want ErrStale", err)
	}
	// The new attempt repeats the key changes: not appended again.
	if err := b.store.EmitPart(ctx, b.job.ID, "agg2", job.Part{Name: "key_changes", Error: "x"}, false); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg2", "narrative", 1, "alive"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.store.EmitPart(ctx, b.job.ID, "agg2", job.Part{Name: "narrative", Text: "alive"}, false); err != nil {
			t.Fatal(err)
		}
	}
	res := &job.Result{Parts: []job.Part{kc, {Name: "narrative", Text: "alive"}}}
	if err := b.store.FinishAggregate(ctx, b.job.ID, "agg2", job.StatusCompleted, "", res); err != nil {
		t.Fatal(err)
	}
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var attempts []int
	narrative := ""
	var kcData, narrData map[string]any
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
		case narrativeDelta:
			var d events.DeltaData
			_ = json.Unmarshal(e.Data, &d)
			narrative += d.Text
		case keyChangesCompleted:
			_ = json.Unmarshal(e.Data, &kcData)
		case narrativeCompleted:
			_ = json.Unmarshal(e.Data, &narrData)
		}
	}
	if !slices.Equal(attempts, []int{1, 2}) {
		t.Fatalf("aggregate.started attempts %v, want [1 2]", attempts)
	}
	for _, typ := range []string{keyChangesCompleted, narrativeCompleted, events.JobCompleted} {
		if count(types, typ) != 1 {
			t.Fatalf("events %v: want one %s", types, typ)
		}
	}
	if count(types, keyChangesFailed) != 0 {
		t.Fatalf("events %v: key changes ended twice", types)
	}
	if narrative != "alive" {
		t.Fatalf("narrative after the last restart %q, want %q", narrative, "alive")
	}
	// A structured part's event carries its value under its name; a
	// streamed part's its text; neither is marked cached.
	wantKC := map[string]any{"key_changes": []any{map[string]any{"from": "2023-01-01", "to": "2023-02-01", "changes": []any{"c"}}}}
	if !reflect.DeepEqual(kcData, wantKC) {
		t.Fatalf("key_changes.completed %v, want %v", kcData, wantKC)
	}
	if !reflect.DeepEqual(narrData, map[string]any{"text": "alive"}) {
		t.Fatalf("narrative.completed %v", narrData)
	}
	j, err := b.store.Get(ctx, b.job.ID)
	if err != nil || !reflect.DeepEqual(j.Result.Parts, res.Parts) || j.Result.StartedAt == 0 {
		t.Fatalf("result read back %+v (%v), want %+v started", j.Result, err, res)
	}
}

// A job that ends leaves no member pending or running, and leaves the
// deadline watchdog's set.
func TestFinishEndsEverySnapshotAndForgetsDeadline(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status job.Status
		want   job.MemberStatus
	}{
		{job.StatusCanceled, job.MemberCanceled},
		{job.StatusPartial, job.MemberExpired},
	} {
		t.Run(string(tt.status), func(t *testing.T) {
			b := setup(t, 3)
			ctx := context.Background()
			overdue, err := dueAt(ctx, b.store, b.job.Deadline)
			if err != nil || !slices.Contains(overdue, b.job.ID) {
				t.Fatalf("overdue at the deadline: %v %v, want the job", overdue, err)
			}
			if early, _ := dueAt(ctx, b.store, b.job.Deadline.Add(-time.Second)); slices.Contains(early, b.job.ID) {
				t.Fatal("overdue before its deadline")
			}
			_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "a", "m")
			_, _ = b.store.FinishMember(ctx, b.job.ID, 0, "a", store.MemberOutcome{Text: "t"})
			_, _, _ = b.store.StartMember(ctx, b.job.ID, 1, "b", "m")
			if err := b.store.Finish(ctx, b.job.ID, tt.status, "", nil); err != nil {
				t.Fatal(err)
			}
			j, _ := b.store.Get(ctx, b.job.ID)
			got := []job.MemberStatus{j.Members[0].Status, j.Members[1].Status, j.Members[2].Status}
			if want := []job.MemberStatus{job.MemberCompleted, tt.want, tt.want}; !slices.Equal(got, want) {
				t.Fatalf("snapshots %v, want %v", got, want)
			}
			if overdue, _ := dueAt(ctx, b.store, b.job.Deadline.Add(time.Hour)); slices.Contains(overdue, b.job.ID) {
				t.Fatal("an ended job is still watched")
			}
		})
	}
}

// Each streamed part numbers its own deltas: parts may stream at once, a
// repeated delta of a part counts once, and the next aggregation attempt
// numbers its deltas from 1 again.
func TestPartDeltasNumberedPerPart(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg1"); err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		owner, part string
		seq         int
		text        string
	}{
		{"agg1", "narrative", 1, "n1 "},
		{"agg1", "summary", 1, "s1 "},
		{"agg1", "narrative", 1, "n1 "}, // repeated after a lost reply
		{"agg1", "summary", 2, "s2 "},
		{"agg1", "narrative", 2, "n2 "},
		{"agg1", "summary", 2, "s2 "}, // repeated
	}
	for _, w := range writes {
		if err := b.store.AppendPartText(ctx, b.job.ID, w.owner, w.part, w.seq, w.text); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg2"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg2", "narrative", 1, "again"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range readStream(t, b) {
		switch e.typ {
		case narrativeDelta, "summary.delta":
			if len(e.data) != 1 {
				t.Errorf("%s %v: want {text}", e.typ, e.data)
			}
			got = append(got, e.typ+" "+e.data["text"].(string))
		case events.AggregateStarted:
			got = append(got, e.typ)
		}
	}
	want := []string{
		events.AggregateStarted, "narrative.delta n1 ", "summary.delta s1 ", "summary.delta s2 ", "narrative.delta n2 ",
		events.AggregateStarted, "narrative.delta again",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n %v\nwant %v", got, want)
	}
}

// dueAt returns the ids of the watched jobs whose deadline is at or before
// at, as the watchdog reads them.
func dueAt(ctx context.Context, st *store.Store, at time.Time) ([]string, error) {
	ds, err := st.EarliestDeadlines(ctx, 100)
	var ids []string
	for _, d := range ds {
		if !d.At.After(at) {
			ids = append(ids, d.JobID)
		}
	}
	return ids, err
}
