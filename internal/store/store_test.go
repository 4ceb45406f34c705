package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/redistest"
	"github.com/timetravel-ai/timetravel/internal/store"
)

func TestMain(m *testing.M) { redistest.Main(m) }

type bundle struct {
	db    redistest.DB
	store *store.Store
	job   *job.Job
}

// setup returns a store on a database of its own with one created job of n
// snapshots.
func setup(t *testing.T, n int) bundle {
	t.Helper()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	now := time.Now()
	j := &job.Job{ID: "0190aaaa-0000-7000-8000-000000000001", Status: job.StatusQueued, CreatedAt: now, Deadline: now.Add(time.Minute)}
	j.Spec = job.Spec{Question: "q?", Complexity: job.ComplexityStandard}
	for i := range n {
		d := time.Date(2023, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC)
		j.Spec.TimePoints = append(j.Spec.TimePoints, job.TimePoint{Date: d.Format(job.DateLayout), Label: job.DefaultLabel(d)})
	}
	if _, err := st.Create(context.Background(), j); err != nil {
		t.Fatalf("create: %v", err)
	}
	return bundle{db: db, store: st, job: j}
}

func (b bundle) types(t *testing.T) []string {
	t.Helper()
	evs, err := events.Read(context.Background(), b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func count(types []string, name string) int {
	n := 0
	for _, t := range types {
		if t == name {
			n++
		}
	}
	return n
}

func TestCreateAndGet(t *testing.T) {
	t.Parallel()
	b := setup(t, 3)
	ctx := context.Background()
	got, err := b.store.Get(ctx, b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != job.StatusQueued || len(got.Snapshots) != 3 || got.Snapshots[2].Label != "March 2023" || got.Snapshots[1].Status != job.SnapshotPending {
		t.Fatalf("unexpected job %+v", got)
	}
	if _, err := b.store.Create(ctx, b.job); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	if _, err := b.store.Get(ctx, "0190aaaa-0000-7000-8000-00000000ffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown job: got %v, want ErrNotFound", err)
	}
	if ttl := b.db.Client.PTTL(ctx, store.JobKey(b.job.ID)).Val(); ttl <= time.Hour || ttl > time.Hour+time.Minute {
		t.Fatalf("job TTL %v, want deadline + retention", ttl)
	}
	if got := b.types(t); len(got) != 1 || got[0] != events.JobAccepted {
		t.Fatalf("events %v, want [job.accepted]", got)
	}
}

func TestFanInCountsEachSnapshotOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	ctx := context.Background()

	// Each snapshot is delivered twice, concurrently; both deliveries finish.
	var mu sync.Mutex
	lasts := 0
	var wg sync.WaitGroup
	for i := range 4 {
		for d := range 2 {
			wg.Go(func() {
				owner := string(rune('a'+i)) + string(rune('0'+d))
				if _, _, err := b.store.StartSnapshot(ctx, b.job.ID, i, owner, "m"); err != nil && !errors.Is(err, store.ErrSnapshotDone) {
					t.Errorf("start %d/%d: %v", i, d, err)
					return
				}
				fan, err := b.store.FinishSnapshot(ctx, b.job.ID, i, owner, store.SnapshotOutcome{Text: "t"})
				switch {
				case err == nil:
					if fan.Last() {
						mu.Lock()
						lasts++
						mu.Unlock()
					}
				case errors.Is(err, store.ErrStale), errors.Is(err, store.ErrSnapshotDone):
				default:
					t.Errorf("finish %d/%d: %v", i, d, err)
				}
			})
		}
	}
	wg.Wait()
	if lasts != 1 {
		t.Fatalf("%d deliveries saw themselves last, want exactly 1", lasts)
	}
	j, err := b.store.Get(ctx, b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range j.Snapshots {
		if s.Status != job.SnapshotCompleted {
			t.Fatalf("snapshot %d is %s", s.Index, s.Status)
		}
	}
	if got := count(b.types(t), events.SnapshotCompleted); got != 4 {
		t.Fatalf("%d snapshot.completed events, want 4", got)
	}
	if v := b.db.Client.HGet(ctx, store.JobKey(b.job.ID), "done").Val(); v != "4" {
		t.Fatalf("done = %s, want 4", v)
	}
}

func TestNewerAttemptSupersedesOlder(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	if a, _, err := b.store.StartSnapshot(ctx, b.job.ID, 0, "old", "m"); err != nil || a != 1 {
		t.Fatalf("start old: attempt %d, %v", a, err)
	}
	if err := b.store.AppendSnapshotText(ctx, b.job.ID, 0, "old", 1, "hello "); err != nil {
		t.Fatal(err)
	}
	if a, _, err := b.store.StartSnapshot(ctx, b.job.ID, 0, "new", "m"); err != nil || a != 2 {
		t.Fatalf("start new: attempt %d, %v", a, err)
	}
	if err := b.store.AppendSnapshotText(ctx, b.job.ID, 0, "old", 2, "late"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old append: %v, want ErrStale", err)
	}
	if _, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "old", store.SnapshotOutcome{Text: "old"}); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old finish: %v, want ErrStale", err)
	}
	fan, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "new", store.SnapshotOutcome{Text: "new"})
	if err != nil || !fan.Last() {
		t.Fatalf("new finish: %+v, %v", fan, err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Snapshots[0]; s.Text != "new" || s.Attempts != 2 {
		t.Fatalf("snapshot %+v", s)
	}
	// A delivery after the outcome is recorded learns the fan-in state.
	if _, fan, err := b.store.StartSnapshot(ctx, b.job.ID, 0, "late", "m"); !errors.Is(err, store.ErrSnapshotDone) || !fan.Last() {
		t.Fatalf("late start: %+v, %v", fan, err)
	}
}

func TestRetryKeepsSnapshotOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "a", "m")
	fan, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "a", store.SnapshotOutcome{Err: errors.New("503"), Retry: true})
	if err != nil || fan.Done != 0 {
		t.Fatalf("retry: %+v, %v", fan, err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Snapshots[0]; s.Status != job.SnapshotPending || s.Error != "503" {
		t.Fatalf("after retry: %+v", s)
	}
	_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "b", "m")
	fan, err = b.store.FinishSnapshot(ctx, b.job.ID, 0, "b", store.SnapshotOutcome{Err: errors.New("400 bad")})
	if err != nil || fan.Done != 1 || fan.Last() {
		t.Fatalf("fail: %+v, %v", fan, err)
	}
	j, _ = b.store.Get(ctx, b.job.ID)
	if s := j.Snapshots[0]; s.Status != job.SnapshotFailed || s.Error != "400 bad" || s.Attempts != 2 {
		t.Fatalf("after failure: %+v", s)
	}
	if got := count(b.types(t), events.SnapshotFailed); got != 1 {
		t.Fatalf("%d snapshot.failed events, want 1", got)
	}
}

func TestAggregationClosesSnapshotsAndFinishOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "a", "m")
	a, err := b.store.BeginAggregate(ctx, b.job.ID, "agg1")
	if err != nil || a.Job.Status != job.StatusAggregating || a.Attempt != 1 {
		t.Fatalf("begin: %+v %v", a, err)
	}
	// Snapshot work is refused from now on.
	if _, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "a", store.SnapshotOutcome{Text: "x"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("finish after aggregation began: %v, want ErrClosed", err)
	}
	if _, _, err := b.store.StartSnapshot(ctx, b.job.ID, 1, "b", "m"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("start after aggregation began: %v, want ErrClosed", err)
	}
	// A redelivered aggregation takes over the aggregation events.
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg2"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendNarrativeText(ctx, b.job.ID, "agg1", 1, "x"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old aggregation emit: %v, want ErrStale", err)
	}
	if err := b.store.AppendNarrativeText(ctx, b.job.ID, "agg2", 1, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Finish(ctx, b.job.ID, job.StatusPartial, "1 of 2 missing", &job.Aggregate{Narrative: "n"}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Finish(ctx, b.job.ID, job.StatusCanceled, "", nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("second finish: %v, want ErrClosed", err)
	}
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg3"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("aggregation after the end: %v, want ErrClosed", err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if j.Status != job.StatusPartial || j.Aggregate == nil || j.Aggregate.Narrative != "n" || j.FinishedAt.IsZero() {
		t.Fatalf("finished job %+v", j)
	}
	types := b.types(t)
	if count(types, events.JobCompleted) != 1 || types[len(types)-1] != events.JobCompleted {
		t.Fatalf("events %v: want exactly one job.completed, last", types)
	}
	if ttl := b.db.Client.PTTL(ctx, events.StreamKey(b.job.ID)).Val(); ttl > time.Hour || ttl < 59*time.Minute {
		t.Fatalf("stream TTL after finish %v, want the retention", ttl)
	}
}

func TestFinishRejectsNonTerminal(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if err := b.store.Finish(context.Background(), b.job.ID, job.StatusRunning, "", nil); err == nil {
		t.Fatal("Finish with a non-terminal status succeeded")
	}
}

func TestFinishRecordsAnsweringModelAndLLMAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "a", "sim-a")
	// The first delivery spent 3 requests and handed the work back.
	if _, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "a", store.SnapshotOutcome{Err: errors.New("503"), Retry: true, Model: "sim-a", LLMAttempts: 3}); err != nil {
		t.Fatal(err)
	}
	// The second fell back to sim-b after one more request to sim-a.
	_, _, _ = b.store.StartSnapshot(ctx, b.job.ID, 0, "b", "sim-a")
	if _, err := b.store.FinishSnapshot(ctx, b.job.ID, 0, "b", store.SnapshotOutcome{Text: "t", Model: "sim-b", LLMAttempts: 2}); err != nil {
		t.Fatal(err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Snapshots[0]; s.Status != job.SnapshotCompleted || s.Model != "sim-b" || s.LLMAttempts != 5 || s.Attempts != 2 {
		t.Fatalf("snapshot %+v; want completed by sim-b after 5 requests in 2 attempts", s)
	}
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == events.SnapshotCompleted && !strings.Contains(string(e.Data), `"model":"sim-b"`) {
			t.Errorf("snapshot.completed %s does not name the answering model", e.Data)
		}
	}
}
