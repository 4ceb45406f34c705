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

func TestSnapshotStatusDone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    SnapshotStatus
		want bool
	}{
		{SnapshotPending, false},
		{SnapshotRunning, false},
		{SnapshotCompleted, true},
		{SnapshotFailed, true},
	}
	for _, tt := range tests {
		if got := tt.s.Done(); got != tt.want {
			t.Errorf("%q.Done() = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// t0 is when the test jobs were accepted.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds, in Unix milliseconds.
func at(ms int64) int64 { return t0.UnixMilli() + ms }

func i64(v int64) *int64 { return &v }

// finishedJob has three snapshots (completed, failed, and one that started
// and never ended), an aggregation with both parts failed, and a job error.
func finishedJob() *Job {
	return &Job{
		ID: "0190abcd",
		Spec: Spec{
			Question:        "What are the best AI models?",
			TimePoints:      []TimePoint{{"2023-01-01", "January 2023"}, {"2024-05-01", "May 2024"}, {"2026-11-26", "today"}},
			Model:           "gpt-4o",
			Complexity:      ComplexityDetailed,
			ForceTimeTravel: true,
		},
		Status:     StatusPartial,
		CreatedAt:  t0.In(time.FixedZone("X", 3*3600)),
		Deadline:   t0.Add(2 * time.Minute).In(time.FixedZone("Y", -7*3600)),
		FinishedAt: t0.Add(3 * time.Second).In(time.FixedZone("Z", 3600)),
		Snapshots: []Snapshot{
			{Index: 0, Date: "2023-01-01", Label: "January 2023", Status: SnapshotCompleted, Text: "GPT-3.5", Model: "gpt-4o", Attempts: 1, StartedAt: at(150), CompletedAt: at(1150)},
			{Index: 1, Date: "2024-05-01", Label: "May 2024", Status: SnapshotFailed, Attempts: 3, Error: "provider answered 503", StartedAt: at(100), CompletedAt: at(2100)},
			{Index: 2, Date: "2026-11-26", Label: "today", Status: SnapshotRunning, Attempts: 1, Error: "timed out", StartedAt: at(200)},
		},
		Aggregate: &Aggregate{
			KeyChangesError: "malformed key-changes answer",
			NarrativeError:  "llm call timed out",
			StartedAt:       at(2350),
			KeyChangesMS:    300,
			NarrativeMS:     500,
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
			job: &Job{CreatedAt: t0, Snapshots: []Snapshot{
				{Status: SnapshotPending}, {Status: SnapshotPending},
			}},
			want: Timings{},
		},
		{
			name: "running, nothing finished",
			job: &Job{CreatedAt: t0, Snapshots: []Snapshot{
				{Status: SnapshotRunning, StartedAt: at(40)},
				{Status: SnapshotRunning, StartedAt: at(25)},
			}},
			want: Timings{QueueWaitMS: i64(25)},
		},
		{
			name: "one of two finished",
			job: &Job{CreatedAt: t0, Snapshots: []Snapshot{
				{Status: SnapshotRunning, StartedAt: at(40)},
				{Status: SnapshotCompleted, StartedAt: at(25), CompletedAt: at(525)},
			}},
			want: Timings{QueueWaitMS: i64(25), SnapshotsMS: i64(500), SnapshotMS: []int64{0, 500}},
		},
		{
			name: "finished job",
			job:  finishedJob(),
			want: Timings{
				QueueWaitMS:  i64(100),
				SnapshotsMS:  i64(2000), // first start at 100, last end at 2100
				SnapshotMS:   []int64{1000, 2000, 0},
				FanInMS:      i64(250), // aggregation started at 2350
				KeyChangesMS: i64(300),
				NarrativeMS:  i64(500),
				TotalMS:      i64(3000),
			},
		},
		{
			name: "canceled before anything started",
			job: &Job{CreatedAt: t0, FinishedAt: t0.Add(1500 * time.Millisecond), Snapshots: []Snapshot{
				{Status: SnapshotPending},
			}},
			want: Timings{TotalMS: i64(1500)},
		},
		{
			name: "aggregation without finished snapshots has no fan-in",
			job: &Job{CreatedAt: t0, Snapshots: []Snapshot{{Status: SnapshotPending}},
				Aggregate: &Aggregate{StartedAt: at(120000), KeyChangesMS: 7}},
			want: Timings{KeyChangesMS: i64(7)},
		},
		{
			name: "clock skew never gives negative durations",
			job: &Job{CreatedAt: t0, FinishedAt: t0.Add(-time.Second), Snapshots: []Snapshot{
				{Status: SnapshotCompleted, StartedAt: at(-50), CompletedAt: at(100)},
			}, Aggregate: &Aggregate{StartedAt: at(90)}},
			want: Timings{QueueWaitMS: i64(0), SnapshotsMS: i64(150), SnapshotMS: []int64{150}, FanInMS: i64(0), TotalMS: i64(0)},
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
	b, _ := json.Marshal(t)
	return string(b)
}

func TestTimingsJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(finishedJob().Timings())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"queue_wait_ms":100,"snapshots_ms":2000,"snapshot_ms":[1000,2000,0],"fan_in_ms":250,"key_changes_ms":300,"narrative_ms":500,"total_ms":3000}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
	b, err = json.Marshal((&Job{CreatedAt: t0}).Timings())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{}` {
		t.Errorf("JSON of no timings = %s, want {}", b)
	}
}

func TestView(t *testing.T) {
	t.Parallel()
	j := finishedJob()
	v := j.View()

	if v.ID != "0190abcd" || v.Status != StatusPartial || v.Question != "What are the best AI models?" ||
		v.Model != "gpt-4o" || v.Complexity != ComplexityDetailed || !v.ForceTimeTravel {
		t.Errorf("View header = %+v", v)
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
	if !reflect.DeepEqual(v.Snapshots, j.Snapshots) {
		t.Errorf("Snapshots = %+v", v.Snapshots)
	}
	if !reflect.DeepEqual(v.Timings, j.Timings()) {
		t.Errorf("Timings = %s, want %s", timingsString(v.Timings), timingsString(j.Timings()))
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
	if v.KeyChanges == nil || len(v.KeyChanges) != 0 {
		t.Errorf("KeyChanges = %#v, want an empty non-nil list", v.KeyChanges)
	}
	if v.Narrative != "" {
		t.Errorf("Narrative = %q", v.Narrative)
	}
}

func TestViewCompleted(t *testing.T) {
	t.Parallel()
	kc := []KeyChange{{From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024", Changes: []string{"GPT-4o"}}}
	j := &Job{
		ID: "x", Status: StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(time.Second),
		Snapshots: []Snapshot{
			{Index: 0, Label: "January 2023", Status: SnapshotCompleted, StartedAt: at(10), CompletedAt: at(20)},
			{Index: 1, Label: "May 2024", Status: SnapshotCompleted, StartedAt: at(10), CompletedAt: at(30)},
		},
		Aggregate: &Aggregate{KeyChanges: kc, Narrative: "It changed.", StartedAt: at(40), KeyChangesMS: 5, NarrativeMS: 9},
	}
	v := j.View()
	if !reflect.DeepEqual(v.KeyChanges, kc) {
		t.Errorf("KeyChanges = %+v, want %+v", v.KeyChanges, kc)
	}
	if v.Narrative != "It changed." {
		t.Errorf("Narrative = %q", v.Narrative)
	}
	if v.Errors == nil || len(v.Errors) != 0 {
		t.Errorf("Errors = %#v, want an empty non-nil list", v.Errors)
	}
}

func TestViewJSONOfNewJob(t *testing.T) {
	t.Parallel()
	j := &Job{
		ID: "0190", Status: StatusQueued, CreatedAt: t0, Deadline: t0.Add(time.Minute),
		Spec:      Spec{Question: "q", Complexity: ComplexityStandard},
		Snapshots: []Snapshot{{Index: 0, Date: "2023-01-01", Label: "January 2023", Status: SnapshotPending}},
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
	want := map[string]string{
		"job_id":            `"0190"`,
		"status":            `"queued"`,
		"question":          `"q"`,
		"complexity":        `"standard"`,
		"force_time_travel": `false`,
		"created_at":        `"2026-11-26T10:00:00Z"`,
		"deadline":          `"2026-11-26T10:01:00Z"`,
		"snapshots":         `[{"index":0,"date":"2023-01-01","label":"January 2023","status":"pending","attempts":0}]`,
		"key_changes":       `[]`,
		"narrative":         `""`,
		"cache":             `""`,
		"cached":            `false`,
		"timings":           `{}`,
		"errors":            `[]`,
	}
	for k, w := range want {
		if got, ok := m[k]; !ok || string(got) != w {
			t.Errorf("%s = %s, want %s", k, got, w)
		}
	}
	for _, absent := range []string{"model", "finished_at", "callback_url", "webhook"} {
		if got, ok := m[absent]; ok {
			t.Errorf("%s present (%s), want it omitted", absent, got)
		}
	}
	if len(m) != len(want) {
		t.Errorf("JSON has %d fields, want %d: %s", len(m), len(want), b)
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
		ID: "0190", Status: StatusCompleted, CreatedAt: t0, Deadline: t0.Add(time.Minute), FinishedAt: t0.Add(time.Second),
		Spec:    Spec{Question: "q", Complexity: ComplexityStandard, CallbackURL: "https://example.com/hook"},
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
