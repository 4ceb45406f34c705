package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// stream builds events with ids 1-0, 2-0, ... from name/data pairs.
func stream(t *testing.T, pairs ...any) []client.Event {
	t.Helper()
	var evs []client.Event
	for i := 0; i < len(pairs); i += 2 {
		data, err := json.Marshal(pairs[i+1])
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, client.Event{ID: fmt.Sprintf("%d-0", i/2+1), Name: pairs[i].(string), Data: data})
	}
	return evs
}

type m = map[string]any

// accepted is job.accepted with two time points.
var accepted = m{"job_id": "j", "time_points": []m{{"index": 0}, {"index": 1}}}

func TestAuditEvents(t *testing.T) {
	tests := []struct {
		name      string
		evs       []any
		dups      map[string]int
		late      int
		status    string
		faultFree int
	}{
		{
			name: "a clean job",
			evs: []any{
				"job.accepted", accepted,
				"snapshot.started", m{"index": 0, "attempt": 1}, "snapshot.started", m{"index": 1, "attempt": 1},
				"snapshot.delta", m{"index": 0, "text": "a"}, "snapshot.completed", m{"index": 0, "text": "a"},
				"snapshot.completed", m{"index": 1, "text": "b"},
				"key_changes.completed", m{"key_changes": []m{}},
				"narrative.delta", m{"text": "Once "}, "narrative.delta", m{"text": "upon."},
				"narrative.completed", m{"text": "Once upon."},
				"job.completed", m{"status": "completed"},
				"webhook.delivered", m{"attempts": 1},
			},
			status: "completed", faultFree: 4,
		},
		{
			name: "a snapshot attempt that died and started again ends once per attempt",
			evs: []any{
				"job.accepted", accepted,
				"snapshot.started", m{"index": 0, "attempt": 1}, "snapshot.delta", m{"index": 0, "text": "x"},
				"snapshot.started", m{"index": 0, "attempt": 2}, "snapshot.completed", m{"index": 0},
				"snapshot.failed", m{"index": 1},
				"job.completed", m{"status": "partial"},
			},
			status: "partial", faultFree: 4,
		},
		{
			name: "a snapshot that ends twice in one attempt",
			evs: []any{
				"job.accepted", accepted,
				"snapshot.started", m{"index": 0}, "snapshot.completed", m{"index": 0}, "snapshot.completed", m{"index": 0},
				"job.completed", m{"status": "completed"},
			},
			dups: map[string]int{DupSnapshotEnd: 1}, status: "completed", faultFree: 4,
		},
		{
			name: "an aggregation re-run without a restart event",
			evs: []any{
				"job.accepted", accepted,
				"key_changes.failed", m{"error": "bad answer"},
				"narrative.delta", m{"text": "The first"},
				"key_changes.failed", m{"error": "bad answer"},
				"narrative.delta", m{"text": "The story."},
				"narrative.completed", m{"text": "The story."},
				"narrative.completed", m{"text": "The story."},
				"job.completed", m{"status": "partial"},
			},
			dups:   map[string]int{DupKeyChanges: 1, DupNarrative: 1, DupNarrativeText: 1},
			status: "partial", faultFree: 4,
		},
		{
			name: "an aggregation re-run announced by aggregate.started voids the earlier text",
			evs: []any{
				"job.accepted", accepted,
				"aggregate.started", m{"attempt": 1},
				"narrative.delta", m{"text": "The fir"},
				"aggregate.started", m{"attempt": 2},
				"key_changes.completed", m{"key_changes": []m{}},
				"narrative.delta", m{"text": "The story."},
				"narrative.completed", m{"text": "The story."},
				"job.completed", m{"status": "completed"},
			},
			status: "completed", faultFree: 4,
		},
		{
			name: "key changes twice across a restart event are still a duplicate",
			evs: []any{
				"job.accepted", accepted,
				"aggregate.started", m{"attempt": 1},
				"key_changes.completed", m{"key_changes": []m{}},
				"aggregate.started", m{"attempt": 2},
				"key_changes.completed", m{"key_changes": []m{}},
				"narrative.completed", m{"text": "n"},
				"job.completed", m{"status": "completed"},
			},
			dups: map[string]int{DupKeyChanges: 1}, status: "completed", faultFree: 4,
		},
		{
			name: "a second terminal event and a late write after the first",
			evs: []any{
				"job.accepted", accepted,
				"job.completed", m{"status": "partial"},
				"snapshot.completed", m{"index": 0},
				"job.completed", m{"status": "completed"},
			},
			dups: map[string]int{DupJobEnd: 1}, late: 2, status: "partial", faultFree: 4,
		},
		{
			name: "cached answers need no provider call",
			evs: []any{
				"job.accepted", accepted,
				"snapshot.started", m{"index": 0, "cached": true}, "snapshot.completed", m{"index": 0, "cached": true},
				"snapshot.started", m{"index": 1}, "snapshot.completed", m{"index": 1},
				"key_changes.completed", m{"cached": true}, "narrative.delta", m{"text": "n"},
				"narrative.completed", m{"text": "n", "cached": true},
				"job.completed", m{"status": "completed"},
			},
			status: "completed", faultFree: 1,
		},
		{
			name:      "a job whose data is gone",
			evs:       nil,
			faultFree: 6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := auditEvents(stream(t, tt.evs...))
			want := 0
			for k, n := range tt.dups {
				want += n
				if a.Kinds[k] != n {
					t.Errorf("%s: %d, want %d (kinds %v)", k, a.Kinds[k], n, a.Kinds)
				}
			}
			if a.Duplicates != want || len(a.Kinds) != len(tt.dups) {
				t.Errorf("duplicates %d %v, want %d %v; examples %q", a.Duplicates, a.Kinds, want, tt.dups, a.Examples)
			}
			if a.Late != tt.late || a.Status != tt.status || a.faultFreeCalls() != tt.faultFree {
				t.Errorf("late %d, status %q, fault-free calls %d; want %d, %q, %d", a.Late, a.Status, a.faultFreeCalls(), tt.late, tt.status, tt.faultFree)
			}
		})
	}
}

