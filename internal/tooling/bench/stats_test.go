package bench

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 1; i <= 20; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(ds)
	if s.N != 20 || s.P50 != 10 || s.P95 != 19 || s.Max != 20 || s.Min != 1 {
		t.Fatalf("Summarize = %+v", s)
	}
	if z := Summarize(nil); z.N != 0 {
		t.Fatalf("empty: %+v", z)
	}
	if one := Summarize([]time.Duration{1500 * time.Microsecond}); one.P50 != 1.5 || one.P95 != 1.5 {
		t.Fatalf("one value: %+v", one)
	}
}
