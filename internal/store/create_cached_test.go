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
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// streamEntry is one entry of a job's stream, read with XRANGE.
type streamEntry struct {
	typ  string
	data map[string]any
}

func readStream(t *testing.T, b bundle) []streamEntry {
	t.Helper()
	msgs, err := b.db.Client.XRange(context.Background(), events.StreamKey(b.job.ID), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]streamEntry, len(msgs))
	for i, m := range msgs {
		typ, _ := m.Values["t"].(string)
		raw, _ := m.Values["d"].(string)
		var d map[string]any
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			t.Fatalf("entry %d (%s): data %q: %v", i, typ, raw, err)
		}
		out[i] = streamEntry{typ: typ, data: d}
	}
	return out
}

// readEvents returns the job's events as Store.Events gives them.
func readEvents(t *testing.T, b bundle) []streamEntry {
	t.Helper()
	evs, err := b.store.Events(context.Background(), b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]streamEntry, len(evs))
	for i, e := range evs {
		var d map[string]any
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatalf("event %d (%s): data %q: %v", i, e.Type, e.Data, err)
		}
		out[i] = streamEntry{typ: e.Type, data: d}
	}
	return out
}

func entryTypes(es []streamEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.typ
	}
	return out
}

// cachedJob returns a job of n time points whose snapshots at the indexes
// in cached come answered from the cache.
func cachedJob(n int, cached ...int) *job.Job {
	members := make([]job.Member, n)
	for i := range n {
		members[i] = dated(i, time.Date(2023, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC))
	}
	j := timeTravel("0190aaaa-0000-7000-8000-0000000000c1", "q?", members)
	j.Spec.Cache = job.CacheUse
	for _, i := range cached {
		s := &j.Members[i]
		s.Status, s.Cached, s.Model = job.MemberCompleted, true, "cache-model"
		s.Text = "answer " + s.Label
		s.StartedAt, s.CompletedAt = j.CreatedAt.UnixMilli(), j.CreatedAt.UnixMilli()
	}
	return j
}

func create(t *testing.T, j *job.Job) bundle {
	t.Helper()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	if _, err := st.Create(context.Background(), j); err != nil {
		t.Fatalf("create: %v", err)
	}
	return bundle{db: db, store: st, job: j}
}

// checkCachedSnapshotEvents checks that es, from its start, holds the three
// events of each of the cached snapshots of j, in index order, and returns
// the rest.
func checkCachedSnapshotEvents(t *testing.T, j *job.Job, es []streamEntry) []streamEntry {
	t.Helper()
	for _, s := range j.Members {
		if !s.Cached {
			continue
		}
		if len(es) < 3 {
			t.Fatalf("snapshot %d: %d events left, want its three", s.Index, len(es))
		}
		if got := entryTypes(es[:3]); !slices.Equal(got, []string{snapshotStarted, snapshotDelta, snapshotCompleted}) {
			t.Fatalf("snapshot %d: events %v", s.Index, got)
		}
		idx := float64(s.Index)
		started, delta, completed := es[0].data, es[1].data, es[2].data
		if started["index"] != idx || started["cached"] != true || started["date"] != s.Ref["date"] || started["attempt"] != 0.0 || started["label"] != s.Label {
			t.Errorf("snapshot %d: snapshot.started %v", s.Index, started)
		}
		if delta["index"] != idx || delta["text"] != s.Text {
			t.Errorf("snapshot %d: snapshot.delta %v, want the whole text %q", s.Index, delta, s.Text)
		}
		if completed["index"] != idx || completed["cached"] != true || completed["text"] != s.Text || completed["model"] != s.Model ||
			completed["date"] != s.Ref["date"] || completed["label"] != s.Label || completed["duration_ms"] != 0.0 {
			t.Errorf("snapshot %d: snapshot.completed %v", s.Index, completed)
		}
		es = es[3:]
	}
	return es
}

