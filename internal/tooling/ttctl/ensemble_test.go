package ttctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/timetravel-ai/timetravel/client"
)

var ensModels = []string{"sim-alpha", "sim-beta", "sim-bad"}

func ensAccepted(cached bool) client.Event {
	return e(client.EventJobAccepted, client.JobAcceptedData{JobID: "job-2", Kind: client.KindEnsemble,
		Question: "Which language first?", Models: ensModels, Cached: cached})
}

func ansStarted(i, attempt int) client.Event {
	return e(client.EventAnswerStarted, client.AnswerStartedData{Index: i, Label: ensModels[i], Attempt: attempt})
}

func ansDelta(i int, text string) client.Event {
	return e(client.EventAnswerDelta, client.SnapshotDeltaData{Index: i, Text: text})
}

func ansDone(i int, text string, d int64) client.Event {
	return e(client.EventAnswerCompleted, client.AnswerCompletedData{Index: i, Label: ensModels[i], Model: ensModels[i], Text: text, DurationMS: d})
}

var ensAnalysis = client.Analysis{
	Consensus: []string{"Python is easy to start with."},
	Disagreements: []client.Disagreement{{Topic: "typing", Positions: []client.Position{
		{Model: "sim-alpha", Position: "dynamic typing helps"}, {Model: "sim-beta", Position: "static typing teaches more"}}}},
	UniqueClaims: []client.Claim{{Model: "sim-beta", Claim: "Go compiles fast"}},
}

// ensStream is a partial ensemble: two answers stream concurrently, the
// third model fails, the analysis ends before the synthesis.
func ensStream() []client.Event {
	return []client.Event{
		ensAccepted(false),
		ansStarted(0, 1), ansStarted(1, 1), ansStarted(2, 1),
		ansDelta(1, "Go, "), ansDelta(0, "Python, "), ansDelta(1, "surely."), ansDelta(0, "of course."),
		e(client.EventAnswerFailed, client.AnswerFailedData{Index: 2, Label: "sim-bad", Error: "provider answered 401 (authentication failed)"}),
		ansDone(1, "Go, surely.", 800), ansDone(0, "Python, of course.", 1200),
		e(client.EventAggregateStarted, client.AggregateStartedData{Attempt: 1}),
		e(client.EventSynthesisDelta, client.TextData{Text: "Start with "}),
		e(client.EventAnalysisCompleted, client.AnalysisData{Analysis: ensAnalysis}),
		e(client.EventSynthesisDelta, client.TextData{Text: "Python."}),
		e(client.EventSynthesisCompleted, client.TextData{Text: "Start with Python."}),
		e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-2", Status: client.StatusPartial, Error: "1 of 3 answers missing: sim-bad failed"}),
	}
}

const ensRendered = `Job job-2
Question: Which language first?
ensemble of sim-alpha, sim-beta, sim-bad

== sim-alpha ==
Python, of course.
-- done in 1.2s · sim-alpha

== sim-beta ==
Go, surely.
-- done in 800ms · sim-beta

== sim-bad ==
-- FAILED: provider answered 401 (authentication failed)

== Synthesis ==
Start with Python.

== Analysis ==
Consensus:
  - Python is easy to start with.
Disagreements:
  - typing
      sim-alpha: dynamic typing helps
      sim-beta: static typing teaches more
Unique claims:
  - sim-beta: Go compiles fast

== Job partial ==
Error: 1 of 3 answers missing: sim-bad failed
`

