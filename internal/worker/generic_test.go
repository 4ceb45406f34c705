package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// cacheTTLs are the harness' cache lifetimes (options.cache).
var cacheTTLs = cache.TTLs{Past: time.Hour, Today: time.Minute}

// askKind is a kind the service does not have, for the handlers' paths
// that no kind may change: its members are "answers", one per topic, named
// by a "topic" field; its aggregation has four parts: "count" (fixed, no
// call), "summary" (structured, with the extraction model), "story" and
// "verdict" (streamed, with the narrative model).
type askKind struct{}

type askParams struct {
	Topics []string `json:"topics"`
}

var _ jobkind.Kind = askKind{}

func (askKind) Name() string   { return "ask" }
func (askKind) Path() string   { return "/ask" }
func (askKind) Noun() job.Noun { return "answer" }

func (askKind) Decode([]byte, time.Time) (job.Spec, error) {
	return job.Spec{}, errors.New("askKind: not decoded in these tests")
}

func (askKind) Models(job.Spec) []jobkind.NamedModel { return nil }

func askParamsOf(spec job.Spec) askParams {
	var p askParams
	_ = jobkind.DecodeParams(spec, &p)
	return p
}

func (askKind) Plan(spec job.Spec, env jobkind.Env) ([]jobkind.Member, error) {
	var out []jobkind.Member
	for _, topic := range askParamsOf(spec).Topics {
		out = append(out, jobkind.Member{
			Label: topic, Ref: map[string]string{"topic": strings.ToLower(topic)},
			Request: llm.Request{Model: env.MemberModel(spec), User: "member " + topic},
		})
	}
	return out, nil
}

func (askKind) Parts(spec job.Spec, env jobkind.Env, done []job.Member) ([]jobkind.Part, error) {
	narr := env.NarrativeModel(spec)
	return []jobkind.Part{
		{Name: "count", Fixed: len(done)},
		{Name: "summary", Request: llm.Request{Model: env.Extraction, User: "summary", JSON: true},
			Parse: func(text string) (any, error) {
				var v map[string]any
				if err := json.Unmarshal([]byte(text), &v); err != nil {
					return nil, err
				}
				if _, ok := v["transitions"]; !ok {
					return nil, errors.New("no transitions")
				}
				return v, nil
			}},
		{Name: "story", Stream: true, Request: llm.Request{Model: narr, User: "story"}},
		{Name: "verdict", Stream: true, Request: llm.Request{Model: narr, User: "verdict"}},
	}, nil
}

func (askKind) ResultKey(job.Spec, jobkind.Env, []job.Member) string { return "" }

func (askKind) Accepted(spec job.Spec, _ []job.Member) (map[string]any, error) {
	return map[string]any{"topics": askParamsOf(spec).Topics}, nil
}

func (askKind) View(j *job.Job) (any, error) {
	return struct {
		Answers []job.Member `json:"answers"`
	}{j.Members}, nil
}

// askRegistry serves time travel and askKind.
func askRegistry() *jobkind.Registry {
	r := jobkind.NewRegistry()
	r.Add(timetravel.Kind{})
	r.Add(askKind{})
	return r
}

func askJob(t *testing.T, topics []string, deadline time.Duration) *job.Job {
	t.Helper()
	spec := job.Spec{Question: "Which topic matters?", Cache: job.CacheUse, Params: jobkind.EncodeParams(askParams{Topics: topics})}
	return newJobOf(t, askKind{}, spec, deadline)
}

// completeMembers records members 0..n-1 of j as answered, as workers
// would.
func (hs *harness) completeMembers(j *job.Job, n int) {
	hs.t.Helper()
	ctx := context.Background()
	for i := range n {
		owner := fmt.Sprintf("w%d", i)
		if _, _, err := hs.store.StartMember(ctx, j.ID, i, owner, snapModel); err != nil {
			hs.t.Fatal(err)
		}
		if _, err := hs.store.FinishMember(ctx, j.ID, i, owner, store.MemberOutcome{Text: "answer " + j.Members[i].Label}); err != nil {
			hs.t.Fatal(err)
		}
	}
}

