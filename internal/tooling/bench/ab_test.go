package bench

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCompare(t *testing.T) {
	t.Parallel()
	lat := func(p50 float64) []Figure {
		return Figures(Report{Latency: &LatencyReport{Total: Summary{P50: p50}}})
	}
	thr := func(jps float64) []Figure {
		return Figures(Report{Throughput: &ThroughputReport{LoopFigures: LoopFigures{JobsPerSecond: jps}}})
	}
	r := ABReport{Runs: []ABRun{
		{Round: 0, Side: SideBase, Scenario: "latency", Figures: lat(1320)},
		{Round: 0, Side: SideThis, Scenario: "latency", Figures: lat(1330)},
		{Round: 1, Side: SideThis, Scenario: "latency", Figures: lat(1350)},
		{Round: 1, Side: SideBase, Scenario: "latency", Figures: lat(1340)},
		{Round: 0, Side: SideBase, Scenario: "throughput", Figures: thr(100)},
		{Round: 0, Side: SideThis, Scenario: "throughput", Error: "boom"},
	}}
	r.Compare()
	find := func(scenario, measure string) ABRow {
		t.Helper()
		for _, row := range r.Rows {
			if row.Scenario == scenario && row.Measure == measure {
				return row
			}
		}
		t.Fatalf("no row %s/%s in %+v", scenario, measure, r.Rows)
		return ABRow{}
	}
	tests := []struct {
		scenario, measure string
		base, this, ratio float64
		higher            bool
	}{
		{"latency", "POST → job.completed p50", 1330, 1340, 1340.0 / 1330, false},
		// The failed run contributes nothing: no ratio.
		{"throughput", "jobs completed", 100, 0, 0, true},
	}
	for _, tt := range tests {
		row := find(tt.scenario, tt.measure)
		if row.BaseMedian != tt.base || row.ThisMedian != tt.this || row.Ratio != tt.ratio || row.HigherIsBetter != tt.higher {
			t.Errorf("%s/%s = %+v, want base %v this %v ratio %v higher %v", tt.scenario, tt.measure, row, tt.base, tt.this, tt.ratio, tt.higher)
		}
	}
	if f := r.Failed(); len(f) != 1 || f[0].Scenario != "throughput" || f[0].Side != SideThis {
		t.Errorf("Failed = %+v", f)
	}
	var out bytes.Buffer
	r.BaseRev, r.ThisRev, r.Rounds = "abc1234", "def5678", 2
	r.Print(&out)
	for _, want := range []string{"| latency | POST → job.completed p50 (ms) | 1330 (1320, 1340) | 1340 (1330, 1350) | 1.008 | lower |",
		"| throughput | jobs completed (jobs/s) | 100.0 | — | — | higher |", "round 1, this, throughput failed: boom"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Print lacks %q:\n%s", want, out.String())
		}
	}
}

func TestOrderAlternates(t *testing.T) {
	t.Parallel()
	for round, want := range [][2]Side{{SideBase, SideThis}, {SideThis, SideBase}, {SideBase, SideThis}} {
		if got := Order(round); got != want {
			t.Errorf("Order(%d) = %v, want %v", round, got, want)
		}
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestEnsembleCriticalPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  EnsembleConfig
		want time.Duration
	}{
		{"default: slowest member + analysis", DefaultEnsemble, 1350 * time.Millisecond},
		{"synthesis slower", EnsembleConfig{Members: []ModelLatency{{"a", 200 * time.Millisecond}, {"b", 100 * time.Millisecond}},
			Synthesis: 500 * time.Millisecond, Analysis: 50 * time.Millisecond}, 700 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := tt.cfg.CriticalPath(); got != tt.want {
			t.Errorf("%s: CriticalPath = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestExtractTar(t *testing.T) {
	t.Parallel()
	archive := func(entries ...*tar.Header) *bytes.Buffer {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			body := []byte("package x\n")
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(body))
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				if _, err := tw.Write(body); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return &b
	}
	tests := []struct {
		name    string
		entries []*tar.Header
		want    string // a file that must exist afterwards
		wantErr bool
	}{
		{"tree", []*tar.Header{{Name: "cmd/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "cmd/api/main.go", Typeflag: tar.TypeReg, Mode: 0o644}}, "cmd/api/main.go", false},
		{"outside", []*tar.Header{{Name: "../evil.go", Typeflag: tar.TypeReg, Mode: 0o644}}, "", true},
		{"absolute", []*tar.Header{{Name: "/evil.go", Typeflag: tar.TypeReg, Mode: 0o644}}, "", true},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		err := extractTar(archive(tt.entries...), dir)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err = %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if tt.want != "" {
			if b, err := os.ReadFile(filepath.Join(dir, tt.want)); err != nil || string(b) != "package x\n" {
				t.Errorf("%s: %s = %q, %v", tt.name, tt.want, b, err)
			}
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil.go")); err == nil {
			t.Errorf("%s: wrote outside the tree", tt.name)
		}
	}
}
