package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// The ensemble's models in these tests. The simulator has no latency of
// their own for the first three: they answer at its default pace (TTFT,
// then 200 tokens a second), about half a second.
const (
	ensAlpha = "sim-alpha"
	ensBeta  = "sim-beta"
	ensBad   = "sim-bad"  // fails every call (a 401 rule: never retried)
	ensBad2  = "sim-bad2" // likewise, for the ensemble where all fail
)

// ensembleAPIEnv lets requests name the ensemble's models, over the
// suite's list (the api's own map overrides the common one, so the other
// tests' environment is untouched).
var ensembleAPIEnv = map[string]string{
	"LLM_ALLOWED_MODELS": strings.Join([]string{modelSlow, "sim-2s", ensAlpha, ensBeta, ensBad, ensBad2}, ","),
}

// withEnv returns a copy of base with extra on top.
func withEnv(base, extra map[string]string) map[string]string {
	m := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func ensemble(t *testing.T, e env, req client.EnsembleRequest) client.Accepted {
	t.Helper()
	acc, err := e.api.Ensemble(context.Background(), req)
	if err != nil {
		t.Fatalf("ensemble: %v", err)
	}
	return acc
}

// failEvery makes every call of model fail with a 401, which is never
// retried, for as long as the rule stays (Count 0).
func failEvery(t *testing.T, ctl llmsim.Control, model string) {
	t.Helper()
	faultNext(t, ctl, model, llmsim.FaultUnauthorized, 0)
}

// memberIndex reads the "index" of a member event's data.
func memberIndex(t *testing.T, ev client.Event) int {
	t.Helper()
	var d struct {
		Index *int `json:"index"`
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil || d.Index == nil {
		t.Fatalf("%s data %s has no index (%v)", ev.Name, ev.Data, err)
	}
	return *d.Index
}

// checkEnsembleOrder asserts the protocol's ordering rules on one ensemble
// job's events, with n answers: ids unique and increasing; job.accepted
// first and job.completed last, once; each answer started before its deltas
// and ended once, after its start (a cached answer included); the
// synthesis and the analysis after every answer ended, each ended once. It
// returns the indexes of the answers that ended, by event name.
func checkEnsembleOrder(t *testing.T, evs []client.Event, n int) map[string][]int {
	t.Helper()
	if len(evs) == 0 || evs[0].Name != client.EventJobAccepted {
		t.Fatalf("stream does not start with job.accepted: %v", names(evs))
	}
	if evs[len(evs)-1].Name != client.EventJobCompleted || countNamed(evs, client.EventJobCompleted) != 1 {
		t.Fatalf("stream does not end with one job.completed: %v", names(evs))
	}
	seen := map[string]bool{}
	started := map[int]bool{}
	ended := map[string][]int{}
	done := map[int]bool{}
	aggregating := false
	prev := ""
	for _, ev := range evs {
		if seen[ev.ID] {
			t.Fatalf("event id %s delivered twice", ev.ID)
		}
		seen[ev.ID] = true
		if prev != "" && !idLess(prev, ev.ID) {
			t.Fatalf("event ids out of order: %s then %s", prev, ev.ID)
		}
		prev = ev.ID
		switch ev.Name {
		case client.EventAnswerStarted:
			i := memberIndex(t, ev)
			if done[i] || aggregating {
				t.Fatalf("answer %d started after it ended or after the aggregation began: %v", i, names(evs))
			}
			started[i] = true
		case client.EventAnswerDelta:
			if i := memberIndex(t, ev); !started[i] || done[i] {
				t.Fatalf("delta of answer %d outside its started..ended window: %v", i, names(evs))
			}
		case client.EventAnswerCompleted, client.EventAnswerFailed:
			i := memberIndex(t, ev)
			if !started[i] || done[i] {
				t.Fatalf("answer %d ended twice or before it started: %v", i, names(evs))
			}
			if aggregating {
				t.Fatalf("answer %d ended after the aggregation began: %v", i, names(evs))
			}
			done[i] = true
			ended[ev.Name] = append(ended[ev.Name], i)
		case client.EventAggregateStarted, client.EventSynthesisDelta:
			aggregating = true
		case client.EventSynthesisCompleted, client.EventSynthesisFailed, client.EventAnalysisCompleted, client.EventAnalysisFailed:
			aggregating = true
			part, _, _ := strings.Cut(ev.Name, ".")
			if seen[part] {
				t.Fatalf("%s ended twice: %v", part, names(evs))
			}
			seen[part] = true
		case client.EventJobAccepted, client.EventJobCompleted:
		default:
			t.Fatalf("event %s in an ensemble's stream", ev.Name)
		}
	}
	if len(done) > n {
		t.Fatalf("%d answers ended, want at most %d: %v", len(done), n, names(evs))
	}
	return ended
}

// deltaText is the text of the deltas named name, in order: of answer
// index for answer.delta, of the part otherwise.
func deltaText(t *testing.T, evs []client.Event, name string, index int) string {
	t.Helper()
	var b strings.Builder
	for _, ev := range evs {
		if ev.Name != name {
			continue
		}
		if name == client.EventAnswerDelta && memberIndex(t, ev) != index {
			continue
		}
		var d client.TextData
		if err := ev.Decode(&d); err != nil {
			t.Fatal(err)
		}
		b.WriteString(d.Text)
	}
	return b.String()
}

// readResumed reads job id's stream, dropping the connection after the
// given numbers of events and resuming each time with Last-Event-ID, then
// to the end.
func readResumed(t *testing.T, e env, id string, drops ...int) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []client.Event
	stop := errors.New("disconnect")
	last := ""
	for _, after := range drops {
		n := 0
		var err error
		last, err = e.api.Events(ctx, id, last, func(ev client.Event) error {
			got = append(got, ev)
			if n++; n == after {
				return stop
			}
			return nil
		})
		if err == nil {
			return got
		}
		if !errors.Is(err, stop) {
			t.Fatalf("events: %v", err)
		}
	}
	if _, err := e.api.Events(ctx, id, last, func(ev client.Event) error { got = append(got, ev); return nil }); err != nil {
		t.Fatalf("events after resuming at %s: %v", last, err)
	}
	return got
}

// An ensemble of three models, one of which the provider refuses every
// time, ends partial: the failed answer carries its error, and the
// synthesis and the analysis are made of the other two. Asked again, the
// two good answers come from the member cache; once the third model has
// answered too, the whole job is served from the caches. All failed:
// failed. Cancel stops the answers still running.
func TestEnsemble(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, ensembleAPIEnv, nil)
	ctl := simControl(t, e)
	failEvery(t, ctl, ensBad)
	const q = "Which programming language should a beginner learn first?"
	models := []string{ensAlpha, ensBeta, ensBad}
	var first client.JobView

	t.Run("one member fails: partial, synthesis and analysis over the others", func(t *testing.T) {
		acc := ensemble(t, e, client.EnsembleRequest{Question: q, Models: models})
		if acc.Cached || acc.Joined || acc.CachedSnapshots != 0 {
			t.Fatalf("first ask: %+v, want a new job with nothing cached", acc)
		}
		// Read live, dropping the connection three times: resuming with
		// Last-Event-ID delivers every event once, as the replay has them.
		evs := readResumed(t, e, acc.JobID, 2, 5, 9)
		full := collect(t, e, acc.JobID)
		if fmt.Sprint(ids(evs)) != fmt.Sprint(ids(full)) {
			t.Fatalf("resumed stream differs from the full replay:\n got %v\nwant %v", names(evs), names(full))
		}
		ended := checkEnsembleOrder(t, evs, 3)
		if got := terminalStatus(t, evs); got != "partial" {
			t.Fatalf("status %s, want partial: %v", got, names(evs))
		}
		var fin client.JobCompletedData
		_ = evs[len(evs)-1].Decode(&fin)
		if !strings.Contains(fin.Error, ensBad) {
			t.Errorf("terminal error %q does not name the failed model %s", fin.Error, ensBad)
		}
		slices.Sort(ended[client.EventAnswerCompleted])
		if fmt.Sprint(ended[client.EventAnswerCompleted]) != "[0 1]" || fmt.Sprint(ended[client.EventAnswerFailed]) != "[2]" {
			t.Fatalf("answers ended %v, want 0 and 1 completed, 2 failed", ended)
		}
		var acceptedData client.JobAcceptedData
		if err := evs[0].Decode(&acceptedData); err != nil {
			t.Fatal(err)
		}
		if acceptedData.Kind != client.KindEnsemble || !slices.Equal(acceptedData.Models, models) {
			t.Errorf("job.accepted %+v, want kind ensemble and models %v", acceptedData, models)
		}
		for i, m := range models[:2] {
			if countNamed(evs, client.EventAnswerDelta) < 2 || deltaText(t, evs, client.EventAnswerDelta, i) == "" {
				t.Errorf("answer %d (%s) did not stream", i, m)
			}
		}
		for _, ev := range evs {
			switch ev.Name {
			case client.EventAnswerStarted:
				var d client.AnswerStartedData
				if err := ev.Decode(&d); err != nil || d.Label != models[d.Index] || d.Attempt != 1 {
					t.Errorf("answer.started %+v (%v), want label %s, attempt 1", d, err, models[d.Index])
				}
			case client.EventAnswerCompleted:
				var d client.AnswerCompletedData
				if err := ev.Decode(&d); err != nil || d.Label != models[d.Index] || d.Model != models[d.Index] || d.Cached {
					t.Errorf("answer.completed %+v (%v)", d, err)
				}
				if d.Text != deltaText(t, evs, client.EventAnswerDelta, d.Index) || !strings.Contains(d.Text, "Simulated") {
					t.Errorf("answer %d's text is not its deltas' or not labelled simulated: %q", d.Index, d.Text)
				}
			case client.EventAnswerFailed:
				var d client.AnswerFailedData
				if err := ev.Decode(&d); err != nil || d.Label != ensBad || !strings.Contains(d.Error, "401") {
					t.Errorf("answer.failed %+v (%v), want %s with the provider's 401", d, err, ensBad)
				}
				if strings.Contains(d.Error, stack.SimAPIKey) {
					t.Errorf("the failed answer's error shows the provider's key: %q", d.Error)
				}
			}
		}

		// The synthesis streamed, and merges the two answers.
		synth := deltaText(t, evs, client.EventSynthesisDelta, 0)
		var sc client.TextData
		for _, ev := range evs {
			if ev.Name == client.EventSynthesisCompleted {
				_ = ev.Decode(&sc)
			}
		}
		if countNamed(evs, client.EventSynthesisDelta) < 2 || sc.Text == "" || sc.Text != synth {
			t.Fatalf("synthesis: %d deltas, completed text %q, deltas %q", countNamed(evs, client.EventSynthesisDelta), sc.Text, synth)
		}
		if !strings.Contains(sc.Text, "the 2 answers") || strings.Contains(sc.Text, ensBad) {
			t.Errorf("the synthesis is not made of the two answers: %q", sc.Text)
		}
		// The analysis, parsed: it names the two models that answered,
		// and only them.
		var ad client.AnalysisData
		if n := countNamed(evs, client.EventAnalysisCompleted); n != 1 {
			t.Fatalf("%d analysis.completed events: %v", n, names(evs))
		}
		for _, ev := range evs {
			if ev.Name == client.EventAnalysisCompleted {
				if err := ev.Decode(&ad); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkAnalysis(t, ad.Analysis, models[:2])

		first = jobView(t, e, acc.JobID)
		v := first
		if v.Kind != client.KindEnsemble || v.Status != client.StatusPartial || !slices.Equal(v.Models, models) || len(v.Answers) != 3 {
			t.Fatalf("view: kind %s, status %s, models %v, %d answers", v.Kind, v.Status, v.Models, len(v.Answers))
		}
		for i, a := range v.Answers {
			want := client.SnapshotCompleted
			if i == 2 {
				want = client.SnapshotFailed
			}
			if a.Index != i || a.Label != models[i] || a.Status != want || (want == client.SnapshotFailed) != (a.Error != "") {
				t.Errorf("view answer %d: %+v, want %s", i, a, want)
			}
		}
		if v.Synthesis != sc.Text || v.Analysis == nil || fmt.Sprint(*v.Analysis) != fmt.Sprint(ad.Analysis) {
			t.Errorf("view: synthesis %q, analysis %+v; want the events'", v.Synthesis, v.Analysis)
		}
		if len(v.Errors) == 0 || !strings.Contains(strings.Join(v.Errors, "\n"), ensBad) {
			t.Errorf("view errors %v do not name %s", v.Errors, ensBad)
		}
		tm := v.Timings
		if tm.AnswersMS == nil || len(tm.AnswerMS) != 3 || tm.SynthesisMS == nil || tm.AnalysisMS == nil || tm.TotalMS == nil {
			t.Errorf("timings incomplete: %+v", tm)
		}
		// One call per model (the 401 is not retried), one synthesis (the
		// narrative model by default) and one analysis (the extraction
		// model).
		st := simStats(t, e)
		for m, want := range map[string]int64{ensAlpha: 1, ensBeta: 1, ensBad: 1, modelNarrative: 1, modelExtract: 1} {
			if got := st.Models[m].Requests; got != want {
				t.Errorf("%s got %d requests, want %d", m, got, want)
			}
		}
	})

	t.Run("asked again: answers, then the whole job from the caches", func(t *testing.T) {
		if first.Status != client.StatusPartial {
			t.Skip("the first ask did not end as it should")
		}
		base := simStats(t, e)
		// The third model still fails: its answer is asked again (a
		// failure is never cached) and the two others come from the member
		// cache. The aggregation runs again: a job with a member missing
		// neither reads nor writes the result cache, whose entries are
		// made of every member's answer.
		acc := ensemble(t, e, client.EnsembleRequest{Question: "  " + q + " ", Models: models})
		if acc.Cached || acc.CachedSnapshots != 2 {
			t.Fatalf("repeat with a model still failing: %+v, want 2 answers from the cache", acc)
		}
		evs := collect(t, e, acc.JobID)
		checkEnsembleOrder(t, evs, 3)
		if got := terminalStatus(t, evs); got != "partial" {
			t.Fatalf("status %s, want partial", got)
		}
		for _, ev := range evs {
			switch ev.Name {
			case client.EventAnswerCompleted:
				if !cachedFlag(t, ev) {
					t.Errorf("answer %d not marked cached: %s", memberIndex(t, ev), ev.Data)
				}
			case client.EventAnswerStarted:
				var d client.AnswerStartedData
				_ = ev.Decode(&d)
				if d.Index < 2 && (!d.Cached || d.Attempt != 0) {
					t.Errorf("cached answer.started %+v, want cached with attempt 0", d)
				}
			}
		}
		v := jobView(t, e, acc.JobID)
		for i, a := range v.Answers {
			if a.Cached != (i < 2) || (i < 2 && a.Text != first.Answers[i].Text) {
				t.Errorf("answer %d: cached %v, text %q; want the first job's, cached", i, a.Cached, a.Text)
			}
		}
		if v.Synthesis == "" || v.Analysis == nil {
			t.Errorf("repeat: synthesis %q, analysis %v", v.Synthesis, v.Analysis)
		}
		st := simStats(t, e)
		for m, want := range map[string]int64{ensAlpha: 0, ensBeta: 0, ensBad: 1, modelNarrative: 1, modelExtract: 1} {
			if got := st.Models[m].Requests - base.Models[m].Requests; got != want {
				t.Errorf("the repeat made %d calls of %s, want %d", got, m, want)
			}
		}

		// The provider takes the third model again: one call for it, and
		// a new aggregation over the three answers.
		if _, err := ctl.ClearFaults(context.Background(), ensBad); err != nil {
			t.Fatal(err)
		}
		base = simStats(t, e)
		acc = ensemble(t, e, client.EnsembleRequest{Question: q, Models: models})
		if acc.Cached || acc.CachedSnapshots != 2 {
			t.Fatalf("repeat with all models up: %+v, want 2 answers from the cache", acc)
		}
		evs = collect(t, e, acc.JobID)
		checkEnsembleOrder(t, evs, 3)
		if got := terminalStatus(t, evs); got != "completed" {
			t.Fatalf("status %s, want completed", got)
		}
		var ad client.AnalysisData
		for _, ev := range evs {
			if ev.Name == client.EventAnalysisCompleted {
				_ = ev.Decode(&ad)
			}
		}
		checkAnalysis(t, ad.Analysis, models)
		st = simStats(t, e)
		for m, want := range map[string]int64{ensAlpha: 0, ensBeta: 0, ensBad: 1, modelNarrative: 1, modelExtract: 1} {
			if got := st.Models[m].Requests - base.Models[m].Requests; got != want {
				t.Errorf("the repeat with all models up made %d calls of %s, want %d", got, m, want)
			}
		}

		// Now everything is cached: the job is served whole, at once, with
		// the whole protocol and no call.
		base = st
		acc = ensemble(t, e, client.EnsembleRequest{Question: q, Models: models})
		if !acc.Cached || acc.Status != client.StatusCompleted || acc.CachedSnapshots != 3 {
			t.Fatalf("third ask: %+v, want a job served wholly from the caches", acc)
		}
		evs = collect(t, e, acc.JobID)
		checkEnsembleOrder(t, evs, 3)
		for _, ev := range evs {
			switch ev.Name {
			case client.EventJobCompleted, client.EventAnswerCompleted, client.EventSynthesisCompleted, client.EventAnalysisCompleted:
				if !cachedFlag(t, ev) {
					t.Errorf("%s of the cached job is not marked cached: %s", ev.Name, ev.Data)
				}
			}
		}
		if v := jobView(t, e, acc.JobID); !v.Cached || v.Synthesis == "" || v.Analysis == nil {
			t.Errorf("cached job view: cached %v, synthesis %q, analysis %v", v.Cached, v.Synthesis, v.Analysis)
		}
		if st := simStats(t, e); st.Total.Requests != base.Total.Requests {
			t.Errorf("the cached job made %d calls, want none", st.Total.Requests-base.Total.Requests)
		}

		// Another ensemble sharing a model and the question shares that
		// model's answer.
		base = simStats(t, e)
		acc = ensemble(t, e, client.EnsembleRequest{Question: q, Models: []string{ensBeta, modelSnapshot}})
		if acc.Cached || acc.CachedSnapshots != 1 {
			t.Fatalf("an ensemble sharing one model: %+v, want its answer from the cache", acc)
		}
		if got := terminalStatus(t, collect(t, e, acc.JobID)); got != "completed" {
			t.Fatalf("status %s, want completed", got)
		}
		st = simStats(t, e)
		if n := st.Models[ensBeta].Requests - base.Models[ensBeta].Requests; n != 0 {
			t.Errorf("the shared model was asked %d times, want 0", n)
		}
		if n := st.Models[modelSnapshot].Requests - base.Models[modelSnapshot].Requests; n != 1 {
			t.Errorf("the new model was asked %d times, want 1", n)
		}
	})

	t.Run("every member fails: failed", func(t *testing.T) {
		failEvery(t, ctl, ensBad)
		failEvery(t, ctl, ensBad2)
		t.Cleanup(func() { _, _ = ctl.ClearFaults(context.Background(), ensBad, ensBad2) })
		acc := ensemble(t, e, client.EnsembleRequest{Question: "Is anyone there?", Models: []string{ensBad, ensBad2}})
		evs := collect(t, e, acc.JobID)
		ended := checkEnsembleOrder(t, evs, 2)
		if got := terminalStatus(t, evs); got != "failed" || len(ended[client.EventAnswerFailed]) != 2 {
			t.Fatalf("status %s, answers ended %v; want failed with both answers failed: %v", got, ended, names(evs))
		}
		if n := countNamed(evs, client.EventSynthesisDelta) + countNamed(evs, client.EventSynthesisCompleted) + countNamed(evs, client.EventAnalysisCompleted); n != 0 {
			t.Errorf("%d synthesis or analysis events in a job without answers: %v", n, names(evs))
		}
	})

	t.Run("cancel stops the running answers and ends the job", func(t *testing.T) {
		// Two fast models and the 20 s one: cancel once the fast ones are
		// done and the slow one is running.
		ms := []string{ensAlpha, ensBeta, modelSlow}
		acc := ensemble(t, e, client.EnsembleRequest{Question: "Will this ensemble be canceled?", Models: ms})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var evs []client.Event
		completed, slowStarted, canceled := 0, false, false
		_, err := e.api.Events(ctx, acc.JobID, "", func(ev client.Event) error {
			evs = append(evs, ev)
			switch ev.Name {
			case client.EventAnswerCompleted:
				completed++
			case client.EventAnswerStarted:
				slowStarted = slowStarted || memberIndex(t, ev) == 2
			}
			if completed == 2 && slowStarted && !canceled {
				canceled = true
				v, err := e.api.Cancel(ctx, acc.JobID)
				if err != nil {
					return err
				}
				if v.Status != client.StatusCanceled {
					return fmt.Errorf("cancel answered status %s", v.Status)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !canceled {
			t.Fatalf("the job ended before the test could cancel it: %v", names(evs))
		}
		checkEnsembleOrder(t, evs, 3)
		if got := terminalStatus(t, evs); got != "canceled" {
			t.Fatalf("terminal status %s, want canceled", got)
		}
		for _, ev := range evs {
			if strings.HasPrefix(ev.Name, "synthesis.") || strings.HasPrefix(ev.Name, "analysis.") || ev.Name == client.EventAnswerCompleted && memberIndex(t, ev) == 2 {
				t.Fatalf("%s in a job canceled while its slow answer ran: %v", ev.Name, names(evs))
			}
		}
		// The slow call stops long before it would end by itself, and
		// nothing is added to the stream after job.completed.
		waitUntil(t, 10*time.Second, func() bool { return simStats(t, e).Models[modelSlow].InFlight == 0 })
		if after := collect(t, e, acc.JobID); fmt.Sprint(ids(after)) != fmt.Sprint(ids(evs)) {
			t.Fatalf("the stream changed after the cancel:\n was %v\n now %v", names(evs), names(after))
		}
		v := jobView(t, e, acc.JobID)
		if v.Status != client.StatusCanceled || v.Answers[2].Status != client.SnapshotCanceled ||
			v.Answers[0].Status != client.SnapshotCompleted || v.Synthesis != "" || v.Analysis != nil {
			t.Fatalf("canceled view: status %s, answers %+v, synthesis %q, analysis %v", v.Status, v.Answers, v.Synthesis, v.Analysis)
		}
		if _, err := e.api.Cancel(ctx, acc.JobID); !client.IsCode(err, "job_finished") {
			t.Fatalf("second cancel: %v, want job_finished", err)
		}
	})
}

// checkAnalysis asserts that the parsed analysis has a point of consensus,
// disagreements whose positions name exactly the models that answered, and
// unique claims by those models only.
func checkAnalysis(t *testing.T, a client.Analysis, answered []string) {
	t.Helper()
	if len(a.Consensus) == 0 || len(a.Disagreements) == 0 || len(a.UniqueClaims) == 0 {
		t.Fatalf("analysis %+v: want consensus, disagreements and unique claims", a)
	}
	for _, d := range a.Disagreements {
		var who []string
		for _, p := range d.Positions {
			if p.Position == "" {
				t.Errorf("disagreement %q: empty position of %s", d.Topic, p.Model)
			}
			who = append(who, p.Model)
		}
		if d.Topic == "" || !slices.Equal(who, answered) {
			t.Errorf("disagreement %q names %v, want the models that answered, %v", d.Topic, who, answered)
		}
	}
	for _, c := range a.UniqueClaims {
		if !slices.Contains(answered, c.Model) || c.Claim == "" {
			t.Errorf("unique claim %+v, want one of %v's", c, answered)
		}
	}
}

// An ensemble whose deadline passes while one model is still answering
// ends with what it has, as time travel does: partial, the slow answer
// expired, the synthesis and the analysis over the answers that came.
//
// The aggregation is scheduled a quarter of the job's time before the
// deadline (tasks.AggregateAt), on asynq's scheduled set, whose times
// are whole seconds polled every second: it may start up to about a second
// either side of that. An 8 s deadline keeps 2 s, enough for the
// aggregation's 100 ms calls whichever second it starts in.
func TestEnsembleDeadline(t *testing.T) {
	t.Parallel()
	const deadline = 8 * time.Second
	e := startStack(t, 1, withEnv(ensembleAPIEnv, map[string]string{"JOB_DEADLINE": deadline.String()}), nil)
	models := []string{ensAlpha, ensBeta, modelSlow}
	start := time.Now()
	acc := ensemble(t, e, client.EnsembleRequest{Question: "What will the deadline leave?", Models: models})
	evs := collect(t, e, acc.JobID)
	took := time.Since(start)
	ended := checkEnsembleOrder(t, evs, 3)
	if got := terminalStatus(t, evs); got != "partial" {
		t.Fatalf("status %s, want partial: %v", got, names(evs))
	}
	// Ended by the deadline, not by the 20 s answer.
	if took > deadline+5*time.Second {
		t.Errorf("the job took %s with a %s deadline", took, deadline)
	}
	if slices.Contains(ended[client.EventAnswerCompleted], 2) {
		t.Fatalf("the 20 s answer completed within a %s deadline: %v", deadline, names(evs))
	}
	v := jobView(t, e, acc.JobID)
	if v.Status != client.StatusPartial || v.Answers[2].Status != client.SnapshotExpired ||
		v.Answers[0].Status != client.SnapshotCompleted || v.Answers[1].Status != client.SnapshotCompleted {
		t.Fatalf("view: status %s, answers %+v", v.Status, v.Answers)
	}
	if v.Synthesis == "" || !strings.Contains(v.Synthesis, "the 2 answers") || v.Analysis == nil {
		t.Fatalf("view: synthesis %q, analysis %v; want both over the two answers", v.Synthesis, v.Analysis)
	}
	checkAnalysis(t, *v.Analysis, models[:2])
	if !strings.Contains(strings.Join(v.Errors, "\n"), "deadline") {
		t.Errorf("errors %v do not say the deadline passed", v.Errors)
	}
}
