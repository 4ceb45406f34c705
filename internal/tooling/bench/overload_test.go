package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestSpearman(t *testing.T) {
	for _, tc := range []struct {
		name   string
		x, y   []float64
		want   float64
		wantOK bool
	}{
		{name: "same order", x: []float64{1, 2, 3, 4, 5}, y: []float64{10, 20, 30, 40, 50}, want: 1, wantOK: true},
		{name: "reverse order", x: []float64{1, 2, 3, 4, 5}, y: []float64{5, 4, 3, 2, 1}, want: -1, wantOK: true},
		{name: "monotone, not linear", x: []float64{0.1, 0.2, 0.3, 0.4}, y: []float64{1, 8, 27, 1000}, want: 1, wantOK: true},
		// Ranks 1..5 against 2,1,3,4,5: Σd² = 2, ρ = 1 − 6·2/(5·24).
		{name: "one swap", x: []float64{1, 2, 3, 4, 5}, y: []float64{2, 1, 3, 4, 5}, want: 0.9, wantOK: true},
		// Σd² = 4 · 2² = 16 over 4 pairs: ρ = 1 − 6·16/(4·15) = −0.6.
		{name: "two far swaps", x: []float64{1, 2, 3, 4}, y: []float64{3, 4, 1, 2}, want: -0.6, wantOK: true},
		// y ranks 1.5, 1.5, 3, 4 (average ranks); Pearson of the ranks.
		{name: "tie", x: []float64{1, 2, 3, 4}, y: []float64{7, 7, 8, 9}, want: 4.5 / math.Sqrt(5*4.5), wantOK: true},
		{name: "unsorted input", x: []float64{3, 1, 2}, y: []float64{30, 10, 20}, want: 1, wantOK: true},
		{name: "all ties", x: []float64{1, 2, 3}, y: []float64{4, 4, 4}, wantOK: false},
		{name: "one pair", x: []float64{1}, y: []float64{1}, wantOK: false},
		{name: "none", wantOK: false},
		{name: "lengths differ", x: []float64{1, 2}, y: []float64{1, 2, 3}, wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Spearman(tc.x, tc.y)
			if ok != tc.wantOK || math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Spearman(%v, %v) = %v, %v; want %v, %v", tc.x, tc.y, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestAverageRanks(t *testing.T) {
	for _, tc := range []struct {
		in, want []float64
	}{
		{in: nil, want: []float64{}},
		{in: []float64{5}, want: []float64{1}},
		{in: []float64{30, 10, 20}, want: []float64{3, 1, 2}},
		{in: []float64{2, 1, 2, 3}, want: []float64{2.5, 1, 2.5, 4}},
		{in: []float64{4, 4, 4}, want: []float64{2, 2, 2}},
	} {
		if got := averageRanks(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("averageRanks(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCapacityFloor(t *testing.T) {
	for _, tc := range []struct {
		jobs    int
		perJob  float64
		cap     int
		wantSec float64
	}{
		{jobs: 500, perJob: 4.6, cap: 64, wantSec: 35.9375},
		{jobs: 64, perJob: 1, cap: 64, wantSec: 1},
		{jobs: 10, perJob: 4.6, cap: 0, wantSec: 0},
	} {
		if got := capacityFloor(tc.jobs, tc.perJob, tc.cap); math.Abs(got-tc.wantSec) > 1e-9 {
			t.Errorf("capacityFloor(%d, %v, %d) = %v, want %v", tc.jobs, tc.perJob, tc.cap, got, tc.wantSec)
		}
	}
}

func TestSumMetric(t *testing.T) {
	const name = "timetravel_llm_capacity_giveups_total"
	for _, tc := range []struct {
		name    string
		text    string
		want    float64
		wantOK  bool
		wantErr bool
	}{
		{name: "labelled samples summed", text: strings.Join([]string{
			"# HELP " + name + " Waits for provider capacity that gave up.",
			"# TYPE " + name + " counter",
			name + `{provider="openai"} 12`,
			name + `{provider="other",note="a}b"} 3`,
			"go_goroutines 42",
		}, "\n"), want: 15, wantOK: true},
		{name: "unlabelled", text: name + " 7\n", want: 7, wantOK: true},
		{name: "with timestamp", text: name + `{provider="openai"} 2 1700000000000` + "\n", want: 2, wantOK: true},
		{name: "absent", text: "go_goroutines 42\n# HELP " + name + " x\n", wantOK: false},
		{name: "longer name not counted", text: name + "_created 1.7e9\n" + name + " 1\n", want: 1, wantOK: true},
		{name: "bad value", text: name + " many\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := sumMetric(tc.text, name)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("sumMetric = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestOverloadTargets(t *testing.T) {
	good := OverloadRun{Workers: 1, Completed: 10, WallSeconds: 10, WallOverFloor: 1.05, P50OverWall: 0.5,
		FirstText: Summary{N: 10, P50: 1000}, FirstTextP50OverWall: 0.1, RankCorrelation: 0.95, PeakInFlight: 64}
	bad := OverloadRun{Workers: 2, Completed: 10, WallSeconds: 10, WallOverFloor: 1.5, P50OverWall: 0.9,
		FirstText: Summary{N: 10, P50: 5000}, FirstTextP50OverWall: 0.5, RankCorrelation: 0.2, PeakInFlight: 65}
	r := OverloadReport{ProviderCap: 64, FloorSeconds: 9, Runs: []OverloadRun{good, bad}}
	got := r.Targets()
	if len(got) != 10 {
		t.Fatalf("%d targets, want 10: %+v", len(got), got)
	}
	for i, tg := range got {
		if want := i < 5; tg.Met != want {
			t.Errorf("target %q (%s): met %v, want %v", tg.Name, tg.Got, tg.Met, want)
		}
	}
}
