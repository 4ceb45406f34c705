package job

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestStatusTerminal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    Status
		want bool
	}{
		{StatusQueued, false},
		{StatusRunning, false},
		{StatusAggregating, false},
		{StatusCompleted, true},
		{StatusPartial, true},
		{StatusFailed, true},
		{StatusCanceled, true},
		{"", false},
	}
	for _, tt := range tests {
		if got := tt.s.Terminal(); got != tt.want {
			t.Errorf("%q.Terminal() = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestMemberStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s              MemberStatus
		done, terminal bool
	}{
		{MemberPending, false, false},
		{MemberRunning, false, false},
		{MemberCompleted, true, true},
		{MemberFailed, true, true},
		{MemberCanceled, false, true},
		{MemberExpired, false, true},
		{"", false, false},
	}
	for _, tt := range tests {
		if got := tt.s.Done(); got != tt.done {
			t.Errorf("%q.Done() = %v, want %v", tt.s, got, tt.done)
		}
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("%q.Terminal() = %v, want %v", tt.s, got, tt.terminal)
		}
	}
}

func TestNounPlural(t *testing.T) {
	t.Parallel()
	for noun, want := range map[Noun]string{"snapshot": "snapshots", "answer": "answers"} {
		if got := noun.Plural(); got != want {
			t.Errorf("%q.Plural() = %q, want %q", noun, got, want)
		}
	}
}

func TestSpecReadsCache(t *testing.T) {
	t.Parallel()
	for mode, want := range map[CacheMode]bool{"": true, CacheUse: true, CacheBypass: false} {
		if got := (Spec{Cache: mode}).ReadsCache(); got != want {
			t.Errorf("cache %q: ReadsCache() = %v, want %v", mode, got, want)
		}
	}
}

// t0 is when the test jobs were accepted.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds, in Unix milliseconds.
func at(ms int64) int64 { return t0.UnixMilli() + ms }

func i64(v int64) *int64 { return &v }

// dated is the Ref of a time-travel member.
func dated(date string) map[string]string { return map[string]string{"date": date} }

// finishedJob is a time-travel job with three members (completed, failed,
// and one that started and never ended), an aggregation with both parts
// failed, and a job error.
func finishedJob() *Job {
	return &Job{
		ID: "0190abcd",
		Spec: Spec{
			Kind:     "timetravel",
			Question: "What are the best AI models?",
			Model:    "gpt-4o",
			Cache:    CacheBypass,
			Params:   json.RawMessage(`{"time_points":[{"date":"2023-01-01","label":"January 2023"},{"date":"2024-05-01","label":"May 2024"},{"date":"2026-11-26","label":"today"}],"complexity":"detailed","force_time_travel":true}`),
		},
		Noun:       "snapshot",
		Status:     StatusPartial,
		CreatedAt:  t0.In(time.FixedZone("X", 3*3600)),
		Deadline:   t0.Add(2 * time.Minute).In(time.FixedZone("Y", -7*3600)),
		FinishedAt: t0.Add(3 * time.Second).In(time.FixedZone("Z", 3600)),
		Members: []Member{
			{Index: 0, Label: "January 2023", Ref: dated("2023-01-01"), Status: MemberCompleted, Text: "GPT-3.5", Model: "gpt-4o", Attempts: 1, StartedAt: at(150), CompletedAt: at(1150)},
			{Index: 1, Label: "May 2024", Ref: dated("2024-05-01"), Status: MemberFailed, Attempts: 3, Error: "provider answered 503", StartedAt: at(100), CompletedAt: at(2100)},
			{Index: 2, Label: "today", Ref: dated("2026-11-26"), Status: MemberRunning, Attempts: 1, Error: "timed out", StartedAt: at(200)},
		},
		Result: &Result{
			Parts: []Part{
				{Name: "key_changes", Error: "malformed key-changes answer", MS: 300},
				{Name: "narrative", Error: "llm call timed out", MS: 500},
			},
			StartedAt: at(2350),
		},
		Error: "deadline passed with 1 of 3 snapshots",
	}
}

