package monitoring

import (
	"testing"
	"time"
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
		{Stages: map[string]int64{"queue_wait": 100, "snapshots": 6000, "fan_in": 100, "narrative": 3800, "total": 10000}, Snapshots: []int64{5000, 6000}},
		{Stages: map[string]int64{"queue_wait": 300, "snapshots": 10000, "fan_in": 100, "narrative": 9600, "total": 20000}, Snapshots: []int64{40000}},
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