// A kind other than time travel runs through the same handlers: its
// members' events carry its noun and its fields, its parts (fixed,
// structured, streamed) are each emitted once under their own names and
// kept in the kind's order, and its outcome names its missing members.
func TestAnyKindRunsThroughTheHandlers(t *testing.T) {
	t.Parallel()
	reg := askRegistry()
	hs := newHarness(t, options{kinds: reg, script: func(c call) *answer {
		if c.Kind == kindSnapshot && c.User == "member Beta" {
			return &answer{Err: statusErr(400)}
		}
		return nil
	}})
	j := hs.submitJob(askJob(t, []string{"Alpha", "Beta", "Gamma"}, time.Minute))
	evs := hs.follow(j.ID, endTimeout)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusPartial)
	if want := "1 of 3 answers missing: Beta failed"; got.Error != want {
		t.Errorf("job error %q, want %q", got.Error, want)
	}
	wantErr := "answer Beta: " + statusErr(400).Error()
	if errs := got.View().Errors; !slices.Contains(errs, wantErr) {
		t.Errorf("view errors %q, want %q among them", errs, wantErr)
	}

	// Members: the kind's noun and fields.
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "snapshot.") || strings.HasPrefix(e.Type, "key_changes.") || strings.HasPrefix(e.Type, "narrative.") {
			t.Errorf("time-travel event %s in a job of another kind", e.Type)
		}
	}
	if n := len(ofType(evs, "answer.started")); n != 3 {
		t.Errorf("%d answer.started events, want 3", n)
	}
	completed := ofType(evs, "answer.completed")
	if len(completed) != 2 {
		t.Errorf("%d answer.completed events, want 2", len(completed))
	}
	failed := ofType(evs, "answer.failed")
	if len(failed) != 1 {
		t.Fatalf("%d answer.failed events, want 1", len(failed))
	}
	var f struct {
		Index int    `json:"index"`
		Label string `json:"label"`
		Topic string `json:"topic"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(failed[0].Data, &f); err != nil || f.Index != 1 || f.Label != "Beta" || f.Topic != "beta" || f.Error != statusErr(400).Error() {
		t.Errorf("answer.failed %s (%v), want index 1, Beta, its topic and error", failed[0].Data, err)
	}

	// Parts: one terminal event each, under its name.
	for _, name := range []string{"count", "summary", "story", "verdict"} {
		if n := len(ofType(evs, name+".completed")); n != 1 {
			t.Errorf("%d %s.completed events, want 1; events %v", n, name, typesOf(evs))
		}
		if n := len(ofType(evs, name+".failed")); n != 0 {
			t.Errorf("%d %s.failed events, want 0", n, name)
		}
	}
	if d := string(ofType(evs, "count.completed")[0].Data); d != `{"count":2}` {
		t.Errorf("count.completed %s, want the fixed value over the 2 answers", d)
	}
	if d := string(ofType(evs, "summary.completed")[0].Data); d != `{"summary":{"transitions":[]}}` {
		t.Errorf("summary.completed %s, want the parsed value", d)
	}
	for _, name := range []string{"story", "verdict"} {
		var streamed strings.Builder
		for _, e := range ofType(evs, name+".delta") {
			streamed.WriteString(decode[events.DeltaData](t, e).Text)
		}
		if streamed.String() != narrativeText() {
			t.Errorf("%s deltas add up to %q, want %q", name, streamed.String(), narrativeText())
		}
		if d := decode[events.DeltaData](t, ofType(evs, name+".completed")[0]); d.Text != narrativeText() {
			t.Errorf("%s.completed text %q", name, d.Text)
		}
	}
	r := got.Result
	if r == nil {
		t.Fatal("no result")
	}
	var names []string
	for _, p := range r.Parts {
		names = append(names, p.Name)
		if p.Error != "" {
			t.Errorf("part %s failed: %s", p.Name, p.Error)
		}
	}
	if want := []string{"count", "summary", "story", "verdict"}; !slices.Equal(names, want) {
		t.Errorf("result parts %v, want %v (the kind's order)", names, want)
	}
	if p := r.Part("story"); p.Text != narrativeText() || p.Value != nil || p.MS <= 0 {
		t.Errorf("story part %+v, want its text and duration", p)
	}
	if p := r.Part("count"); string(p.Value) != "2" || p.MS != 0 {
		t.Errorf("count part %+v, want the fixed value and no call", p)
	}
	if _, ok := got.Timings().Stages(got.Noun)["answers"]; !ok {
		t.Errorf("stages %v, want the answers' stage", got.Timings().Stages(got.Noun))
	}

	// The kind's view.
	v, err := reg.View(got)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	var view struct {
		Kind    string       `json:"kind"`
		Answers []job.Member `json:"answers"`
	}
	if err := json.Unmarshal(b, &view); err != nil || view.Kind != "ask" || len(view.Answers) != 3 || view.Answers[2].Ref["topic"] != "gamma" {
		t.Errorf("view %s (%v), want kind ask with its 3 answers", b, err)
	}

	// The calls: one per member, one per part that is not fixed.
	var members, structured, streamed int
	for _, c := range hs.model.Calls() {
		switch {
		case c.Kind == kindSnapshot && c.Method == "Stream":
			members++
		case c.Kind == kindKeyChanges && c.Method == "Complete" && c.JSON && c.User == "summary":
			structured++
		case c.Kind == kindNarrative && c.Method == "Stream":
			streamed++
		default:
			t.Errorf("unexpected call %+v", c)
		}
	}
	if members != 3 || structured != 1 || streamed != 2 {
		t.Errorf("calls: %d members, %d structured, %d streamed; want 3, 1, 2", members, structured, streamed)
	}
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
}

// admissions records what the aggregation asked of provider capacity.
type admissions struct {
	mu   sync.Mutex
	seen []admission
}

type admission struct {
	User string
	// Wait is the capacity wait the request's context carries (-1: the
	// default).
	Wait time.Duration
}

func (a *admissions) add(ctx context.Context, r llm.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, admission{User: r.User, Wait: llm.CapacityWaitFrom(ctx, -1)})
}

func (a *admissions) list() []admission {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]admission(nil), a.seen...)
}

// Every call of the aggregation gets provider capacity before any runs:
// the first waits for it as any call does, the others only briefly; a call
// that got none runs after the others, alone, with a longer wait.
func TestPartsWithoutCapacityRunAfterTheOthers(t *testing.T) {
	t.Parallel()
	var adm admissions
	hs := newHarness(t, options{kinds: askRegistry(), noServers: true, admit: func(ctx context.Context, r llm.Request) error {
		adm.add(ctx, r)
		if r.User == "verdict" {
			return fmt.Errorf("verdict: %w", llm.ErrNoCapacity)
		}
		return nil
	}})
	j := hs.submitJob(askJob(t, []string{"Alpha", "Beta"}, time.Minute))
	hs.completeMembers(j, 2)
	if err := hs.h.HandleAggregate(context.Background(), aggregateTask(j.ID)); err != nil {
		t.Fatal(err)
	}
	got := hs.job(j.ID)
	if got.Status != job.StatusCompleted || got.Result == nil || len(got.Result.Parts) != 4 || got.Result.Failed() {
		t.Fatalf("job %s (%q), result %+v; want completed with its 4 parts", got.Status, got.Error, got.Result)
	}
	want := []admission{{"summary", -1}, {"story", 200 * time.Millisecond}, {"verdict", 200 * time.Millisecond}}
	if a := adm.list(); !slices.Equal(a, want) {
		t.Errorf("admissions %+v, want %+v", a, want)
	}
	calls := hs.model.Calls()
	if len(calls) != 3 {
		t.Fatalf("calls %+v, want 3", calls)
	}
	if last := calls[2]; last.User != "verdict" || last.Active != 0 {
		t.Errorf("last call %+v; want the verdict, alone, after the others", last)
	}
	evs := hs.events(j.ID)
	for _, name := range []string{"count", "summary", "story", "verdict"} {
		if n := len(ofType(evs, name+".completed")); n != 1 {
			t.Errorf("%d %s.completed events, want 1", n, name)
		}
	}
}

// Without capacity for its first call the aggregation goes back to the
// queue having called nothing; its next run does the work, and a part
// emitted before (a fixed one) is not emitted again.
func TestAggregationWithoutCapacityIsHandedBack(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	refuse := true
	hs := newHarness(t, options{kinds: askRegistry(), noServers: true, admit: func(_ context.Context, r llm.Request) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse && r.User == "summary" {
			return fmt.Errorf("summary: %w", llm.ErrNoCapacity)
		}
		return nil
	}})
	j := hs.submitJob(askJob(t, []string{"Alpha", "Beta"}, time.Minute))
	hs.completeMembers(j, 2)
	ctx := context.Background()
	err := hs.h.HandleAggregate(ctx, aggregateTask(j.ID))
	if !errors.Is(err, llm.ErrNoCapacity) {
		t.Fatalf("aggregation without capacity: %v, want it handed back", err)
	}
	if calls := hs.model.Calls(); len(calls) != 0 {
		t.Errorf("calls %+v without capacity", calls)
	}
	for _, e := range hs.events(j.ID) {
		if strings.HasPrefix(e.Type, "summary.") || strings.HasPrefix(e.Type, "story.") || strings.HasPrefix(e.Type, "verdict.") {
			t.Errorf("%s without capacity", e.Type)
		}
	}
	if st := hs.job(j.ID).Status; st != job.StatusAggregating {
		t.Errorf("job %s, want aggregating", st)
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	if err := hs.h.HandleAggregate(ctx, aggregateTask(j.ID)); err != nil {
		t.Fatal(err)
	}
	got := hs.job(j.ID)
	if got.Status != job.StatusCompleted || got.Result == nil || len(got.Result.Parts) != 4 {
		t.Fatalf("job %s (%q), result %+v; want completed with its 4 parts", got.Status, got.Error, got.Result)
	}
	evs := hs.events(j.ID)
	for _, name := range []string{"count", "summary", "story", "verdict"} {
		if n := len(ofType(evs, name+".completed")); n != 1 {
			t.Errorf("%d %s.completed events, want 1", n, name)
		}
	}
}

// A single snapshot has no transition: its key changes are the fixed empty
// list, emitted without a call.
func TestSingleSnapshotKeyChangesNeedNoCall(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{})
	j := hs.submit([]string{"2023-01-01"}, time.Minute)
	evs := hs.follow(j.ID, endTimeout)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusCompleted)
	kc := ofType(evs, timetravel.EventKeyChangesCompleted)
	if len(kc) != 1 || string(kc[0].Data) != `{"key_changes":[]}` {
		t.Errorf("key_changes.completed events %v, want one with an empty list", kc)
	}
	if agg := aggOf(t, got); agg == nil || len(agg.KeyChanges) != 0 || agg.KeyChangesError != "" || agg.Narrative != narrativeText() {
		t.Errorf("aggregate %+v, want no key changes, no error, the narrative", agg)
	}
	if n, m := hs.model.count(kindKeyChanges, ""), hs.model.count(kindNarrative, ""); n != 0 || m != 1 {
		t.Errorf("%d key-changes and %d narrative calls, want 0 and 1", n, m)
	}
}

// What a job computes is cached, by the keys its kind gives (an answer as
// of today, and a result made from one, for the short TTL); an identical
// job is then served from the caches, with cached events and no call, and
// one that bypasses them calls the models again.
func TestCachesServeAnIdenticalJob(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{cache: true})
	today := time.Now().UTC().Format(timetravel.DateLayout)
	dates := []string{"2023-01-01", today}
	ctx := context.Background()

	first := hs.submit(dates, time.Minute)
	wantEnded(t, hs.follow(first.ID, endTimeout), hs.job(first.ID), job.StatusCompleted)
	calls := len(hs.model.Calls())
	if calls != 4 {
		t.Fatalf("%d calls, want 4 (2 snapshots, key changes, narrative)", calls)
	}
	plan := hs.plan(first)
	for i, m := range plan {
		ttl, err := hs.rdb.PTTL(ctx, cache.MemberRedisKey(m.CacheKey)).Result()
		if err != nil || ttl <= 0 {
			t.Fatalf("snapshot %d not cached: ttl %v, %v", i, ttl, err)
		}
		if volatile := ttl <= cacheTTLs.Today; volatile != m.Volatile || volatile != (dates[i] == today) {
			t.Errorf("snapshot %d (%s) cached for %v; want the short TTL only for today's", i, dates[i], ttl)
		}
	}
	ended := hs.job(first.ID)
	key := timetravel.Kind{}.ResultKey(ended.Spec, hs.env, ended.Completed())
	if ttl, err := hs.rdb.PTTL(ctx, cache.ResultRedisKey(key)).Result(); err != nil || ttl <= 0 || ttl > cacheTTLs.Today {
		t.Errorf("result cached for %v (%v); want the short TTL: it is made from today's answer", ttl, err)
	}

	second := hs.submit(dates, time.Minute)
	evs := hs.follow(second.ID, endTimeout)
	got := hs.job(second.ID)
	wantEnded(t, evs, got, job.StatusCompleted)
	if n := len(hs.model.Calls()); n != calls {
		t.Errorf("calls grew from %d to %d for a cached job", calls, n)
	}
	if !got.Cached() || got.Result == nil || !got.Result.Cached {
		t.Errorf("job cached %v, result %+v; want it served from the caches", got.Cached(), got.Result)
	}
	for i, s := range got.Members {
		if !s.Cached || s.Status != job.MemberCompleted || s.Text != snapshotText(dates[i]) || s.Model != snapModel {
			t.Errorf("snapshot %d = %+v, want its cached answer", i, s)
		}
	}
	for _, typ := range []string{timetravel.EventKeyChangesCompleted, timetravel.EventNarrativeCompleted} {
		e := ofType(evs, typ)
		var d struct {
			Cached bool `json:"cached"`
		}
		if len(e) != 1 || json.Unmarshal(e[0].Data, &d) != nil || !d.Cached {
			t.Errorf("%s events %v, want one marked cached", typ, e)
		}
	}
	var streamed strings.Builder
	for _, e := range ofType(evs, timetravel.EventNarrativeDelta) {
		streamed.WriteString(decode[events.DeltaData](t, e).Text)
	}
	if streamed.String() != narrativeText() {
		t.Errorf("cached narrative deltas add up to %q, want %q", streamed.String(), narrativeText())
	}
	if agg := aggOf(t, got); agg == nil || len(agg.KeyChanges) != 1 || agg.Narrative != narrativeText() {
		t.Errorf("aggregate %+v, want the cached key changes and narrative", agg)
	}

	bypass := newJob(t, dates, time.Minute)
	bypass.Spec.Cache = job.CacheBypass
	hs.submitJob(bypass)
	wantEnded(t, hs.follow(bypass.ID, endTimeout), hs.job(bypass.ID), job.StatusCompleted)
	if n := len(hs.model.Calls()); n != 2*calls {
		t.Errorf("%d calls after a job that bypasses the caches, want %d", n, 2*calls)
	}
	if hs.job(bypass.ID).Cached() {
		t.Error("a job that bypasses the caches is marked cached")
	}
}