func TestTimings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		job  *Job
		want Timings
	}{
		{
			name: "just accepted",
			job: &Job{CreatedAt: t0, Members: []Member{
				{Status: MemberPending}, {Status: MemberPending},
			}},
			want: Timings{},
		},
		{
			name: "running, nothing finished",
			job: &Job{CreatedAt: t0, Members: []Member{
				{Status: MemberRunning, StartedAt: at(40)},
				{Status: MemberRunning, StartedAt: at(25)},
			}},
			want: Timings{QueueWaitMS: i64(25)},
		},
		{
			name: "one of two finished",
			job: &Job{CreatedAt: t0, Members: []Member{
				{Status: MemberRunning, StartedAt: at(40)},
				{Status: MemberCompleted, StartedAt: at(25), CompletedAt: at(525)},
			}},
			want: Timings{QueueWaitMS: i64(25), MembersMS: i64(500), MemberMS: []int64{0, 500}},
		},
		{
			name: "finished job",
			job:  finishedJob(),
			want: Timings{
				QueueWaitMS: i64(100),
				MembersMS:   i64(2000), // first start at 100, last end at 2100
				MemberMS:    []int64{1000, 2000, 0},
				FanInMS:     i64(250), // aggregation started at 2350
				Parts:       []PartTiming{{Name: "key_changes", MS: 300}, {Name: "narrative", MS: 500}},
				TotalMS:     i64(3000),
			},
		},
		{
			name: "canceled before anything started",
			job: &Job{CreatedAt: t0, FinishedAt: t0.Add(1500 * time.Millisecond), Members: []Member{
				{Status: MemberPending},
			}},
			want: Timings{TotalMS: i64(1500)},
		},
		{
			name: "aggregation without finished members has no fan-in",
			job: &Job{CreatedAt: t0, Members: []Member{{Status: MemberPending}},
				Result: &Result{StartedAt: at(120000), Parts: []Part{{Name: "key_changes", MS: 7}}}},
			want: Timings{Parts: []PartTiming{{Name: "key_changes", MS: 7}}},
		},
		{
			name: "parts keep their order and LLM attempts",
			job: &Job{CreatedAt: t0, Result: &Result{Parts: []Part{
				{Name: "narrative", MS: 9, LLMAttempts: 2},
				{Name: "key_changes", LLMAttempts: 1},
			}}},
			want: Timings{Parts: []PartTiming{{Name: "narrative", MS: 9, LLMAttempts: 2}, {Name: "key_changes", LLMAttempts: 1}}},
		},
		{
			name: "clock skew never gives negative durations",
			job: &Job{CreatedAt: t0, FinishedAt: t0.Add(-time.Second), Members: []Member{
				{Status: MemberCompleted, StartedAt: at(-50), CompletedAt: at(100)},
			}, Result: &Result{StartedAt: at(90)}},
			want: Timings{QueueWaitMS: i64(0), MembersMS: i64(150), MemberMS: []int64{150}, FanInMS: i64(0), TotalMS: i64(0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.job.Timings()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Timings() =\n%s\nwant\n%s", timingsString(got), timingsString(tt.want))
			}
		})
	}
}

func timingsString(t Timings) string {
	b, _ := json.Marshal(TimingsView{Timings: t, Noun: "snapshot"})
	return string(b)
}

