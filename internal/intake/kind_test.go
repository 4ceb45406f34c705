package intake_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// fakeKind is a kind unlike time travel: its members are "answer"s, one
// per model it asks (Ref "asked"); a model named "nokey-..." gives its
// member no cache key. Its aggregation is one streamed part, "synthesis".
type fakeKind struct{}

const fakeName = "fake"

func (fakeKind) Name() string   { return fakeName }
func (fakeKind) Path() string   { return "/fake" }
func (fakeKind) Noun() job.Noun { return "answer" }
func (fakeKind) Decode([]byte, time.Time) (job.Spec, error) {
	return job.Spec{}, errors.New("not used")
}
func (fakeKind) Models(job.Spec) []jobkind.NamedModel { return nil }

type fakeParams struct {
	Models []string `json:"models"`
}

func fakeSpec(question string, models ...string) job.Spec {
	return job.Spec{Kind: fakeName, Question: question, Cache: job.CacheUse, Params: jobkind.EncodeParams(fakeParams{models})}
}

func (fakeKind) Plan(spec job.Spec, env jobkind.Env) ([]jobkind.Member, error) {
	var p fakeParams
	if err := jobkind.DecodeParams(spec, &p); err != nil {
		return nil, err
	}
	out := make([]jobkind.Member, len(p.Models))
	for i, m := range p.Models {
		out[i] = jobkind.Member{
			Label: "Model " + m, Ref: map[string]string{"asked": m},
			Request: llm.Request{Model: m, User: spec.Question, MaxTokens: 100},
		}
		if !strings.HasPrefix(m, "nokey-") {
			out[i].CacheKey = cache.Identity([]string{fakeName, spec.Question, m, env.Provider(m)})
		}
	}
	return out, nil
}

func (fakeKind) Parts(spec job.Spec, env jobkind.Env, done []job.Member) ([]jobkind.Part, error) {
	return []jobkind.Part{{Name: "synthesis", Stream: true, Request: llm.Request{Model: env.Narrative, User: spec.Question}}}, nil
}

func (fakeKind) ResultKey(spec job.Spec, env jobkind.Env, done []job.Member) string {
	texts := []string{fakeName, spec.Question, env.Narrative}
	for _, m := range done {
		texts = append(texts, m.Ref["asked"], m.Text)
	}
	return cache.Identity(texts)
}

func (fakeKind) Accepted(spec job.Spec, members []job.Member) (map[string]any, error) {
	asked := make([]string, len(members))
	for i, m := range members {
		asked[i] = m.Ref["asked"]
	}
	return map[string]any{"asked": asked}, nil
}

func (fakeKind) View(j *job.Job) (any, error) { return map[string]any{"answers": j.Members}, nil }

func fakeRegistry() *jobkind.Registry {
	r := jobkind.NewRegistry()
	r.Add(timetravel.Kind{})
	r.Add(fakeKind{})
	return r
}

