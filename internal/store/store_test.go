package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

type bundle struct {
	db    redistest.DB
	store *store.Store
	job   *job.Job
}

// The tests build jobs the way the time-travel kind makes them (the store
// knows no kind): members named "snapshot" with a date beside their index
// and label, the kind's job.accepted fields (complexity, time points), and
// a result of a structured part "key_changes" and a streamed part
// "narrative".
var (
	snapshotStarted     = events.MemberEvent("snapshot", events.VerbStarted)
	snapshotDelta       = events.MemberEvent("snapshot", events.VerbDelta)
	snapshotCompleted   = events.MemberEvent("snapshot", events.VerbCompleted)
	snapshotFailed      = events.MemberEvent("snapshot", events.VerbFailed)
	keyChangesCompleted = events.PartEvent("key_changes", events.VerbCompleted)
	keyChangesFailed    = events.PartEvent("key_changes", events.VerbFailed)
	narrativeDelta      = events.PartEvent("narrative", events.VerbDelta)
	narrativeCompleted  = events.PartEvent("narrative", events.VerbCompleted)
)

// dated returns the pending member i of a time-travel job, at date d.
func dated(i int, d time.Time) job.Member {
	return job.Member{Index: i, Label: d.Format("January 2006"), Ref: map[string]string{"date": d.Format("2006-01-02")}, Status: job.MemberPending}
}