func TestCreateWithCachedSnapshots(t *testing.T) {
	t.Parallel()
	j := cachedJob(4, 0, 2)
	b := create(t, j)
	ctx := context.Background()

	got, err := b.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != job.StatusQueued || len(got.Members) != 4 {
		t.Fatalf("job %+v", got)
	}
	for i, s := range got.Members {
		want := j.Members[i]
		if s.Status != want.Status || s.Cached != want.Cached || s.Text != want.Text || s.Model != want.Model || s.Index != i {
			t.Errorf("snapshot %d stored as %+v, want %+v", i, s, want)
		}
	}
	if got.Cached() || got.View().Cached {
		t.Error("a job with snapshots still to answer reads as cached")
	}
	if v := b.db.Client.HGet(ctx, store.JobKey(j.ID), "done").Val(); v != "2" {
		t.Errorf("done = %s, want 2", v)
	}

	es := readStream(t, b)
	if len(es) == 0 || es[0].typ != events.JobAccepted {
		t.Fatalf("events %v, want job.accepted first", entryTypes(es))
	}
	if _, ok := es[0].data["cached"]; ok {
		t.Errorf("job.accepted %v says cached for a job not wholly cached", es[0].data)
	}
	if rest := checkCachedSnapshotEvents(t, j, es[1:]); len(rest) != 0 {
		t.Errorf("events after the cached snapshots: %v", entryTypes(rest))
	}
	// The job has not ended: it lives until its deadline plus the retention.
	if ttl := b.db.Client.PTTL(ctx, store.JobKey(j.ID)).Val(); ttl <= time.Hour || ttl > time.Hour+time.Minute {
		t.Errorf("job TTL %s, want deadline + retention", ttl)
	}

	// The pending snapshots are the workers'; the cached ones are done.
	if _, fan, err := b.store.StartMember(ctx, j.ID, 0, "w", "m"); !errors.Is(err, store.ErrMemberDone) || fan.Done != 2 || fan.Total != 4 {
		t.Errorf("start of a cached snapshot: %+v, %v; want ErrMemberDone with 2 of 4 done", fan, err)
	}
	if _, _, err := b.store.StartMember(ctx, j.ID, 1, "w1", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.FinishMember(ctx, j.ID, 1, "w1", store.MemberOutcome{Text: "t1"}); err != nil {
		t.Fatal(err)
	}
	_, _, _ = b.store.StartMember(ctx, j.ID, 3, "w3", "m")
	fan, err := b.store.FinishMember(ctx, j.ID, 3, "w3", store.MemberOutcome{Text: "t3"})
	if err != nil || !fan.Last() || fan.Done != 4 {
		t.Errorf("last worker snapshot: %+v, %v; want the fan-in complete at 4", fan, err)
	}
}

func TestCreateWhollyCached(t *testing.T) {
	t.Parallel()
	j := cachedJob(3, 0, 1, 2)
	j.Status = job.StatusCompleted
	j.FinishedAt = j.CreatedAt.Add(5 * time.Millisecond)
	j.Result = &job.Result{
		Parts: []job.Part{
			{Name: "key_changes", Value: json.RawMessage(`[{"from":"2023-01-01","to":"2023-02-01","changes":["c"]}]`)},
			{Name: "narrative", Text: "It evolved."},
		},
		Cached: true,
	}
	b := create(t, j)
	ctx := context.Background()

	got, err := b.store.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != job.StatusCompleted || got.FinishedAt.UnixMilli() != j.FinishedAt.UnixMilli() {
		t.Errorf("status %s, finished %s; want completed at %s", got.Status, got.FinishedAt, j.FinishedAt)
	}
	if !got.Cached() || !got.View().Cached {
		t.Error("a wholly cached job does not read as cached")
	}
	var kcs []any
	if got.Result == nil || got.Result.Part("narrative") == nil || got.Result.Part("narrative").Text != "It evolved." ||
		got.Result.Part("key_changes") == nil || json.Unmarshal(got.Result.Part("key_changes").Value, &kcs) != nil || len(kcs) != 1 {
		t.Errorf("result %+v", got.Result)
	}
	if v := b.db.Client.HGet(ctx, store.JobKey(j.ID), "done").Val(); v != "3" {
		t.Errorf("done = %s, want 3", v)
	}

	es := readEvents(t, b)
	if len(es) == 0 || es[0].typ != events.JobAccepted || es[0].data["cached"] != true {
		t.Fatalf("first event %v, want job.accepted marked cached", es[:min(1, len(es))])
	}
	rest := checkCachedSnapshotEvents(t, j, es[1:])
	want := []string{keyChangesCompleted, narrativeDelta, narrativeCompleted, events.JobCompleted}
	if got := entryTypes(rest); !slices.Equal(got, want) {
		t.Fatalf("events after the snapshots %v, want %v", got, want)
	}
	if kc, ok := rest[0].data["key_changes"].([]any); !ok || len(kc) != 1 || rest[0].data["cached"] != true {
		t.Errorf("key_changes.completed %v", rest[0].data)
	}
	if rest[1].data["text"] != "It evolved." {
		t.Errorf("narrative.delta %v, want the whole narrative", rest[1].data)
	}
	if rest[2].data["text"] != "It evolved." || rest[2].data["cached"] != true {
		t.Errorf("narrative.completed %v", rest[2].data)
	}
	if d := rest[3].data; d["cached"] != true || d["status"] != string(job.StatusCompleted) || d["job_id"] != j.ID {
		t.Errorf("job.completed %v", d)
	}
	// Ended: kept for the retention, no longer; its events are made on
	// reading, from the result it shares, which outlives it.
	if ttl := b.db.Client.PTTL(ctx, store.JobKey(j.ID)).Val(); ttl > time.Hour || ttl < 59*time.Minute {
		t.Errorf("job TTL %s, want the retention", ttl)
	}
	if n := b.db.Client.Exists(ctx, events.StreamKey(j.ID)).Val(); n != 0 {
		t.Errorf("a job served from the caches has a stream")
	}
	ref := b.db.Client.HGet(ctx, store.JobKey(j.ID), "ref").Val()
	if ttl := b.db.Client.PTTL(ctx, store.ResultKey(ref)).Val(); ttl <= b.db.Client.PTTL(ctx, store.JobKey(j.ID)).Val() {
		t.Errorf("result %q TTL %s, want beyond the job's", ref, ttl)
	}
	// Nothing changes an ended job.
	if err := b.store.Finish(ctx, j.ID, job.StatusCanceled, "", nil); err == nil {
		t.Error("Finish of a job created ended succeeded")
	}
}

func TestFinishMemberCached(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	for i, cached := range []bool{true, false} {
		owner := string(rune('a' + i))
		if _, _, err := b.store.StartMember(ctx, b.job.ID, i, owner, "m"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.store.FinishMember(ctx, b.job.ID, i, owner, store.MemberOutcome{Text: "t", Model: "m", Cached: cached}); err != nil {
			t.Fatal(err)
		}
	}
	j, err := b.store.Get(ctx, b.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s := j.Members[0]; !s.Cached || s.Status != job.MemberCompleted || s.Text != "t" {
		t.Errorf("snapshot 0 %+v, want completed and cached", s)
	}
	if s := j.Members[1]; s.Cached || s.Status != job.MemberCompleted {
		t.Errorf("snapshot 1 %+v, want completed, not cached", s)
	}
	var completed []streamEntry
	for _, e := range readStream(t, b) {
		if e.typ == snapshotCompleted {
			completed = append(completed, e)
		}
	}
	if len(completed) != 2 {
		t.Fatalf("%d snapshot.completed events, want 2", len(completed))
	}
	for _, e := range completed {
		cached, has := e.data["cached"]
		switch e.data["index"] {
		case 0.0:
			if cached != true {
				t.Errorf("cached snapshot's snapshot.completed %v lacks \"cached\":true", e.data)
			}
		case 1.0:
			if has {
				t.Errorf("computed snapshot's snapshot.completed %v says cached", e.data)
			}
		default:
			t.Errorf("snapshot.completed of index %v", e.data["index"])
		}
	}
}
