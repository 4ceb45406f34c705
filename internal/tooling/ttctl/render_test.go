package ttctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/client"
)

// e makes an event whose data is v marshalled.
func e(name string, v any) client.Event {
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		b, _ = json.Marshal(v)
	}
	return client.Event{ID: "x", Name: name, Data: b}
}

func acceptedEvent(labels ...string) client.Event {
	d := client.JobAcceptedData{JobID: "job-1", Question: "Best AI models?", Model: "gpt-4o", Complexity: "brief"}
	for i, l := range labels {
		d.TimePoints = append(d.TimePoints, client.TimePointRef{Index: i, Date: fmt.Sprintf("202%d-01-01", i+3), Label: l})
	}
	return e(client.EventJobAccepted, d)
}

func started(i, attempt int) client.Event {
	return e(client.EventSnapshotStarted, client.SnapshotStartedData{Index: i, Attempt: attempt})
}

func delta(i int, text string) client.Event {
	return e(client.EventSnapshotDelta, client.SnapshotDeltaData{Index: i, Text: text})
}

func snapDone(i int, text string, d int64) client.Event {
	return e(client.EventSnapshotCompleted, client.SnapshotCompletedData{Index: i, Text: text, DurationMS: d, Model: "gpt-4o"})
}

func TestRenderer(t *testing.T) {
	tests := []struct {
		name   string
		events []client.Event
		want   string
	}{
		{
			name: "concurrent snapshots do not interleave",
			events: []client.Event{
				acceptedEvent("Jan 2023", "Jan 2024"),
				started(0, 1), started(1, 1),
				delta(1, "Later "), delta(0, "Early "), delta(1, "text."), delta(0, "text."),
				snapDone(1, "Later text.", 900), snapDone(0, "Early text.", 1500),
				e(client.EventNarrativeDelta, client.TextData{Text: "It "}),
				e(client.EventKeyChangesCompleted, client.KeyChangesData{KeyChanges: []client.KeyChange{
					{From: "2023-01-01", To: "2024-01-01", FromLabel: "Jan 2023", ToLabel: "Jan 2024", Changes: []string{"A", "B"}},
				}}),
				e(client.EventNarrativeDelta, client.TextData{Text: "changed."}),
				e(client.EventNarrativeCompleted, client.TextData{Text: "It changed."}),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-1", Status: client.StatusCompleted}),
			},
			want: `Job job-1
Question: Best AI models?
model gpt-4o · brief · 2 time points

== Jan 2023 (2023-01-01) ==
Early text.
-- done in 1.5s · gpt-4o

== Jan 2024 (2024-01-01) ==
Later text.
-- done in 900ms · gpt-4o

== Narrative ==
It changed.

== Key changes ==
Jan 2023 → Jan 2024
  - A
  - B

== Job completed ==
`,
		},
		{
			name: "aggregation restarted: the dead attempt's narrative is dropped",
			events: []client.Event{
				acceptedEvent("Jan 2023"),
				started(0, 1), delta(0, "Text."), snapDone(0, "Text.", 1000),
				e(client.EventAggregateStarted, client.AggregateStartedData{Attempt: 1}),
				e(client.EventNarrativeDelta, client.TextData{Text: "Dead "}),
				e(client.EventAggregateStarted, client.AggregateStartedData{Attempt: 2}),
				e(client.EventNarrativeDelta, client.TextData{Text: "Alive."}),
				e(client.EventNarrativeCompleted, client.TextData{Text: "Alive."}),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-1", Status: client.StatusCompleted}),
			},
			want: `Job job-1
Question: Best AI models?
model gpt-4o · brief · 1 time point

== Jan 2023 (2023-01-01) ==
Text.
-- done in 1.0s · gpt-4o

== Narrative ==
Dead 
[aggregation restarted, attempt 2]
Alive.

== Job completed ==
`,
		},
		{
			name: "retry, failure, missing deltas, failed aggregation",
			events: []client.Event{
				acceptedEvent("A", "B", "C"),
				started(0, 1), delta(0, "first try"),
				started(1, 1), delta(1, "b1"),
				started(0, 2), delta(0, "second"),
				started(1, 2), delta(1, "b2"),
				snapDone(0, "second try", 2000),
				snapDone(1, "b2 final", 61_000),
				e(client.EventSnapshotFailed, client.SnapshotFailedData{Index: 2, Error: "rate limited"}),
				e(client.EventKeyChangesFailed, client.FailedData{Error: "bad JSON"}),
				e(client.EventNarrativeCompleted, client.TextData{Text: "No deltas came."}),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-1", Status: client.StatusPartial}),
			},
			want: `Job job-1
Question: Best AI models?
model gpt-4o · brief · 3 time points

== A (2023-01-01) ==
first try
[attempt 1 failed; retrying, attempt 2]
second try
-- done in 2.0s · gpt-4o

== B (2024-01-01) ==
[attempt 2]
b2 final
-- done in 1m01s · gpt-4o

== C (2025-01-01) ==
-- FAILED: rate limited

== Key changes ==
-- FAILED: bad JSON

== Narrative ==
No deltas came.

== Job partial ==
`,
		},
		{
			name: "canceled job ends open sections",
			events: []client.Event{
				acceptedEvent("A", "B"),
				started(0, 1), delta(0, "half"),
				e(client.EventJobCompleted, client.JobCompletedData{JobID: "job-1", Status: client.StatusCanceled, Error: "canceled by client"}),
			},
			want: `Job job-1
Question: Best AI models?
model gpt-4o · brief · 2 time points

== A (2023-01-01) ==
half
-- incomplete

== B (2024-01-01) ==
-- not answered

== Job canceled ==
Error: canceled by client
`,
		},
		{
			name: "no job.accepted: sections made on the fly",
			events: []client.Event{
				delta(0, "x"),
				snapDone(0, "x", 5),
				e("some.future.event", "{}"),
				e(client.EventJobCompleted, client.JobCompletedData{Status: client.StatusCompleted}),
			},
			want: `
== Snapshot 1 ==
x
-- done in 5ms · gpt-4o

== Job completed ==
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
			if r.Final() == nil {
				t.Error("no final event")
			}
		})
	}
}

func diffAt(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRendererStreamsLive checks that the live snapshot's deltas are written
// at once, and another snapshot's only when its turn comes.
func TestRendererStreamsLive(t *testing.T) {
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
	step(acceptedEvent("A", "B"), "== A (2023-01-01) ==\n")
	step(delta(0, "one "), "==\none ")
	step(delta(1, "hidden"), "==\none ")
	step(delta(0, "two"), "one two")
	step(snapDone(0, "one two", 10), "one two\n-- done in 10ms · gpt-4o\n\n== B (2024-01-01) ==\nhidden")
	step(delta(1, " more"), "hidden more")
}

func tail(s string) string { return s[max(0, len(s)-40):] }

func TestRendererErrors(t *testing.T) {
	r := NewRenderer(&bytes.Buffer{})
	if err := r.Handle(client.Event{Name: client.EventSnapshotDelta, Data: []byte("{")}); err == nil {
		t.Error("bad data: no error")
	}
	boom := errors.New("broken pipe")
	r = NewRenderer(failWriter{boom})
	if err := r.Handle(acceptedEvent("A")); !errors.Is(err, boom) {
		t.Errorf("write error: %v", err)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestSummary(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	v := client.JobView{
		Status: client.StatusPartial,
		Snapshots: []client.Snapshot{
			{Label: "January 2023", Status: client.SnapshotCompleted},
			{Label: "May 2024", Status: client.SnapshotFailed},
		},
		Timings: client.Timings{QueueWaitMS: p(12), SnapshotsMS: p(3400), SnapshotMS: []int64{2100, 0},
			FanInMS: p(4), KeyChangesMS: p(1100), TotalMS: p(65_000)},
		Errors: []string{"snapshot May 2024: rate limited"},
	}
	var buf bytes.Buffer
	if err := NewRenderer(&buf).Summary(v); err != nil {
		t.Fatal(err)
	}
	want := `
== Summary ==
Status:      partial (1 of 2 snapshots answered)
Queue wait:  12ms
Snapshots:   3.4s (January 2023 2.1s, May 2024 -)
Fan-in:      4ms
Key changes: 1.1s
Narrative:   -
Total:       1m05s
Errors:
  - snapshot May 2024: rate limited
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestExitCode(t *testing.T) {
	for s, want := range map[client.JobStatus]int{
		client.StatusCompleted: 0, client.StatusPartial: 0, client.StatusFailed: 1, client.StatusCanceled: 1, "": 1,
	} {
		if got := ExitCode(s); got != want {
			t.Errorf("%q: %d, want %d", s, got, want)
		}
	}
}

// The expected wait of job.accepted is shown when it is a second or more
// and the job is not served from the caches.
func TestRendererExpectedWait(t *testing.T) {
	ms := func(v int64) *int64 { return &v }
	tests := []struct {
		name   string
		wait   *int64
		cached bool
		want   string
	}{
		{"unknown", nil, false, "model gpt-4o · brief · 1 time point\n"},
		{"no wait to speak of", ms(400), false, "model gpt-4o · brief · 1 time point\n"},
		{"a wait", ms(12_400), false, "model gpt-4o · brief · 1 time point · expected wait for the models about 12 s\n"},
		{"served from the caches", ms(12_400), true, "model gpt-4o · brief · 1 time point · served from the caches\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := acceptedEvent("Jan 2023")
			var d client.JobAcceptedData
			if err := ev.Decode(&d); err != nil {
				t.Fatal(err)
			}
			d.ExpectedWaitMS, d.Cached = tt.wait, tt.cached
			var buf bytes.Buffer
			if err := NewRenderer(&buf).Handle(e(client.EventJobAccepted, d)); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); !strings.Contains(got, tt.want) {
				t.Errorf("got:\n%s\nwant a line %q", got, tt.want)
			}
		})
	}
}