// timeTravel returns a queued time-travel job of the given members: its
// spec (with the kind's params), noun and job.accepted fields.
func timeTravel(id, question string, members []job.Member) *job.Job {
	now := time.Now()
	j := &job.Job{ID: id, Status: job.StatusQueued, CreatedAt: now, Deadline: now.Add(time.Minute), Noun: "snapshot", Members: members}
	type timePoint struct {
		Date  string `json:"date"`
		Label string `json:"label"`
	}
	type timePointRef struct {
		Index int    `json:"index"`
		Date  string `json:"date"`
		Label string `json:"label"`
	}
	var params struct {
		TimePoints []timePoint `json:"time_points"`
		Complexity string      `json:"complexity"`
	}
	var accepted struct {
		Complexity string         `json:"complexity"`
		TimePoints []timePointRef `json:"time_points"`
	}
	params.Complexity, accepted.Complexity = "standard", "standard"
	for i, m := range members {
		params.TimePoints = append(params.TimePoints, timePoint{Date: m.Ref["date"], Label: m.Label})
		accepted.TimePoints = append(accepted.TimePoints, timePointRef{Index: i, Date: m.Ref["date"], Label: m.Label})
	}
	j.Spec = job.Spec{Kind: "timetravel", Question: question, Params: mustJSON(params)}
	j.Accepted = mustJSON(accepted)
	return j
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// setup returns a store on a database of its own with one created job of n
// snapshots.
func setup(t *testing.T, n int) bundle {
	t.Helper()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	members := make([]job.Member, n)
	for i := range n {
		members[i] = dated(i, time.Date(2023, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC))
	}
	j := timeTravel("0190aaaa-0000-7000-8000-000000000001", "q?", members)
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
	if got.Status != job.StatusQueued || len(got.Members) != 3 || got.Members[2].Label != "March 2023" || got.Members[1].Status != job.MemberPending {
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
	// What the store keeps for the kind reads back as it was given.
	if got.Noun != "snapshot" || got.Members[2].Ref["date"] != "2023-03-01" || got.Members[2].Index != 2 ||
		string(got.Accepted) != string(b.job.Accepted) || !reflect.DeepEqual(got.Spec, b.job.Spec) {
		t.Fatalf("job read back: noun %q, member %+v, accepted %s, spec %+v", got.Noun, got.Members[2], got.Accepted, got.Spec)
	}
	// job.accepted: the common fields and the kind's.
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	var acc map[string]any
	if err := json.Unmarshal(evs[0].Data, &acc); err != nil {
		t.Fatal(err)
	}
	tps, _ := acc["time_points"].([]any)
	if acc["job_id"] != b.job.ID || acc["kind"] != "timetravel" || acc["question"] != "q?" || acc["complexity"] != "standard" ||
		acc["deadline"] != b.job.Deadline.UTC().Format(time.RFC3339Nano) || len(tps) != 3 {
		t.Fatalf("job.accepted %s", evs[0].Data)
	}
	if tp, _ := tps[1].(map[string]any); tp["index"] != 1.0 || tp["date"] != "2023-02-01" || tp["label"] != "February 2023" {
		t.Fatalf("job.accepted time point %v", tps[1])
	}
	if _, ok := acc["cached"]; ok {
		t.Fatalf("job.accepted %s says cached", evs[0].Data)
	}
}

// Member events are named by the job's noun and carry the member's
// identity (index, label and its kind's fields): started with the attempt,
// delta with the index, completed with model, text and duration, failed
// with the error.
func TestMemberEventPayloads(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	clock := time.UnixMilli(time.Now().UnixMilli())
	store.SetNow(b.store, func() time.Time { return clock })
	if _, _, err := b.store.StartMember(ctx, b.job.ID, 0, "w", "m1"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendMemberText(ctx, b.job.ID, 0, "w", 1, "hi"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(1500 * time.Millisecond)
	if _, err := b.store.FinishMember(ctx, b.job.ID, 0, "w", store.MemberOutcome{Text: "hi", Model: "m2"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.store.StartMember(ctx, b.job.ID, 1, "v", "m1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.FinishMember(ctx, b.job.ID, 1, "v", store.MemberOutcome{Err: errors.New("400 bad")}); err != nil {
		t.Fatal(err)
	}
	es := readStream(t, b)
	want := []string{events.JobAccepted, snapshotStarted, snapshotDelta, snapshotCompleted, snapshotStarted, snapshotFailed}
	if got := entryTypes(es); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	checks := []map[string]any{
		{"index": 0.0, "date": "2023-01-01", "label": "January 2023", "attempt": 1.0},
		{"index": 0.0, "text": "hi"},
		{"index": 0.0, "date": "2023-01-01", "label": "January 2023", "model": "m2", "text": "hi", "duration_ms": 1500.0},
		{"index": 1.0, "date": "2023-02-01", "label": "February 2023", "attempt": 1.0},
		{"index": 1.0, "date": "2023-02-01", "label": "February 2023", "error": "400 bad"},
	}
	for i, w := range checks {
		if got := es[i+1].data; !reflect.DeepEqual(got, w) {
			t.Errorf("%s: %v, want %v", es[i+1].typ, got, w)
		}
	}
}

// The store knows no kind: another noun names the member events, and a
// member with no fields of its kind's is named by index and label alone.
func TestMemberEventsOfAnotherNoun(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	ctx := context.Background()
	now := time.Now()
	j := &job.Job{
		ID: "0190aaaa-0000-7000-8000-0000000000e1", Status: job.StatusQueued, CreatedAt: now, Deadline: now.Add(time.Minute),
		Noun: "answer", Spec: job.Spec{Kind: "ensemble", Question: "q?"},
		Members: []job.Member{{Index: 0, Label: "gpt-x", Status: job.MemberPending}, {Index: 1, Label: "claude-y", Status: job.MemberPending}},
	}
	if _, err := st.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	b := bundle{db: db, store: st, job: j}
	_, _, _ = st.StartMember(ctx, j.ID, 1, "w", "claude-y")
	if err := st.AppendMemberText(ctx, j.ID, 1, "w", 1, "yes"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FinishMember(ctx, j.ID, 1, "w", store.MemberOutcome{Text: "yes", Cached: true}); err != nil {
		t.Fatal(err)
	}
	es := readStream(t, b)
	want := []string{events.JobAccepted, "answer.started", "answer.delta", "answer.completed"}
	if got := entryTypes(es); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if d := es[0].data; d["kind"] != "ensemble" || len(d) != 4 {
		t.Errorf("job.accepted %v, want the common fields alone", d)
	}
	if d := es[1].data; !reflect.DeepEqual(d, map[string]any{"index": 1.0, "label": "claude-y", "attempt": 1.0}) {
		t.Errorf("answer.started %v", d)
	}
	if d := es[3].data; d["label"] != "claude-y" || d["text"] != "yes" || d["cached"] != true || d["model"] != "claude-y" {
		t.Errorf("answer.completed %v", d)
	}
	got, err := st.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Noun != "answer" || got.Accepted != nil || got.Members[1].Ref != nil || got.Members[1].Text != "yes" || !got.Members[1].Cached {
		t.Errorf("job read back: %+v", got)
	}
}

// A job stored before jobs had kinds (no noun, members stored as
// job.Member's JSON) reads as a time-travel job, and its member events
// are snapshot events with the member's fields.
func TestJobStoredBeforeKinds(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	key := store.JobKey(b.job.ID)
	b.db.Client.HDel(ctx, key, "noun", "acc")
	for i, m := range b.job.Members {
		old := fmt.Sprintf(`{"index":%d,"date":%q,"label":%q,"status":"pending","attempts":0}`, i, m.Ref["date"], m.Label)
		b.db.Client.HSet(ctx, key, "s:"+strconv.Itoa(i), old)
	}
	got, err := b.store.Get(ctx, b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Noun != "snapshot" || !reflect.DeepEqual(got.Members, b.job.Members) {
		t.Fatalf("job read back: noun %q, members %+v", got.Noun, got.Members)
	}
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 1, "w", "m")
	if _, err := b.store.FinishMember(ctx, b.job.ID, 1, "w", store.MemberOutcome{Text: "t"}); err != nil {
		t.Fatal(err)
	}
	es := readStream(t, b)
	if got := entryTypes(es); !slices.Equal(got, []string{events.JobAccepted, snapshotStarted, snapshotCompleted}) {
		t.Fatalf("events %v", got)
	}
	if d := es[1].data; !reflect.DeepEqual(d, map[string]any{"index": 1.0, "date": "2023-02-01", "label": "February 2023", "attempt": 1.0}) {
		t.Errorf("snapshot.started %v", d)
	}
	if d := es[2].data; d["date"] != "2023-02-01" || d["text"] != "t" || d["status"] != nil || d["attempts"] != nil {
		t.Errorf("snapshot.completed %v", d)
	}
	got, _ = b.store.Get(ctx, b.job.ID)
	if m := got.Members[1]; m.Status != job.MemberCompleted || m.Text != "t" || m.Ref["date"] != "2023-02-01" || m.Attempts != 1 {
		t.Errorf("member %+v", m)
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
				if _, _, err := b.store.StartMember(ctx, b.job.ID, i, owner, "m"); err != nil && !errors.Is(err, store.ErrMemberDone) {
					t.Errorf("start %d/%d: %v", i, d, err)
					return
				}
				fan, err := b.store.FinishMember(ctx, b.job.ID, i, owner, store.MemberOutcome{Text: "t"})
				switch {
				case err == nil:
					if fan.Last() {
						mu.Lock()
						lasts++
						mu.Unlock()
					}
				case errors.Is(err, store.ErrStale), errors.Is(err, store.ErrMemberDone):
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
	for _, s := range j.Members {
		if s.Status != job.MemberCompleted {
			t.Fatalf("snapshot %d is %s", s.Index, s.Status)
		}
	}
	if got := count(b.types(t), snapshotCompleted); got != 4 {
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
	if a, _, err := b.store.StartMember(ctx, b.job.ID, 0, "old", "m"); err != nil || a != 1 {
		t.Fatalf("start old: attempt %d, %v", a, err)
	}
	if err := b.store.AppendMemberText(ctx, b.job.ID, 0, "old", 1, "hello "); err != nil {
		t.Fatal(err)
	}
	if a, _, err := b.store.StartMember(ctx, b.job.ID, 0, "new", "m"); err != nil || a != 2 {
		t.Fatalf("start new: attempt %d, %v", a, err)
	}
	if err := b.store.AppendMemberText(ctx, b.job.ID, 0, "old", 2, "late"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old append: %v, want ErrStale", err)
	}
	if _, err := b.store.FinishMember(ctx, b.job.ID, 0, "old", store.MemberOutcome{Text: "old"}); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old finish: %v, want ErrStale", err)
	}
	fan, err := b.store.FinishMember(ctx, b.job.ID, 0, "new", store.MemberOutcome{Text: "new"})
	if err != nil || !fan.Last() {
		t.Fatalf("new finish: %+v, %v", fan, err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Members[0]; s.Text != "new" || s.Attempts != 2 {
		t.Fatalf("snapshot %+v", s)
	}
	// A delivery after the outcome is recorded learns the fan-in state.
	if _, fan, err := b.store.StartMember(ctx, b.job.ID, 0, "late", "m"); !errors.Is(err, store.ErrMemberDone) || !fan.Last() {
		t.Fatalf("late start: %+v, %v", fan, err)
	}
}

func TestRetryKeepsSnapshotOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "a", "m")
	fan, err := b.store.FinishMember(ctx, b.job.ID, 0, "a", store.MemberOutcome{Err: errors.New("503"), Retry: true})
	if err != nil || fan.Done != 0 {
		t.Fatalf("retry: %+v, %v", fan, err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Members[0]; s.Status != job.MemberPending || s.Error != "503" {
		t.Fatalf("after retry: %+v", s)
	}
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "b", "m")
	fan, err = b.store.FinishMember(ctx, b.job.ID, 0, "b", store.MemberOutcome{Err: errors.New("400 bad")})
	if err != nil || fan.Done != 1 || fan.Last() {
		t.Fatalf("fail: %+v, %v", fan, err)
	}
	j, _ = b.store.Get(ctx, b.job.ID)
	if s := j.Members[0]; s.Status != job.MemberFailed || s.Error != "400 bad" || s.Attempts != 2 {
		t.Fatalf("after failure: %+v", s)
	}
	if got := count(b.types(t), snapshotFailed); got != 1 {
		t.Fatalf("%d snapshot.failed events, want 1", got)
	}
}

func TestAggregationClosesSnapshotsAndFinishOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "a", "m")
	a, err := b.store.BeginAggregate(ctx, b.job.ID, "agg1")
	if err != nil || a.Job.Status != job.StatusAggregating || a.Attempt != 1 {
		t.Fatalf("begin: %+v %v", a, err)
	}
	// Snapshot work is refused from now on.
	if _, err := b.store.FinishMember(ctx, b.job.ID, 0, "a", store.MemberOutcome{Text: "x"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("finish after aggregation began: %v, want ErrClosed", err)
	}
	if _, _, err := b.store.StartMember(ctx, b.job.ID, 1, "b", "m"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("start after aggregation began: %v, want ErrClosed", err)
	}
	// A redelivered aggregation takes over the aggregation events.
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg2"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg1", "narrative", 1, "x"); !errors.Is(err, store.ErrStale) {
		t.Fatalf("old aggregation emit: %v, want ErrStale", err)
	}
	if err := b.store.AppendPartText(ctx, b.job.ID, "agg2", "narrative", 1, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Finish(ctx, b.job.ID, job.StatusPartial, "1 of 2 missing", &job.Result{Parts: []job.Part{{Name: "narrative", Text: "n"}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Finish(ctx, b.job.ID, job.StatusCanceled, "", nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("second finish: %v, want ErrClosed", err)
	}
	if _, err := b.store.BeginAggregate(ctx, b.job.ID, "agg3"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("aggregation after the end: %v, want ErrClosed", err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if j.Status != job.StatusPartial || j.Result.Part("narrative") == nil || j.Result.Part("narrative").Text != "n" || j.FinishedAt.IsZero() {
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
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "a", "sim-a")
	// The first delivery spent 3 requests and handed the work back.
	if _, err := b.store.FinishMember(ctx, b.job.ID, 0, "a", store.MemberOutcome{Err: errors.New("503"), Retry: true, Model: "sim-a", LLMAttempts: 3}); err != nil {
		t.Fatal(err)
	}
	// The second fell back to sim-b after one more request to sim-a.
	_, _, _ = b.store.StartMember(ctx, b.job.ID, 0, "b", "sim-a")
	if _, err := b.store.FinishMember(ctx, b.job.ID, 0, "b", store.MemberOutcome{Text: "t", Model: "sim-b", LLMAttempts: 2}); err != nil {
		t.Fatal(err)
	}
	j, _ := b.store.Get(ctx, b.job.ID)
	if s := j.Members[0]; s.Status != job.MemberCompleted || s.Model != "sim-b" || s.LLMAttempts != 5 || s.Attempts != 2 {
		t.Fatalf("snapshot %+v; want completed by sim-b after 5 requests in 2 attempts", s)
	}
	evs, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == snapshotCompleted && !strings.Contains(string(e.Data), `"model":"sim-b"`) {
			t.Errorf("snapshot.completed %s does not name the answering model", e.Data)
		}
	}
}