// sameJSON reports whether a and b encode the same JSON value (objects
// compare whatever the order of their fields).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func TestTimingsViewJSON(t *testing.T) {
	t.Parallel()
	withAttempts := finishedJob()
	withAttempts.Result.Parts[0].LLMAttempts = 2
	withAttempts.Result.Parts[1].LLMAttempts = 1
	tests := []struct {
		name string
		t    Timings
		noun Noun
		want string
	}{
		{
			name: "finished time-travel job",
			t:    finishedJob().Timings(),
			noun: "snapshot",
			want: `{"queue_wait_ms":100,"snapshots_ms":2000,"snapshot_ms":[1000,2000,0],"fan_in_ms":250,"key_changes_ms":300,"narrative_ms":500,"total_ms":3000}`,
		},
		{
			name: "LLM attempts of the parts",
			t:    withAttempts.Timings(),
			noun: "snapshot",
			want: `{"queue_wait_ms":100,"snapshots_ms":2000,"snapshot_ms":[1000,2000,0],"fan_in_ms":250,"key_changes_ms":300,"narrative_ms":500,
				"key_changes_llm_attempts":2,"narrative_llm_attempts":1,"total_ms":3000}`,
		},
		{
			name: "stages named after the noun",
			t:    finishedJob().Timings(),
			noun: "answer",
			want: `{"queue_wait_ms":100,"answers_ms":2000,"answer_ms":[1000,2000,0],"fan_in_ms":250,"key_changes_ms":300,"narrative_ms":500,"total_ms":3000}`,
		},
		{
			name: "a part with attempts and no duration",
			t:    Timings{Parts: []PartTiming{{Name: "summary", LLMAttempts: 3}}},
			noun: "answer",
			want: `{"summary_llm_attempts":3}`,
		},
		{
			name: "no timings",
			t:    (&Job{CreatedAt: t0}).Timings(),
			noun: "snapshot",
			want: `{}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(TimingsView{Timings: tt.t, Noun: tt.noun})
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, b, []byte(tt.want)) {
				t.Errorf("JSON = %s\nwant   %s", b, tt.want)
			}
		})
	}
}

func TestTimingsStages(t *testing.T) {
	t.Parallel()
	got := finishedJob().Timings().Stages("snapshot")
	want := map[string]int64{"queue_wait": 100, "snapshots": 2000, "fan_in": 250, "key_changes": 300, "narrative": 500, "total": 3000}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Stages = %v, want %v", got, want)
	}
	if got := (Timings{}).Stages("answer"); len(got) != 0 {
		t.Errorf("Stages of no timings = %v, want none", got)
	}
	got = Timings{MembersMS: i64(5), Parts: []PartTiming{{Name: "summary", LLMAttempts: 1}}}.Stages("answer")
	if want := map[string]int64{"answers": 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("Stages = %v, want %v (a part that took no time is left out)", got, want)
	}
}

func TestView(t *testing.T) {
	t.Parallel()
	j := finishedJob()
	v := j.View()

	if v.ID != "0190abcd" || v.Kind != "timetravel" || v.Status != StatusPartial || v.Question != "What are the best AI models?" ||
		v.Model != "gpt-4o" || v.Cache != CacheBypass {
		t.Errorf("View header = %+v", v)
	}
	if v.Fields != nil {
		t.Errorf("Fields = %#v, want none: the kind adds them", v.Fields)
	}
	if !v.CreatedAt.Equal(t0) || v.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v in UTC", v.CreatedAt, t0)
	}
	if want := t0.Add(2 * time.Minute); !v.Deadline.Equal(want) || v.Deadline.Location() != time.UTC {
		t.Errorf("Deadline = %v, want %v in UTC", v.Deadline, want)
	}
	if want := t0.Add(3 * time.Second); v.FinishedAt == nil || !v.FinishedAt.Equal(want) || v.FinishedAt.Location() != time.UTC {
		t.Errorf("FinishedAt = %v, want %v in UTC", v.FinishedAt, want)
	}
	if want := (TimingsView{Timings: j.Timings(), Noun: "snapshot"}); !reflect.DeepEqual(v.Timings, want) {
		t.Errorf("Timings = %s, want %s", timingsString(v.Timings.Timings), timingsString(want.Timings))
	}
	wantErrors := []string{
		"deadline passed with 1 of 3 snapshots",
		"snapshot May 2024: provider answered 503",
		"snapshot today: timed out",
		"key changes: malformed key-changes answer",
		"narrative: llm call timed out",
	}
	if !reflect.DeepEqual(v.Errors, wantErrors) {
		t.Errorf("Errors =\n%q\nwant\n%q", v.Errors, wantErrors)
	}
	if got := j.Errors(); !reflect.DeepEqual(got, wantErrors) {
		t.Errorf("Errors() =\n%q\nwant\n%q", got, wantErrors)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		job  *Job
		want []string
	}{
		{name: "none", job: &Job{Noun: "snapshot"}, want: []string{}},
		{
			name: "completed job",
			job: &Job{Noun: "snapshot", Members: []Member{{Label: "January 2023", Status: MemberCompleted}},
				Result: &Result{Parts: []Part{{Name: "key_changes", Value: json.RawMessage(`[]`)}, {Name: "narrative", Text: "It changed."}}}},
			want: []string{},
		},
		{
			name: "member errors are named by the kind's noun",
			job: &Job{Noun: "answer", Members: []Member{
				{Label: "gpt-4o", Status: MemberFailed, Error: "refused"},
				{Label: "claude", Status: MemberCompleted},
				{Label: "llama", Status: MemberExpired, Error: "unfinished at the deadline"},
			}},
			want: []string{"answer gpt-4o: refused", "answer llama: unfinished at the deadline"},
		},
		{
			name: "job error first, then members, then parts in their order, underscores as spaces",
			job: &Job{Noun: "answer", Error: "1 of 2 answers missing", Members: []Member{{Label: "a", Error: "x"}},
				Result: &Result{Parts: []Part{{Name: "final_summary_v2", Error: "timed out"}, {Name: "ok"}, {Name: "votes", Error: "malformed"}}}},
			want: []string{"1 of 2 answers missing", "answer a: x", "final summary v2: timed out", "votes: malformed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.job.Errors()
			if got == nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Errors() = %#v, want %#v", got, tt.want)
			}
			if v := tt.job.View().Errors; !reflect.DeepEqual(v, tt.want) {
				t.Errorf("View().Errors = %#v, want %#v", v, tt.want)
			}
		})
	}
}

func TestViewCompleted(t *testing.T) {
	t.Parallel()
	j := &Job{
		ID: "x", Noun: "snapshot", Status: StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(time.Second),
		Members: []Member{
			{Index: 0, Label: "January 2023", Status: MemberCompleted, StartedAt: at(10), CompletedAt: at(20)},
			{Index: 1, Label: "May 2024", Status: MemberCompleted, StartedAt: at(10), CompletedAt: at(30)},
		},
		Result: &Result{Parts: []Part{
			{Name: "key_changes", Value: json.RawMessage(`[{"from":"2023-01-01","to":"2024-05-01","from_label":"January 2023","to_label":"May 2024","changes":["GPT-4o"]}]`), MS: 5},
			{Name: "narrative", Text: "It changed.", MS: 9},
		}, StartedAt: at(40)},
	}
	v := j.View()
	if v.Errors == nil || len(v.Errors) != 0 {
		t.Errorf("Errors = %#v, want an empty non-nil list", v.Errors)
	}
	if want := []PartTiming{{Name: "key_changes", MS: 5}, {Name: "narrative", MS: 9}}; !reflect.DeepEqual(v.Timings.Parts, want) {
		t.Errorf("Timings.Parts = %+v, want %+v", v.Timings.Parts, want)
	}
}

func TestViewJSONOfNewJob(t *testing.T) {
	t.Parallel()
	j := &Job{
		ID: "0190", Noun: "snapshot", Status: StatusQueued, CreatedAt: t0, Deadline: t0.Add(time.Minute),
		Spec:    Spec{Kind: "timetravel", Question: "q", Params: json.RawMessage(`{"complexity":"standard"}`)},
		Members: []Member{{Index: 0, Label: "January 2023", Ref: dated("2023-01-01"), Status: MemberPending}},
	}
	v := j.View()
	if v.FinishedAt != nil {
		t.Errorf("FinishedAt = %v, want nil", v.FinishedAt)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	// The common fields only: the members, the params and the result are
	// shown by the kind (Fields).
	want := map[string]string{
		"job_id":     `"0190"`,
		"kind":       `"timetravel"`,
		"status":     `"queued"`,
		"question":   `"q"`,
		"created_at": `"2026-11-26T10:00:00Z"`,
		"deadline":   `"2026-11-26T10:01:00Z"`,
		"cache":      `""`,
		"cached":     `false`,
		"timings":    `{}`,
		"errors":     `[]`,
	}
	for k, w := range want {
		if got, ok := m[k]; !ok || string(got) != w {
			t.Errorf("%s = %s, want %s", k, got, w)
		}
	}
	for _, absent := range []string{"model", "finished_at", "callback_url", "webhook", "warm", "params", "members", "Fields"} {
		if got, ok := m[absent]; ok {
			t.Errorf("%s present (%s), want it omitted", absent, got)
		}
	}
	if len(m) != len(want) {
		t.Errorf("JSON has %d fields, want %d: %s", len(m), len(want), b)
	}
}

// A kind's fields sit beside the common ones; they cannot replace one.
func TestViewJSONWithFields(t *testing.T) {
	t.Parallel()
	type fields struct {
		Complexity string   `json:"complexity"`
		Snapshots  []Member `json:"snapshots"`
		Status     string   `json:"status"`
		Narrative  string   `json:"narrative"`
	}
	tests := []struct {
		name   string
		fields any
		want   map[string]string // fields of the JSON besides the common ones
		err    bool
	}{
		{name: "none", fields: nil, want: map[string]string{}},
		{
			name: "struct",
			fields: fields{Complexity: "brief", Status: "hijacked", Snapshots: []Member{
				{Index: 0, Label: "January 2023", Ref: dated("2023-01-01"), Status: MemberPending},
			}},
			want: map[string]string{
				"complexity": `"brief"`,
				"snapshots":  `[{"attempts":0,"date":"2023-01-01","index":0,"label":"January 2023","status":"pending"}]`,
				"narrative":  `""`,
			},
		},
		{name: "map", fields: map[string]any{"votes": []int{1, 2}, "job_id": "other"}, want: map[string]string{"votes": `[1,2]`}},
		{name: "not an object", fields: []string{"x"}, err: true},
		{name: "does not encode", fields: map[string]any{"f": func() {}}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j := &Job{ID: "0190", Noun: "snapshot", Status: StatusRunning, CreatedAt: t0, Deadline: t0.Add(time.Minute), Spec: Spec{Kind: "timetravel", Question: "q"}}
			v := j.View()
			v.Fields = tt.fields
			b, err := json.Marshal(v)
			if tt.err {
				if err == nil {
					t.Fatalf("Marshal = %s, want an error", b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if got := string(m["status"]); got != `"running"` {
				t.Errorf("status = %s: a kind's field replaced a common one", got)
			}
			if got := string(m["job_id"]); got != `"0190"` {
				t.Errorf("job_id = %s: a kind's field replaced a common one", got)
			}
			for k, w := range tt.want {
				if got, ok := m[k]; !ok || !sameJSON(t, got, []byte(w)) {
					t.Errorf("%s = %s, want %s", k, got, w)
				}
			}
			if common := 10; len(m) != common+len(tt.want) {
				t.Errorf("JSON has %d fields, want %d: %s", len(m), common+len(tt.want), b)
			}
		})
	}
}

func TestMemberJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		m    Member
		want string
	}{
		{
			name: "pending, no ref",
			m:    Member{Index: 2, Label: "gpt-4o", Status: MemberPending},
			want: `{"index":2,"label":"gpt-4o","status":"pending","attempts":0}`,
		},
		{
			name: "ref beside the other fields",
			m:    Member{Index: 0, Label: "January 2023", Ref: dated("2023-01-01"), Status: MemberPending},
			want: `{"index":0,"date":"2023-01-01","label":"January 2023","status":"pending","attempts":0}`,
		},
		{
			name: "every field",
			m: Member{Index: 1, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01", "note": "x"}, Status: MemberCompleted,
				Text: "GPT-4o.", Model: "gpt-4o", Attempts: 2, LLMAttempts: 3, Error: "e", StartedAt: 10, CompletedAt: 20, Cached: true},
			want: `{"index":1,"date":"2024-05-01","note":"x","label":"May 2024","status":"completed","text":"GPT-4o.","model":"gpt-4o",
				"attempts":2,"llm_attempts":3,"error":"e","started_at_ms":10,"completed_at_ms":20,"cached":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, b, []byte(tt.want)) {
				t.Errorf("JSON = %s\nwant   %s", b, tt.want)
			}
			var back Member
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.m) {
				t.Errorf("round trip = %+v, want %+v", back, tt.m)
			}
		})
	}
}