// events returns the events of a job, in order.
func (f fixture) events(t *testing.T, jobID string) []events.Event {
	t.Helper()
	evs, err := f.store.Events(t.Context(), jobID, "")
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// Submit knows no kind: the kind's plan makes the job's members, named by
// its noun in their events and tasks, and its accepted fields go to
// job.accepted.
func TestSubmitOfAnotherKind(t *testing.T) {
	t.Parallel()
	f := newFixtureOf(t, fakeRegistry())
	s := fakeSpec("Which is the best sorting algorithm?", "model-a", "model-b")
	plan, err := fakeKind{}.Plan(s, env)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cache.PutMember(t.Context(), plan[1].CacheKey, cache.Answer{Text: "merge sort", Model: "model-b"}, false); err != nil {
		t.Fatal(err)
	}
	out, err := f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if out.Cached || out.Joined || out.CachedMembers != 1 {
		t.Fatalf("outcome %+v, want one cached member", out)
	}
	j, err := f.store.Get(t.Context(), out.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Noun != "answer" || j.Spec.Kind != fakeName || len(j.Members) != 2 || j.Members[0].Ref["asked"] != "model-a" ||
		j.Members[0].Status != job.MemberPending || j.Members[1].Status != job.MemberCompleted || j.Members[1].Text != "merge sort" {
		t.Fatalf("stored job: noun %q kind %q members %+v", j.Noun, j.Spec.Kind, j.Members)
	}

	// Only the member the cache lacks is queued, with its whole call.
	info, err := f.insp.GetTaskInfo(tasks.QueueSnapshot, tasks.MemberTaskID(j.ID, 0))
	if err != nil {
		t.Fatal(err)
	}
	var p tasks.MemberPayload
	if err := json.Unmarshal(info.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.Kind != fakeName || p.Index != 0 || p.Label != "Model model-a" || p.Request.Model != "model-a" || p.Request.User != s.Question ||
		p.CacheKey != plan[0].CacheKey || p.DeadlineMS != j.Deadline.UnixMilli() {
		t.Errorf("member task %+v", p)
	}
	if got := f.taskState(tasks.QueueSnapshot, tasks.MemberTaskID(j.ID, 1)); got != "none" {
		t.Errorf("the cached member's task: %s, want none", got)
	}

	evs := f.events(t, j.ID)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	want := []string{events.JobAccepted, "answer.started", "answer.delta", "answer.completed"}
	if !slices.Equal(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	var acc struct {
		Kind  string   `json:"kind"`
		Asked []string `json:"asked"`
	}
	if err := json.Unmarshal(evs[0].Data, &acc); err != nil || acc.Kind != fakeName || !slices.Equal(acc.Asked, []string{"model-a", "model-b"}) {
		t.Errorf("job.accepted %s (%v)", evs[0].Data, err)
	}
	if !strings.Contains(string(evs[3].Data), `"asked":"model-b"`) {
		t.Errorf("answer.completed %s does not name its member", evs[3].Data)
	}

	// Everything cached: the job ends at once with the cached result.
	if err := f.cache.PutMember(t.Context(), plan[0].CacheKey, cache.Answer{Text: "quicksort", Model: "model-a"}, false); err != nil {
		t.Fatal(err)
	}
	done := []job.Member{
		{Index: 0, Label: plan[0].Label, Ref: plan[0].Ref, Status: job.MemberCompleted, Text: "quicksort"},
		{Index: 1, Label: plan[1].Label, Ref: plan[1].Ref, Status: job.MemberCompleted, Text: "merge sort"},
	}
	if err := f.cache.PutResult(t.Context(), fakeKind{}.ResultKey(s, env, done), job.Result{Parts: []job.Part{{Name: "synthesis", Text: "Both."}}}, false); err != nil {
		t.Fatal(err)
	}
	out, err = f.in.Submit(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Cached || out.CachedMembers != 2 {
		t.Fatalf("everything cached: %+v", out)
	}
	j, err = f.store.Get(t.Context(), out.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != job.StatusCompleted || !j.Cached() || j.Result.Part("synthesis") == nil || j.Result.Part("synthesis").Text != "Both." {
		t.Fatalf("cached job: %s cached %v result %+v", j.Status, j.Cached(), j.Result)
	}
	types = types[:0]
	for _, e := range f.events(t, j.ID) {
		types = append(types, e.Type)
	}
	if !slices.Contains(types, "synthesis.completed") || types[len(types)-1] != events.JobCompleted {
		t.Errorf("events of the cached job %v", types)
	}
}

// Identical requests of a kind join one job when the kind identifies
// every member's answer; a member without a cache key keeps the request
// out of deduplication, and requests of two kinds never join.
func TestSubmitJoinsOnlyIdentifiedRequests(t *testing.T) {
	t.Parallel()
	f := newFixtureOf(t, fakeRegistry())
	for _, tt := range []struct {
		spec       job.Spec
		wantJoined bool
	}{
		{fakeSpec("q", "model-a", "model-b"), true},
		{fakeSpec("q", "model-a", "nokey-b"), false},
	} {
		first, err := f.in.Submit(t.Context(), tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		second, err := f.in.Submit(t.Context(), tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		if second.Joined != tt.wantJoined || first.Joined {
			t.Errorf("%s: joined %v then %v, want false then %v", tt.spec.Params, first.Joined, second.Joined, tt.wantJoined)
		}
		if !tt.wantJoined && first.Job.Fingerprint != "" {
			t.Errorf("%s: fingerprint %q, want none", tt.spec.Params, first.Job.Fingerprint)
		}
	}
	// The same question of time travel is another request.
	out, err := f.in.Submit(t.Context(), spec("q"))
	if err != nil || out.Joined {
		t.Fatalf("time travel after the fake kind: %+v %v", out, err)
	}
}

// A spec of a kind the intake does not serve is refused: no job is made.
func TestSubmitUnknownKind(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := f.in.Submit(t.Context(), fakeSpec("q", "model-a"))
	if err == nil || !strings.Contains(err.Error(), fakeName) {
		t.Fatalf("err %v, want the unknown kind named", err)
	}
	keys, err := f.db.Client.Keys(t.Context(), "tt:*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys %v (%v), want none", keys, err)
	}
}
