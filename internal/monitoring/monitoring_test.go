package monitoring

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
)

func TestPercentileKnownSet(t *testing.T) {
	// 1..100 seconds, shuffled: nearest rank gives the p-th value.
	var v []float64
	for i := 100; i >= 1; i-- {
		v = append(v, float64(i*1000))
	}
	for _, c := range []struct{ p, want float64 }{{50, 50000}, {95, 95000}, {99, 99000}, {100, 100000}, {1, 1000}} {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if v[0] != 100000 {
		t.Error("Percentile sorted its argument")
	}
	// Ten values: p50 is the 5th, p95 and p99 the 10th.
	ten := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	s := Summarize(ten)
	if s.Count != 10 || s.P50 != 50 || s.P95 != 100 || s.P99 != 100 || s.Mean != 55 || s.Max != 100 {
		t.Errorf("Summarize = %+v", s)
	}
	if Percentile(nil, 50) != 0 || Summarize(nil).Count != 0 {
		t.Error("empty set")
	}
	if Percentile([]float64{7}, 99) != 7 {
		t.Error("one value")
	}
}

func TestStatsBreakdownAlerts(t *testing.T) {
	samples := []Sample{
		{Stages: map[string]int64{"queue_wait": 100, "snapshots": 6000, "fan_in": 100, "narrative": 3800, "total": 10000}, Members: []int64{5000, 6000}},
		{Stages: map[string]int64{"queue_wait": 300, "snapshots": 10000, "fan_in": 100, "narrative": 9600, "total": 20000}, Members: []int64{40000}},
		{Stages: map[string]int64{"queue_wait": 50}}, // canceled before the end: no total
	}
	st := Stats(samples)
	if st["total"].Count != 2 || st["total"].P50 != 10000 || st["total"].P95 != 20000 {
		t.Errorf("total %+v", st["total"])
	}
	if st["snapshot"].Count != 3 || st["snapshot"].P95 != 40000 || st["queue_wait"].Count != 3 {
		t.Errorf("stats %+v", st)
	}
	b := LatencyBreakdown(samples)
	if b.Jobs != 2 || b.MeanTotalMS != 15000 {
		t.Fatalf("breakdown %+v", b)
	}
	for _, sh := range b.Stages {
		if sh.Stage == "snapshots" && (sh.MeanMS != 8000 || sh.Percent != 53.3) {
			t.Errorf("snapshots share %+v", sh)
		}
	}
	th := Thresholds{TotalP95Warning: 15 * time.Second, TotalP95Critical: 30 * time.Second, SnapshotP95Warning: 30 * time.Second}
	a := Alerts(st, th, time.Hour)
	if len(a) != 2 || a[0].Name != "JobTotalP95High" || a[0].Severity != Warning || a[1].Name != "SnapshotP95High" {
		t.Errorf("alerts %+v", a)
	}
	th.TotalP95Critical = 19 * time.Second
	if a := Alerts(st, th, time.Hour); a[0].Name != "JobTotalP95Critical" || a[0].Severity != Critical || a[0].ValueMS != 20000 {
		t.Errorf("critical alert %+v", a)
	}
	if a := Alerts(st, Thresholds{}, time.Hour); len(a) != 0 {
		t.Errorf("alerts with no thresholds: %+v", a)
	}
}

// t0 is a job's creation time in the FromJob tests.
var t0 = time.Date(2025, time.June, 15, 12, 0, 0, 0, time.UTC)

// at is t0 plus ms, in Unix milliseconds.
func at(ms int64) int64 { return t0.UnixMilli() + ms }

func TestFromJob(t *testing.T) {
	t.Parallel()
	// Two answers, one failed (done: it counts), one unfinished at the
	// deadline (no duration of its own).
	members := func() []job.Member {
		return []job.Member{
			{Index: 0, Label: "a", Status: job.MemberCompleted, StartedAt: at(100), CompletedAt: at(5100)},
			{Index: 1, Label: "b", Status: job.MemberCompleted, StartedAt: at(150), CompletedAt: at(6100)},
			{Index: 2, Label: "c", Status: job.MemberFailed, StartedAt: at(200), CompletedAt: at(1200)},
			{Index: 3, Label: "d", Status: job.MemberExpired, StartedAt: at(300)},
		}
	}
	tests := []struct {
		name        string
		job         job.Job
		wantNoun    string
		wantStages  map[string]int64
		wantMembers []int64
	}{
		{"time travel", job.Job{
			ID: "j1", Noun: "snapshot", Status: job.StatusPartial, CreatedAt: t0, FinishedAt: t0.Add(9300 * time.Millisecond),
			Members: members(),
			Result: &job.Result{StartedAt: at(6200), Parts: []job.Part{
				{Name: "key_changes", Value: json.RawMessage(`[]`), MS: 800, LLMAttempts: 1},
				{Name: "narrative", Text: "n", MS: 3000, LLMAttempts: 2},
			}},
		}, "snapshot",
			map[string]int64{"queue_wait": 100, "snapshots": 6000, "fan_in": 100, "key_changes": 800, "narrative": 3000, "total": 9300},
			[]int64{5000, 5950, 1000}},
		{"an ensemble; a part with no call has no stage", job.Job{
			ID: "j2", Noun: "answer", Status: job.StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(7000 * time.Millisecond),
			Members: members()[:2],
			Result: &job.Result{StartedAt: at(6150), Parts: []job.Part{
				{Name: "analysis", Value: json.RawMessage(`{}`)},
				{Name: "synthesis", Text: "s", MS: 500},
			}},
		}, "answer",
			map[string]int64{"queue_wait": 100, "answers": 6000, "fan_in": 50, "synthesis": 500, "total": 7000},
			[]int64{5000, 5950}},
		{"a job stored before kinds is time travel's", job.Job{
			ID: "j3", Status: job.StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(7000 * time.Millisecond),
			Members: members()[:1],
		}, "snapshot",
			map[string]int64{"queue_wait": 100, "snapshots": 5000, "total": 7000},
			[]int64{5000}},
		{"canceled while queued", job.Job{
			ID: "j4", Noun: "snapshot", Status: job.StatusCanceled, CreatedAt: t0, FinishedAt: t0.Add(50 * time.Millisecond),
			Members: []job.Member{{Index: 0, Label: "a", Status: job.MemberCanceled}},
		}, "snapshot",
			map[string]int64{"total": 50},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := FromJob(&tt.job)
			if s.JobID != tt.job.ID || s.Status != string(tt.job.Status) || s.At != tt.job.FinishedAt.UnixMilli() {
				t.Errorf("sample %+v", s)
			}
			if s.Noun != tt.wantNoun || s.MemberStage() != tt.wantNoun {
				t.Errorf("noun %q, member stage %q; want %q", s.Noun, s.MemberStage(), tt.wantNoun)
			}
			if !reflect.DeepEqual(s.Stages, tt.wantStages) {
				t.Errorf("stages %v, want %v", s.Stages, tt.wantStages)
			}
			if !reflect.DeepEqual(s.Members, tt.wantMembers) {
				t.Errorf("members %v, want %v", s.Members, tt.wantMembers)
			}
			// The sample survives its JSON form.
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var back Sample
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
				t.Errorf("round trip %s: %+v, %v", b, back, err)
			}
		})
	}
	// A job that has not ended is sampled now, without a total.
	j := job.Job{ID: "j5", Noun: "snapshot", Status: job.StatusRunning, CreatedAt: time.Now(), Members: members()[:1]}
	before := time.Now().UnixMilli()
	s := FromJob(&j)
	if s.At < before || s.At > time.Now().UnixMilli() {
		t.Errorf("unended job sampled at %d, want now", s.At)
	}
	if _, ok := s.Stages["total"]; ok {
		t.Errorf("unended job has a total: %v", s.Stages)
	}
}