func TestMemberJSONRefNeverTakesAField(t *testing.T) {
	t.Parallel()
	// A Ref field named like a field of Member does not replace it.
	m := Member{Index: 1, Label: "x", Status: MemberRunning, Ref: map[string]string{"status": "completed", "index": "9"}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"index":1,"label":"x","status":"running","attempts":0}`; !sameJSON(t, b, []byte(want)) {
		t.Errorf("JSON = %s, want %s", b, want)
	}
	// Reading back: fields that are not strings are not Ref fields.
	var back Member
	if err := json.Unmarshal([]byte(`{"index":1,"label":"x","status":"running","attempts":0,"date":"2023-01-01","n":7,"o":{"a":1}}`), &back); err != nil {
		t.Fatal(err)
	}
	if want := dated("2023-01-01"); !reflect.DeepEqual(back.Ref, want) {
		t.Errorf("Ref = %v, want %v", back.Ref, want)
	}
	if err := json.Unmarshal([]byte(`{"index":"one"}`), &back); err == nil {
		t.Error("a member with a string index decoded")
	}
	for _, name := range []string{"index", "label", "status", "text", "model", "attempts", "llm_attempts", "error", "started_at_ms", "completed_at_ms", "cached"} {
		if !ReservedField(name) {
			t.Errorf("ReservedField(%q) = false", name)
		}
	}
	for _, name := range []string{"date", "provider", ""} {
		if ReservedField(name) {
			t.Errorf("ReservedField(%q) = true", name)
		}
	}
}

func TestMemberRefData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		m    Member
		want map[string]any
	}{
		{Member{Index: 0, Label: "gpt-4o"}, map[string]any{"index": 0, "label": "gpt-4o"}},
		{
			Member{Index: 2, Label: "May 2024", Ref: dated("2024-05-01"), Status: MemberCompleted, Text: "not in the ref"},
			map[string]any{"index": 2, "label": "May 2024", "date": "2024-05-01"},
		},
		{
			Member{Index: 1, Label: "real", Ref: map[string]string{"label": "fake", "index": "fake"}},
			map[string]any{"index": 1, "label": "real"},
		},
	}
	for _, tt := range tests {
		if got := tt.m.RefData(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("RefData() = %v, want %v", got, tt.want)
		}
	}
}

func TestResultParts(t *testing.T) {
	t.Parallel()
	var nilResult *Result
	if nilResult.Part("narrative") != nil || nilResult.Failed() {
		t.Error("a nil result has a part or failed")
	}
	r := &Result{}
	if r.Part("narrative") != nil || r.Failed() {
		t.Error("an empty result has a part or failed")
	}
	r.Set(Part{Name: "key_changes", Value: json.RawMessage(`[]`)})
	r.Set(Part{Name: "narrative", Text: "It"})
	r.Set(Part{Name: "narrative", Text: "It changed.", MS: 9})
	want := []Part{{Name: "key_changes", Value: json.RawMessage(`[]`)}, {Name: "narrative", Text: "It changed.", MS: 9}}
	if !reflect.DeepEqual(r.Parts, want) {
		t.Errorf("Parts = %+v, want %+v", r.Parts, want)
	}
	if p := r.Part("narrative"); p == nil || p.Text != "It changed." {
		t.Errorf("Part(narrative) = %+v", p)
	}
	// Part returns the result's own part, not a copy.
	r.Part("key_changes").Error = "malformed"
	if !r.Failed() || r.Parts[0].Error != "malformed" {
		t.Errorf("Failed() = %v after a part failed: %+v", r.Failed(), r.Parts)
	}
	if r.Part("other") != nil {
		t.Error("Part of an unknown name")
	}

	b, err := json.Marshal(Result{Parts: []Part{
		{Name: "key_changes", Value: json.RawMessage(`[{"from":"a"}]`), Model: "m", LLMAttempts: 2, MS: 5},
		{Name: "narrative", Error: "timed out"},
	}, StartedAt: 7, Cached: true})
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"parts":[{"name":"key_changes","value":[{"from":"a"}],"model":"m","llm_attempts":2,"ms":5},{"name":"narrative","error":"timed out"}],"started_at_ms":7,"cached":true}`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s\nwant   %s", b, wantJSON)
	}
}