func TestRendererEnsemble(t *testing.T) {
	tests := []struct {
		name   string
		events []client.Event
		want   string
	}{
		{name: "answers labelled by model, then synthesis, then analysis", events: ensStream(), want: ensRendered},
		{
			name: "served from the caches, nothing to compare",
			events: []client.Event{
				ensAccepted(true),
				e(client.EventAnswerStarted, client.AnswerStartedData{Index: 0, Label: "sim-alpha", Cached: true}),
				e(client.EventAnswerDelta, client.SnapshotDeltaData{Index: 0, Text: "A."}),
				e(client.EventAnswerCompleted, client.AnswerCompletedData{Index: 0, Label: "sim-alpha", Model: "sim-alpha", Text: "A.", Cached: true}),
				e(client.EventAnswerFailed, client.AnswerFailedData{Index: 1, Label: "sim-beta", Error: "deadline passed"}),
				e(client.EventAnalysisCompleted, client.AnalysisData{Analysis: client.Analysis{}, Cached: true}),
				e(client.EventSynthesisFailed, client.FailedData{Error: "timeout"}),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-2", Status: client.StatusPartial}),
			},
			want: `Job job-2
Question: Which language first?
ensemble of sim-alpha, sim-beta, sim-bad · served from the caches

== sim-alpha ==
A.
-- from the cache · sim-alpha

== sim-beta ==
-- FAILED: deadline passed

== sim-bad ==
-- not answered

== Synthesis ==
-- FAILED: timeout

== Analysis ==
Consensus:
  (none)
Disagreements:
  (none)
Unique claims:
  (none)
-- from the cache

== Job partial ==
`,
		},
		{
			name: "aggregation restarted: the dead attempt's synthesis is dropped",
			events: []client.Event{
				ensAccepted(false),
				ansStarted(0, 1), ansDone(0, "A.", 10),
				e(client.EventAnswerFailed, client.AnswerFailedData{Index: 1, Error: "x"}),
				e(client.EventAnswerFailed, client.AnswerFailedData{Index: 2, Error: "y"}),
				e(client.EventSynthesisDelta, client.TextData{Text: "Dead "}),
				e(client.EventAggregateStarted, client.AggregateStartedData{Attempt: 2}),
				e(client.EventSynthesisDelta, client.TextData{Text: "Alive."}),
				e(client.EventSynthesisCompleted, client.TextData{Text: "Alive."}),
				e(client.EventAnalysisFailed, client.FailedData{Error: "bad JSON"}),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-2", Status: client.StatusPartial}),
			},
			want: `Job job-2
Question: Which language first?
ensemble of sim-alpha, sim-beta, sim-bad

== sim-alpha ==
A.
-- done in 10ms · sim-alpha

== sim-beta ==
-- FAILED: x

== sim-bad ==
-- FAILED: y

== Synthesis ==
Dead 
[aggregation restarted, attempt 2]
Alive.

== Analysis ==
-- FAILED: bad JSON

== Job partial ==
`,
		},
		{
			name: "canceled while a model answers",
			events: []client.Event{
				ensAccepted(false),
				ansStarted(0, 1), ansStarted(2, 1), ansDone(0, "A.", 10), ansDelta(2, "half"),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-2", Status: client.StatusCanceled, Error: "canceled by client"}),
			},
			want: `Job job-2
Question: Which language first?
ensemble of sim-alpha, sim-beta, sim-bad

== sim-alpha ==
A.
-- done in 10ms · sim-alpha

== sim-beta ==
-- not answered

== sim-bad ==
half
-- incomplete

== Job canceled ==
Error: canceled by client
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			r := NewRenderer(&buf)
			for _, ev := range tt.events {
				if err := r.Handle(ev); err != nil {
					t.Fatal(err)
				}
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s\ndiff at byte %d", got, tt.want, diffAt(got, tt.want))
			}
		})
	}
}

// TestRendererEnsembleStreamsLive checks that the live answer's deltas are
// written at once, the next model's when its turn comes, and the analysis
// only after the synthesis it arrived during.
func TestRendererEnsembleStreamsLive(t *testing.T) {
	var buf bytes.Buffer
	r := NewRenderer(&buf)
	step := func(ev client.Event, wantSuffix string) {
		t.Helper()
		if err := r.Handle(ev); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(buf.String(), wantSuffix) {
			t.Fatalf("after %s: output ends %q, want suffix %q", ev.Name, tail(buf.String()), wantSuffix)
		}
	}
	step(ensAccepted(false), "== sim-alpha ==\n")
	step(ansDelta(0, "one "), "==\none ")
	step(ansDelta(1, "hidden"), "==\none ")
	step(ansDone(0, "one two", 10), "one two\n-- done in 10ms · sim-alpha\n\n== sim-beta ==\nhidden")
	step(ansDone(1, "hidden", 10), "== sim-bad ==\n")
	step(e(client.EventAnswerFailed, client.AnswerFailedData{Index: 2, Error: "x"}), "-- FAILED: x\n")
	step(e(client.EventSynthesisDelta, client.TextData{Text: "Merged "}), "== Synthesis ==\nMerged ")
	step(e(client.EventAnalysisCompleted, client.AnalysisData{Analysis: ensAnalysis}), "== Synthesis ==\nMerged ")
	step(e(client.EventSynthesisDelta, client.TextData{Text: "text."}), "Merged text.")
	step(e(client.EventSynthesisCompleted, client.TextData{Text: "Merged text."}), "  - sim-beta: Go compiles fast\n")
}

func TestEnsembleSummary(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	v := client.JobView{
		Kind:   client.KindEnsemble,
		Status: client.StatusPartial,
		Answers: []client.Member{
			{Label: "sim-alpha", Status: client.SnapshotCompleted},
			{Label: "sim-beta", Status: client.SnapshotCompleted, Cached: true},
			{Label: "sim-bad", Status: client.SnapshotFailed},
		},
		Timings: client.Timings{QueueWaitMS: p(3), AnswersMS: p(1200), AnswerMS: []int64{1200, 0, 0},
			FanInMS: p(2), SynthesisMS: p(900), AnalysisMS: p(300), TotalMS: p(2150)},
		Errors: []string{"1 of 3 answers missing: sim-bad failed"},
	}
	var buf bytes.Buffer
	if err := NewRenderer(&buf).Summary(v); err != nil {
		t.Fatal(err)
	}
	want := `
== Summary ==
Status:      partial (2 of 3 models answered)
Queue wait:  3ms
Answers:     1.2s (sim-alpha 1.2s, sim-beta cached, sim-bad -)
Fan-in:      2ms
Synthesis:   900ms
Analysis:    300ms
Total:       2.1s
Errors:
  - 1 of 3 answers missing: sim-bad failed
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// fakeEnsembleAPI serves one ensemble job that ends with status.
type fakeEnsembleAPI struct {
	status client.JobStatus
	mu     sync.Mutex
	body   map[string]any
}

func (f *fakeEnsembleAPI) server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/ensemble", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		if ms, _ := body["models"].([]any); len(ms) < 2 {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"error":{"code":"invalid_field","message":"an ensemble has 2 to 8 models, got 1","field":"models"}}`)
			return
		}
		f.mu.Lock()
		f.body = body
		f.mu.Unlock()
		w.WriteHeader(202)
		_, _ = io.WriteString(w, `{"job_id":"job-2","status":"queued","links":{}}`)
	})
	mux.HandleFunc("GET /api/jobs/job-2/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		evs := ensStream()
		evs[len(evs)-1] = e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-2", Status: f.status})
		for i, ev := range evs {
			fmt.Fprintf(w, "id: %d-0\nevent: %s\ndata: %s\n\n", i+1, ev.Name, ev.Data)
		}
	})
	mux.HandleFunc("GET /api/jobs/job-2", func(w http.ResponseWriter, r *http.Request) {
		total := int64(2150)
		_ = json.NewEncoder(w).Encode(client.JobView{ID: "job-2", Kind: client.KindEnsemble, Status: f.status, Models: ensModels,
			Answers: []client.Member{{Label: "sim-alpha", Status: client.SnapshotCompleted}, {Label: "sim-beta", Status: client.SnapshotCompleted},
				{Label: "sim-bad", Status: client.SnapshotFailed}},
			Timings: client.Timings{TotalMS: &total}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestEnsembleCommand(t *testing.T) {
	tests := []struct {
		name       string
		status     client.JobStatus
		args       []string
		code       int
		stdout     []string
		stderr     []string
		wantFields map[string]any
	}{
		{name: "partial", status: client.StatusPartial, args: []string{"Which", "language", "first?", "-models", "sim-alpha, sim-beta,sim-bad"}, code: 0,
			stdout: []string{"ensemble of sim-alpha, sim-beta, sim-bad", "== sim-bad ==\n-- FAILED", "== Synthesis ==\nStart with Python.\n\n== Analysis ==",
				"      sim-beta: static typing teaches more", "== Job partial ==", "Status:      partial (2 of 3 models answered)", "Total:       2.1s"},
			wantFields: map[string]any{"question": "Which language first?", "models": []any{"sim-alpha", "sim-beta", "sim-bad"}}},
		{name: "synthesis model and cache", status: client.StatusCompleted,
			args: []string{"-models", "a,b", "-synthesis-model", "m", "-cache", "bypass", "q"}, code: 0,
			wantFields: map[string]any{"models": []any{"a", "b"}, "synthesis_model": "m", "cache": "bypass"}},
		{name: "failed", status: client.StatusFailed, args: []string{"-models", "a,b", "q"}, code: 1, stdout: []string{"== Job failed =="}},
		{name: "no models", args: []string{"q"}, code: 2, stderr: []string{"-models is required"}},
		{name: "empty model", args: []string{"-models", "a,,b", "q"}, code: 2, stderr: []string{"empty model name"}},
		{name: "no question", args: []string{"-models", "a,b"}, code: 2, stderr: []string{"a question is required"}},
		{name: "refused", args: []string{"-models", "a", "q"}, code: 2, stderr: []string{"invalid_field", "2 to 8 models"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeEnsembleAPI{status: tt.status}
			srv := f.server(t)
			var stdout, stderr bytes.Buffer
			code := Main(t.Context(), append([]string{"ensemble", "-api", srv.URL}, tt.args...), noEnv, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for k, want := range tt.wantFields {
				if got := f.body[k]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("request %s = %v, want %v", k, got, want)
				}
			}
		})
	}
}

func TestParseModels(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{" ", nil, false},
		{"a,b", []string{"a", "b"}, false},
		{" a , b ,c", []string{"a", "b", "c"}, false},
		{"a,", nil, true},
		{",a", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseModels(tt.in)
		if (err != nil) != tt.wantErr || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%q: %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestAllowedForDemo(t *testing.T) {
	if got := allowedForDemo("", DemoEnsembleModels); fmt.Sprint(got) != fmt.Sprint(DemoEnsembleModels) {
		t.Errorf("no model: %v", got)
	}
	if got := allowedForDemo("sim-beta", []string{"sim-alpha", "sim-beta"}); fmt.Sprint(got) != "[sim-beta sim-alpha]" {
		t.Errorf("model among the ensemble's: %v", got)
	}
}