// An event delivered twice is one duplicate, not also a second end.
func TestAuditSameEventTwice(t *testing.T) {
	evs := stream(t, "job.accepted", accepted, "snapshot.started", m{"index": 0}, "snapshot.completed", m{"index": 0},
		"job.completed", m{"status": "completed"})
	evs = append(evs[:3], evs[2], evs[3])
	a := auditEvents(evs)
	if a.Duplicates != 1 || a.Kinds[DupEventID] != 1 {
		t.Errorf("duplicates %d %v, want one of %q", a.Duplicates, a.Kinds, DupEventID)
	}
}

func TestExactness(t *testing.T) {
	stored := stream(t, "job.accepted", accepted, "snapshot.started", m{"index": 0}, "snapshot.completed", m{"index": 0},
		"job.completed", m{"status": "completed"}, "webhook.delivered", m{})
	pick := func(idx ...int) []client.Event {
		var out []client.Event
		for _, i := range idx {
			out = append(out, stored[i])
		}
		return out
	}
	phantom := client.Event{ID: "9-0", Name: "snapshot.delta"}
	tests := []struct {
		name string
		live []client.Event
		want Exactness
	}{
		{"all once, stopping at job.completed", pick(0, 1, 2, 3), Exactness{}},
		{"a resume that repeats one", pick(0, 1, 1, 2, 3), Exactness{Duplicates: 1}},
		{"a resume that skips one", pick(0, 2, 3), Exactness{Missing: 1}},
		{"one lost by Redis after it was sent", append(pick(0, 1), phantom, stored[2], stored[3]), Exactness{Phantom: 1}},
		{"out of order", pick(0, 2, 1, 3), Exactness{Reordered: true}},
		{"a reader that never finished", pick(0), Exactness{Missing: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exactness(tt.live, stored)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.Exact() != (tt.want == Exactness{}) {
				t.Errorf("Exact() = %v", got.Exact())
			}
		})
	}
}