func TestCachedAndCompleted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		job       *Job
		cached    bool
		completed []int // indexes
	}{
		{name: "nothing yet", job: &Job{Members: []Member{{Index: 0, Status: MemberPending}}}},
		{
			name: "all cached",
			job: &Job{Members: []Member{{Index: 0, Status: MemberCompleted, Cached: true}, {Index: 1, Status: MemberCompleted, Cached: true}},
				Result: &Result{Cached: true}},
			cached: true, completed: []int{0, 1},
		},
		{
			name: "a member computed",
			job: &Job{Members: []Member{{Index: 0, Status: MemberCompleted, Cached: true}, {Index: 1, Status: MemberCompleted}},
				Result: &Result{Cached: true}},
			completed: []int{0, 1},
		},
		{
			name:      "the result computed",
			job:       &Job{Members: []Member{{Index: 0, Status: MemberCompleted, Cached: true}}, Result: &Result{}},
			completed: []int{0},
		},
		{
			name:      "no result",
			job:       &Job{Members: []Member{{Index: 0, Status: MemberCompleted, Cached: true}}},
			completed: []int{0},
		},
		{
			name: "only completed members, in order",
			job: &Job{Members: []Member{
				{Index: 0, Status: MemberFailed}, {Index: 1, Status: MemberCompleted}, {Index: 2, Status: MemberExpired},
				{Index: 3, Status: MemberCompleted}, {Index: 4, Status: MemberRunning},
			}},
			completed: []int{1, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.job.Cached(); got != tt.cached {
				t.Errorf("Cached() = %v, want %v", got, tt.cached)
			}
			if got := tt.job.View().Cached; got != tt.cached {
				t.Errorf("View().Cached = %v, want %v", got, tt.cached)
			}
			var got []int
			for _, m := range tt.job.Completed() {
				got = append(got, m.Index)
			}
			if !reflect.DeepEqual(got, tt.completed) {
				t.Errorf("Completed() = %v, want %v", got, tt.completed)
			}
		})
	}
}