// Samples recorded before kinds existed read as time travel's.
func TestSampleBeforeKinds(t *testing.T) {
	t.Parallel()
	var s Sample
	raw := `{"job_id":"j","status":"completed","at_ms":5,"stages":{"snapshots":900,"total":1000},"snapshots":[500,900]}`
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	if s.JobID != "j" || s.At != 5 || s.Stages["snapshots"] != 900 || !reflect.DeepEqual(s.Members, []int64{500, 900}) || s.MemberStage() != "snapshot" {
		t.Errorf("old sample read as %+v", s)
	}
	if st := Stats([]Sample{s}); st["snapshot"].Count != 2 || st["snapshot"].Max != 900 {
		t.Errorf("old sample's snapshot stats %+v", st["snapshot"])
	}
	if err := json.Unmarshal([]byte(`{"stages":[]}`), &s); err == nil {
		t.Error("a malformed sample decoded")
	}
}

// Stats, the breakdown and the alerts work for jobs of any kind, alone or
// mixed.
func TestStatsBreakdownOfKinds(t *testing.T) {
	t.Parallel()
	tt := Sample{Noun: "snapshot", Stages: map[string]int64{"queue_wait": 100, "snapshots": 6000, "fan_in": 100,
		"key_changes": 1000, "narrative": 3800, "total": 10000}, Members: []int64{5000, 6000}}
	ens := Sample{Noun: "answer", Stages: map[string]int64{"queue_wait": 300, "answers": 4000, "fan_in": 200,
		"analysis": 1000, "synthesis": 5500, "total": 10000}, Members: []int64{3000, 4000, 2000}}

	st := Stats([]Sample{tt, ens})
	if st["snapshot"].Count != 2 || st["answer"].Count != 3 || st["answer"].Max != 4000 {
		t.Errorf("member stages %+v, %+v", st["snapshot"], st["answer"])
	}
	if st["synthesis"].Count != 1 || st["narrative"].Count != 1 || st["queue_wait"].Count != 2 || st["total"].Count != 2 {
		t.Errorf("stats %+v", st)
	}

	tests := []struct {
		name    string
		samples []Sample
		want    []Share
	}{
		{"time travel", []Sample{tt}, []Share{
			{"queue_wait", 100, 1}, {"snapshots", 6000, 60}, {"fan_in", 100, 1}, {"key_changes", 1000, 10}, {"narrative", 3800, 38},
		}},
		{"ensemble", []Sample{ens}, []Share{
			{"queue_wait", 300, 3}, {"answers", 4000, 40}, {"fan_in", 200, 2}, {"analysis", 1000, 10}, {"synthesis", 5500, 55},
		}},
		{"mixed: a stage a job skipped counts as 0", []Sample{tt, ens}, []Share{
			{"queue_wait", 200, 2}, {"answers", 2000, 20}, {"snapshots", 3000, 30}, {"fan_in", 150, 1.5},
			{"analysis", 500, 5}, {"key_changes", 500, 5}, {"narrative", 1900, 19}, {"synthesis", 2750, 27.5},
		}},
	}
	for _, c := range tests {
		b := LatencyBreakdown(c.samples)
		if b.Jobs != len(c.samples) || b.MeanTotalMS != 10000 || !reflect.DeepEqual(b.Stages, c.want) {
			t.Errorf("%s: breakdown %+v, want stages %+v", c.name, b, c.want)
		}
	}

	// The snapshot alert is time travel's member stage.
	th := Thresholds{SnapshotP95Warning: 4500 * time.Millisecond}
	if a := Alerts(Stats([]Sample{ens}), th, time.Hour); len(a) != 0 {
		t.Errorf("alerts of an ensemble: %+v", a)
	}
	if a := Alerts(Stats([]Sample{tt}), th, time.Hour); len(a) != 1 || a[0].Name != "SnapshotP95High" || a[0].Stage != "snapshot" || a[0].ValueMS != 6000 {
		t.Errorf("alerts of time travel: %+v", a)
	}
}