func TestIsStuck(t *testing.T) {
	deadline := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	after := deadline.Add(stuckGrace + time.Millisecond)
	tests := []struct {
		status  string
		lost    bool
		checked time.Time
		want    bool
	}{
		{"completed", false, after, false},
		{"partial", false, after, false},
		{"failed", false, after, false},
		{"canceled", false, after, false},
		{"aggregating", false, after, true},
		{"running", false, after, true},
		{"unknown (api: 503)", false, after, true},
		{"", true, after, false},                                    // lost, not stuck
		{"running", false, deadline.Add(stuckGrace), false},         // still within its grace
		{"queued", false, deadline.Add(-time.Second), false},        // before its deadline
		{"aggregating", false, deadline.Add(2 * time.Second), true}, // past it
		{"completed", false, deadline.Add(-time.Second), false},     // ended in time
		{"partial", false, deadline.Add(time.Hour), false},          // ended, whenever checked
		{"running", true, deadline.Add(time.Hour), false},           // 404 wins
		{"running", false, deadline.Add(time.Hour + time.Nanosecond), true},
	}
	for _, tt := range tests {
		if got := isStuck(tt.status, tt.lost, deadline, tt.checked); got != tt.want {
			t.Errorf("isStuck(%q, lost %v, checked %s after the deadline) = %v, want %v",
				tt.status, tt.lost, tt.checked.Sub(deadline), got, tt.want)
		}
	}
}

func TestParseBreakerMax(t *testing.T) {
	text := `# HELP timetravel_llm_breaker_state Breaker state.
# TYPE timetravel_llm_breaker_state gauge
timetravel_llm_breaker_state{model="sim-extract",provider="default"} 0
timetravel_llm_breaker_state{model="sim-snapshot",provider="default"} 2
timetravel_llm_breaker_state_other 7
timetravel_llm_breaker_wait_seconds_count 9
`
	got, err := parseBreakerMax(strings.NewReader(text))
	if err != nil || got != 2 {
		t.Errorf("got %v, %v; want 2", got, err)
	}
	if got, _ := parseBreakerMax(strings.NewReader("up 1\n")); got != 0 {
		t.Errorf("no breaker series: got %v", got)
	}
}

func TestTokenOfPrompt(t *testing.T) {
	body, _ := json.Marshal(m{"model": "sim-narrative", "messages": []m{{"role": "user", "content": "Question: " + question(12) + "\n\n=== ..."}}})
	if got := tokenOf(body); got != 12 {
		t.Errorf("token %d, want 12", got)
	}
	if got := tokenOf([]byte(`{"messages":[]}`)); got != -1 {
		t.Errorf("no token: got %d", got)
	}
}

func TestMarkdownRow(t *testing.T) {
	rep := &Report{When: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Machine: "m", Command: "chaos", Rows: []*Row{
		{Scenario: "s", Description: "d.", Accepted: 3, Ended: map[string]int{"completed": 2, "partial": 1}, Duplicates: 1,
			DuplicateKinds: map[string]int{DupKeyChanges: 1}, ProviderCalls: 20, FaultFreeCalls: 18,
			Recovery: Recovery{Definition: "def", Text: "p50 1.0 s / p95 2.0 s (n=3)"},
			Checks:   []Check{{Name: "c", Pass: true, Got: "g"}}},
	}}
	var b bytes.Buffer
	rep.Markdown(&b)
	want := "| s | 3 | 2 | 1 | 0 | 0 | 0 | 1 | 20 (18) | p50 1.0 s / p95 2.0 s (n=3) | PASS | FAIL | PASS | FAIL |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table lacks\n%s\n%s", want, b.String())
	}
	if rep.Pass() {
		t.Error("a row with a duplicate passes")
	}
}