func TestSeenBy(t *testing.T) {
	t.Parallel()
	detachedAt := t0.Add(1500 * time.Millisecond)
	// shared is finishedJob as the job that does the work, with a handle
	// that joined it and one that detached at 1.5s.
	shared := func() *Job {
		j := finishedJob()
		j.Spec.Owner = "key-a"
		j.Webhook = &Webhook{Status: WebhookPending}
		j.Fingerprint = "fp"
		j.Detached = map[string]Detach{"h-gone": {At: detachedAt, Marker: "17-0"}}
		return j
	}
	handle := func(id string) *Job {
		return &Job{ID: id, Of: "0190abcd", Spec: Spec{Owner: "key-b"}, CreatedAt: t0.Add(time.Second)}
	}
	tests := []struct {
		name   string
		handle func(j *Job) *Job
		check  func(t *testing.T, j, v *Job)
	}{
		{
			name:   "the job itself",
			handle: func(j *Job) *Job { return j },
			check: func(t *testing.T, j, v *Job) {
				want := *j
				want.Detached = nil
				if !reflect.DeepEqual(v, &want) {
					t.Errorf("SeenBy(itself) =\n%+v\nwant\n%+v", v, &want)
				}
			},
		},
		{
			name:   "a handle that joined",
			handle: func(*Job) *Job { return handle("h-join") },
			check: func(t *testing.T, j, v *Job) {
				if v.ID != "h-join" || v.Spec.Owner != "key-b" || !v.CreatedAt.Equal(t0.Add(time.Second)) || v.Of != "" {
					t.Errorf("identity = %q %q %v of %q, want the handle's", v.ID, v.Spec.Owner, v.CreatedAt, v.Of)
				}
				if v.Webhook != nil || v.Fingerprint != "" || v.Detached != nil {
					t.Errorf("the handle sees the job's webhook %+v, fingerprint %q or detaches %v", v.Webhook, v.Fingerprint, v.Detached)
				}
				if v.Status != j.Status || !reflect.DeepEqual(v.Members, j.Members) || !reflect.DeepEqual(v.Result, j.Result) || v.Error != j.Error {
					t.Errorf("the handle does not see the shared work: %+v", v)
				}
			},
		},
		{
			name:   "a handle that detached",
			handle: func(*Job) *Job { return handle("h-gone") },
			check: func(t *testing.T, j, v *Job) {
				if v.ID != "h-gone" || v.Status != StatusCanceled || !v.FinishedAt.Equal(detachedAt) || v.Error != CanceledByClient {
					t.Errorf("detached view = %q %s at %v: %q", v.ID, v.Status, v.FinishedAt, v.Error)
				}
				want := []Member{
					// Completed at 1.15s, before the detach: kept.
					j.Members[0],
					// Failed at 2.1s, after it: canceled, without its error.
					{Index: 1, Label: "May 2024", Ref: dated("2024-05-01"), Status: MemberCanceled, Attempts: 3, StartedAt: at(100)},
					// Still running: canceled.
					{Index: 2, Label: "today", Ref: dated("2026-11-26"), Status: MemberCanceled, Attempts: 1, StartedAt: at(200)},
				}
				if !reflect.DeepEqual(v.Members, want) {
					t.Errorf("Members =\n%+v\nwant\n%+v", v.Members, want)
				}
				// The aggregation started at 2.35s, after the detach.
				if v.Result != nil {
					t.Errorf("Result = %+v, want none", v.Result)
				}
				if got := v.Errors(); !reflect.DeepEqual(got, []string{CanceledByClient}) {
					t.Errorf("Errors() = %q", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j := shared()
			v := j.SeenBy(tt.handle(j))
			if v == j {
				t.Fatal("SeenBy returned the job itself, not a copy")
			}
			tt.check(t, j, v)
			if !reflect.DeepEqual(j, shared()) {
				t.Errorf("SeenBy changed the job:\n%+v\nwant\n%+v", j, shared())
			}
		})
	}
}

// A caller that detached after the aggregation began sees when it began,
// and none of its parts.
func TestSeenByDetachedDuringAggregation(t *testing.T) {
	t.Parallel()
	j := finishedJob()
	j.Detached = map[string]Detach{"h": {At: t0.Add(2500 * time.Millisecond)}}
	v := j.SeenBy(&Job{ID: "h"})
	if want := (&Result{StartedAt: at(2350)}); !reflect.DeepEqual(v.Result, want) {
		t.Errorf("Result = %+v, want %+v", v.Result, want)
	}
	if v.Members[1].Status != MemberFailed || v.Members[1].Error == "" {
		t.Errorf("a member failed before the detach = %+v", v.Members[1])
	}
	if v.Members[2].Status != MemberCanceled {
		t.Errorf("a running member = %+v, want canceled", v.Members[2])
	}
	if !reflect.DeepEqual(j.Result, finishedJob().Result) {
		t.Errorf("SeenBy changed the job's result: %+v", j.Result)
	}
}

// The view shows the callback URL without what may hold the receiver's
// token: its query, fragment and user info.
func TestViewCallbackURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ stored, shown string }{
		{"", ""},
		{"https://example.com/hook", "https://example.com/hook"},
		{"https://example.com:8443/hooks/tt", "https://example.com:8443/hooks/tt"},
		{"https://example.com/hook?token=s3cret&x=1", "https://example.com/hook"},
		{"https://example.com/hook?", "https://example.com/hook"},
		{"https://example.com/hook#s3cret", "https://example.com/hook"},
		{"https://user:s3cret@example.com/hook", "https://example.com/hook"},
		{"http://127.0.0.1:9/a%2Fb?token=abc", "http://127.0.0.1:9/a%2Fb"},
		{"https://[::1", ""},
	}
	for _, tt := range tests {
		j := &Job{Spec: Spec{CallbackURL: tt.stored}}
		if got := j.View().CallbackURL; got != tt.shown {
			t.Errorf("stored %q: shown %q, want %q", tt.stored, got, tt.shown)
		}
		if j.Spec.CallbackURL != tt.stored {
			t.Errorf("View changed the stored URL to %q", j.Spec.CallbackURL)
		}
	}
}

func TestViewJSONOfWebhook(t *testing.T) {
	t.Parallel()
	at := t0.Add(2 * time.Second)
	j := &Job{
		ID: "0190", Noun: "snapshot", Status: StatusCompleted, CreatedAt: t0, Deadline: t0.Add(time.Minute), FinishedAt: t0.Add(time.Second),
		Spec:    Spec{Kind: "timetravel", Question: "q", CallbackURL: "https://example.com/hook"},
		Webhook: &Webhook{Status: WebhookDelivered, Attempts: 2, LastStatusCode: 204, DeliveredAt: &at},
	}
	b, err := json.Marshal(j.View())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if got := string(m["callback_url"]); got != `"https://example.com/hook"` {
		t.Errorf("callback_url = %s", got)
	}
	if got, want := string(m["webhook"]), `{"status":"delivered","attempts":2,"last_status_code":204,"delivered_at":"2026-11-26T10:00:02Z"}`; got != want {
		t.Errorf("webhook = %s, want %s", got, want)
	}
	for s, final := range map[WebhookStatus]bool{WebhookPending: false, WebhookDelivered: true, WebhookFailed: true} {
		if s.Final() != final {
			t.Errorf("%s.Final() = %v", s, !final)
		}
	}
}
