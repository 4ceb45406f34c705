package intake_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The configured models.
const (
	snapModel    = "snap-model"
	extractModel = "extract-model"
	narrModel    = "narr-model"
)

// llmConfig serves the extraction model at one provider and the others at
// the first, as the gateway routes them.
var llmConfig = config.LLM{
	Model: snapModel, ExtractionModel: extractModel, NarrativeModel: narrModel,
	Providers: []config.Provider{
		{Name: "main", BaseURL: "https://main.example/v1"},
		{Name: "fast", BaseURL: "https://fast.example/v1", Models: []string{extractModel}},
	},
}

// providers names the provider of each model as llmConfig routes it.
var providers = llmConfig.ProviderIdentity

// env is the intake's environment: the models at their providers.
var env = intake.EnvOf(llmConfig)

// tt is the time-travel kind.
var tt = timetravel.Kind{}

type fixture struct {
	db    redistest.DB
	in    *intake.Intake
	store *store.Store
	cache *cache.Cache
	insp  *asynq.Inspector
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	return newFixtureOf(t, kinds.Registry())
}

// newFixtureOf is newFixture serving the kinds of reg.
func newFixtureOf(t *testing.T, reg *jobkind.Registry) fixture {
	t.Helper()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	c := cache.New(db.Client, cache.TTLs{Past: time.Hour, Today: time.Minute})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	in := intake.New(intake.Options{
		Store: st, Enqueuer: tasks.NewEnqueuer(asynq.NewClientFromRedisClient(db.Client), 3, time.Minute),
		Inspector: insp, Cache: c, Inflight: cache.NewInflight(db.Client),
		Kinds: reg, Env: env, Deadline: time.Minute,
	})
	return fixture{db: db, in: in, store: st, cache: c, insp: insp}
}

// spec is a time-travel request with two past time points.
func spec(question string) job.Spec {
	return timetravel.Spec(question, timetravel.Params{
		Complexity: timetravel.ComplexityStandard,
		TimePoints: []timetravel.TimePoint{{Date: "2023-01-01", Label: "January 2023"}, {Date: "2024-05-01", Label: "May 2024"}},
	})
}

// cacheSnapshots caches the answers of the given time points of s, as
// the snapshot model at its provider in e answers them.
func (f fixture) cacheSnapshots(t *testing.T, s job.Spec, e jobkind.Env, indexes ...int) []job.Member {
	t.Helper()
	plan, err := tt.Plan(s, e)
	if err != nil {
		t.Fatal(err)
	}
	var snaps []job.Member
	for _, i := range indexes {
		m := plan[i]
		text := "answer as of " + m.Label
		if err := f.cache.PutMember(context.Background(), m.CacheKey, cache.Answer{Text: text, Model: snapModel}, m.Volatile); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberCompleted, Text: text})
	}
	return snaps
}

// cacheAggregate caches the result of s made from snaps by the
// aggregation models at their providers in e.
func (f fixture) cacheAggregate(t *testing.T, s job.Spec, e jobkind.Env, snaps []job.Member) {
	t.Helper()
	kc, _ := json.Marshal([]timetravel.KeyChange{{From: timetravel.DateOf(snaps[0]), To: timetravel.DateOf(snaps[1]), Changes: []string{"more models"}}})
	err := f.cache.PutResult(context.Background(), tt.ResultKey(s, e, snaps), job.Result{Parts: []job.Part{
		{Name: timetravel.PartKeyChanges, Value: kc, Model: extractModel},
		{Name: timetravel.PartNarrative, Text: "It changed.", Model: narrModel},
	}}, false)
	if err != nil {
		t.Fatal(err)
	}
}

// taskState returns the state of a task, or "none".
func (f fixture) taskState(queue, id string) string {
	info, err := f.insp.GetTaskInfo(queue, id)
	if err != nil {
		return "none"
	}
	return info.State.String()
}

func eventTypes(t *testing.T, f fixture, jobID string) []string {
	t.Helper()
	evs, err := f.store.Events(context.Background(), jobID, "")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func TestSubmit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		cached        []int // time points in the snapshot cache
		aggregate     bool  // the result of both is cached too
		bypass        bool
		wantCached    bool
		wantSnapshots int      // CachedSnapshots
		wantQueued    []string // snapshot task states by index
		wantAggregate string   // aggregate task state
		wantStatus    job.Status
	}{
		{"nothing cached", nil, false, false, false, 0, []string{"pending", "pending"}, "scheduled", job.StatusQueued},
		{"one snapshot cached", []int{0}, false, false, false, 1, []string{"none", "pending"}, "scheduled", job.StatusQueued},
		{"every snapshot cached: aggregation at once", []int{0, 1}, false, false, false, 2, []string{"none", "none"}, "pending", job.StatusQueued},
		{"everything cached: ended at once", []int{0, 1}, true, false, true, 2, []string{"none", "none"}, "none", job.StatusCompleted},
		{"bypass reads nothing", []int{0, 1}, true, true, false, 0, []string{"pending", "pending"}, "scheduled", job.StatusQueued},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			s := spec("What are the best AI models?")
			if tt.bypass {
				s.Cache = job.CacheBypass
			}
			snaps := f.cacheSnapshots(t, s, env, tt.cached...)
			if tt.aggregate {
				f.cacheAggregate(t, s, env, snaps)
			}
			out, err := f.in.Submit(t.Context(), s)
			if err != nil {
				t.Fatal(err)
			}
			if out.Cached != tt.wantCached || out.CachedMembers != tt.wantSnapshots || out.Joined {
				t.Fatalf("outcome cached %v, cached snapshots %d, joined %v; want %v, %d, false",
					out.Cached, out.CachedMembers, out.Joined, tt.wantCached, tt.wantSnapshots)
			}
			j, err := f.store.Get(t.Context(), out.Job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.Status != tt.wantStatus || j.Cached() != tt.wantCached {
				t.Errorf("stored job %s (cached %v), want %s (%v)", j.Status, j.Cached(), tt.wantStatus, tt.wantCached)
			}
			for i, want := range tt.wantQueued {
				if got := f.taskState(tasks.QueueSnapshot, tasks.MemberTaskID(j.ID, i)); got != want {
					t.Errorf("snapshot task %d: %s, want %s", i, got, want)
				}
				if cached := j.Members[i].Cached; cached != (want == "none") {
					t.Errorf("snapshot %d cached = %v", i, cached)
				}
			}
			if got := f.taskState(tasks.QueueAggregate, tasks.AggregateTaskID(j.ID)); got != tt.wantAggregate {
				t.Errorf("aggregate task: %s, want %s", got, tt.wantAggregate)
			}
			types := eventTypes(t, f, j.ID)
			if want := 1 + 3*tt.wantSnapshots; !tt.wantCached && len(types) != want {
				t.Errorf("events %v, want %d (job.accepted and three per cached snapshot)", types, want)
			}
			if tt.wantCached && types[len(types)-1] != events.JobCompleted {
				t.Errorf("events of a cached job %v do not end with job.completed", types)
			}
		})
	}
}

