package events_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/events"
)

func TestEventNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ got, want string }{
		{events.MemberEvent("snapshot", events.VerbStarted), "snapshot.started"},
		{events.MemberEvent("snapshot", events.VerbDelta), "snapshot.delta"},
		{events.MemberEvent("answer", events.VerbCompleted), "answer.completed"},
		{events.MemberEvent("snapshot", events.VerbFailed), "snapshot.failed"},
		{events.PartEvent("key_changes", events.VerbCompleted), "key_changes.completed"},
		{events.PartEvent("narrative", events.VerbDelta), "narrative.delta"},
		{events.PartEvent("narrative", events.VerbFailed), "narrative.failed"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestAcceptedPayload(t *testing.T) {
	t.Parallel()
	common := events.AcceptedData{JobID: "j1", Kind: "timetravel", Question: "q?", Deadline: "2025-01-01T00:00:00Z"}
	tests := []struct {
		name  string
		extra string
		want  map[string]any
	}{
		{"no extra", "", map[string]any{"job_id": "j1", "kind": "timetravel", "question": "q?", "deadline": "2025-01-01T00:00:00Z"}},
		{"null", "null", map[string]any{"job_id": "j1", "kind": "timetravel", "question": "q?", "deadline": "2025-01-01T00:00:00Z"}},
		{"kind's fields beside the common ones; a common name is not overridden",
			`{"complexity":"standard","time_points":[{"index":0,"date":"2023-01-01","label":"January 2023"}],"job_id":"other"}`,
			map[string]any{
				"job_id": "j1", "kind": "timetravel", "question": "q?", "deadline": "2025-01-01T00:00:00Z",
				"complexity":  "standard",
				"time_points": []any{map[string]any{"index": 0.0, "date": "2023-01-01", "label": "January 2023"}},
			}},
	}
	for _, tt := range tests {
		b, err := events.AcceptedPayload(common, json.RawMessage(tt.extra))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %s: %v", tt.name, b, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %s, want %v", tt.name, b, tt.want)
		}
	}
	c := common
	c.Model, c.Cached = "m1", true
	b, err := events.AcceptedPayload(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(b, &got)
	if got["model"] != "m1" || got["cached"] != true {
		t.Errorf("payload %s lacks the model or cached", b)
	}
	if _, err := events.AcceptedPayload(common, json.RawMessage(`[1]`)); err == nil {
		t.Error("extra fields that are not an object were accepted")
	}
}
