package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// TestSummaries: a summary shows each job as Resolve does (its id, owner,
// kind, status, question, times and whether it was served from the
// caches), for every way a job is stored, in one call; gone jobs are nil.
func TestSummaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	create := func(j *job.Job) *job.Job {
		t.Helper()
		if _, err := st.Create(ctx, j); err != nil {
			t.Fatalf("create %s: %v", j.ID, err)
		}
		return j
	}
	owned := func(j *job.Job, owner string) *job.Job { j.Spec.Owner = owner; return j }

	queued := create(owned(timeTravel(jobID(1), "Queued?", []job.Member{dated(0, time.Now())}), "alice"))
	failed := create(owned(timeTravel(jobID(2), "Failed?", []job.Member{dated(0, time.Now())}), "alice"))
	if err := st.Finish(ctx, failed.ID, job.StatusFailed, "it broke", nil); err != nil {
		t.Fatal(err)
	}
	served := create(owned(servedJob(jobID(3), "Served by reference?", "a", "b"), "alice"))
	fullCopy := owned(servedJob(jobID(4), "Served in full?", "a", "b"), "alice")
	if _, err := store.CreateFullCopy(ctx, st, fullCopy); err != nil {
		t.Fatal(err)
	}
	partlyCached := owned(cachedJob(3, 0, 2), "alice")
	partlyCached.ID = jobID(5)
	create(partlyCached)
	warm := timeTravel(jobID(6), "Warm?", []job.Member{dated(0, time.Now())})
	warm.Spec.Warm, warm.Spec.Owner = true, job.SystemOwner
	create(warm)
	work := create(owned(timeTravel(jobID(7), "Shared?", []job.Member{dated(0, time.Now())}), "alice"))
	h1 := handleOf(t, st, work, jobID(8), "bob")
	h2 := handleOf(t, st, work, jobID(9), "carol")
	if last, err := st.Detach(ctx, work.ID, h2.ID); err != nil || last {
		t.Fatalf("detach: %v %v", last, err)
	}
	orphanWork := create(owned(timeTravel(jobID(10), "Orphan?", []job.Member{dated(0, time.Now())}), "alice"))
	orphan := handleOf(t, st, orphanWork, jobID(11), "bob")
	if err := db.Client.Del(ctx, store.JobKey(orphanWork.ID)).Err(); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name   string
		id     string
		gone   bool
		cached bool
		warm   bool
	}{
		{name: "queued", id: queued.ID},
		{name: "ended", id: failed.ID},
		{name: "served by reference", id: served.ID, cached: true},
		{name: "served in full", id: fullCopy.ID, cached: true},
		{name: "partly cached", id: partlyCached.ID},
		{name: "warming", id: warm.ID, warm: true},
		{name: "shared work", id: work.ID},
		{name: "handle", id: h1.ID},
		{name: "detached handle", id: h2.ID},
		{name: "never stored", id: jobID(99), gone: true},
		{name: "handle whose work is gone", id: orphan.ID, gone: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Scripts unknown to the server (a restarted Redis) are loaded.
			if err := db.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			sums, err := st.Summaries(ctx, []string{queued.ID, tt.id})
			if err != nil {
				t.Fatal(err)
			}
			if len(sums) != 2 || sums[0] == nil || sums[0].ID != queued.ID {
				t.Fatalf("summaries %v: want the queued job first", sums)
			}
			s := sums[1]
			if tt.gone {
				if s != nil {
					t.Fatalf("%+v, want nil", s)
				}
				return
			}
			j, err := st.Resolve(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			want := store.Summary{
				ID: j.ID, Owner: j.Spec.Owner, Kind: j.Spec.Kind, Status: j.Status, Question: j.Spec.Question,
				CreatedAt: j.CreatedAt, FinishedAt: j.FinishedAt, Cached: j.Cached(), Warm: j.Spec.Warm,
			}
			if s == nil || !s.CreatedAt.Equal(want.CreatedAt) || !s.FinishedAt.Equal(want.FinishedAt) {
				t.Fatalf("summary %+v, want %+v", s, want)
			}
			s.CreatedAt, s.FinishedAt = want.CreatedAt, want.FinishedAt
			if *s != want {
				t.Fatalf("summary %+v, want %+v", *s, want)
			}
			if s.Cached != tt.cached || s.Warm != tt.warm || s.Question == "" {
				t.Fatalf("summary %+v: cached %v, warm %v wanted", *s, tt.cached, tt.warm)
			}
		})
	}
}

func handleOf(t *testing.T, st *store.Store, work *job.Job, id, owner string) *job.Job {
	t.Helper()
	spec := work.Spec
	spec.Owner = owner
	h := &job.Job{ID: id, Spec: spec, CreatedAt: time.UnixMilli(time.Now().UnixMilli()), Deadline: work.Deadline}
	if err := st.CreateHandle(context.Background(), h, work.ID); err != nil {
		t.Fatal(err)
	}
	return h
}