// A request identical to a running job joins it; one whose holder ended,
// or died before creating its job, starts a job of its own.
func TestSubmitJoinsOnlyLiveJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := spec("Who leads in EV sales?")
	first, err := f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	// The joiner gets a job of its own (a handle) on the first one's work.
	if !second.Joined || second.Job.ID == first.Job.ID {
		t.Fatalf("second submission: joined %v job %s, want a job of its own joined to %s", second.Joined, second.Job.ID, first.Job.ID)
	}
	if h, err := f.store.Head(t.Context(), second.Job.ID); err != nil || h.Work != first.Job.ID {
		t.Fatalf("the joiner's job: %+v %v, want a handle on %s", h, err, first.Job.ID)
	}

	// Different callback URL, cache mode or warm flag: not identical.
	for _, change := range []func(*job.Spec){
		func(s *job.Spec) { s.CallbackURL = "https://example.com/hook" },
		func(s *job.Spec) { s.Cache = job.CacheBypass },
		func(s *job.Spec) { s.Warm = true },
	} {
		other := s
		change(&other)
		out, err := f.in.Submit(t.Context(), other)
		if err != nil {
			t.Fatal(err)
		}
		if out.Joined {
			t.Errorf("%+v joined the job of %+v", other, s)
		}
	}

	// The first job ends without releasing its entry (its worker died):
	// the next identical request starts another job.
	if err := f.store.Finish(t.Context(), first.Job.ID, job.StatusCanceled, "test", nil); err != nil {
		t.Fatal(err)
	}
	third, err := f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if third.Joined || third.Job.ID == first.Job.ID {
		t.Fatalf("after the holder ended: joined %v job %s", third.Joined, third.Job.ID)
	}

	// A holder that claimed the fingerprint a minute ago and never wrote
	// its job is dead: it is replaced at once.
	plan, err := tt.Plan(s, env)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(plan))
	for i, m := range plan {
		keys[i] = m.CacheKey
	}
	fp := cache.Fingerprint(timetravel.Name, keys, tt.ResultKey(s, env, nil), false, false, "")
	ghost := "ghost " + strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10)
	if err := f.db.Client.Set(t.Context(), "tt:inflight:"+fp, ghost, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	fourth, err := f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Joined || fourth.Job.ID == "ghost" {
		t.Fatalf("a dead holder was joined: %+v", fourth)
	}
	holder, err := f.db.Client.Get(t.Context(), "tt:inflight:"+fp).Result()
	if err != nil || len(holder) < len(fourth.Job.ID) || holder[:len(fourth.Job.ID)] != fourth.Job.ID {
		t.Errorf("in-flight entry %q (%v), want the new job %s", holder, err, fourth.Job.ID)
	}
}

// Warming stores nothing when everything is cached, and puts a warming
// job's tasks on the warm queue otherwise.
func TestWarm(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := spec("What is the tallest building?")
	out, err := f.in.Warm(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if out.Cached || out.Joined || !out.Job.Spec.Warm {
		t.Fatalf("warming an uncached question: %+v", out)
	}
	for i := range timetravel.ParamsOf(s).TimePoints {
		if got := f.taskState(tasks.QueueWarm, tasks.MemberTaskID(out.Job.ID, i)); got != "pending" {
			t.Errorf("warming snapshot %d on the warm queue: %s, want pending", i, got)
		}
	}
	if got := f.taskState(tasks.QueueWarm, tasks.AggregateTaskID(out.Job.ID)); got != "scheduled" {
		t.Errorf("warming aggregation on the warm queue: %s, want scheduled", got)
	}

	cached := spec("Who won the last World Cup?")
	f.cacheAggregate(t, cached, env, f.cacheSnapshots(t, cached, env, 0, 1))
	out, err = f.in.Warm(t.Context(), cached)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Cached {
		t.Fatalf("warming a cached question: %+v, want Cached", out)
	}
	if _, err := f.store.Get(t.Context(), out.Job.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("warming a cached question stored job %s (err %v)", out.Job.ID, err)
	}
}
