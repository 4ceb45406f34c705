package bench

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// Figure is one headline number of a scenario, the unit an A/B comparison
// works on.
type Figure struct {
	Scenario string  `json:"scenario"`
	Measure  string  `json:"measure"`
	Unit     string  `json:"unit"`
	Value    float64 `json:"value"`
	// HigherIsBetter is true for rates (jobs/s), false for times, costs
	// and sizes.
	HigherIsBetter bool `json:"higher_is_better"`
}

// Figures returns the headline numbers of the scenarios in r, in a fixed
// order: what an A/B run compares.
func Figures(r Report) []Figure {
	var out []Figure
	add := func(scenario, measure, unit string, v float64, higher bool) {
		out = append(out, Figure{Scenario: scenario, Measure: measure, Unit: unit, Value: v, HigherIsBetter: higher})
	}
	if s := r.Seed; s != nil {
		add("seed", "service p50", "ms", s.Service.P50, false)
	}
	if l := r.Latency; l != nil {
		add("latency", "POST → job.completed p50", "ms", l.Total.P50, false)
		add("latency", "overhead over critical path p50", "ms", l.Overhead.P50, false)
		add("latency", "overhead over critical path p95", "ms", l.Overhead.P95, false)
		add("latency", "first text over TTFT p50", "ms", l.FirstTextOverhead.P50, false)
	}
	if e := r.Ensemble; e != nil {
		add("ensemble", "POST → job.completed p50", "ms", e.Total.P50, false)
		add("ensemble", "overhead over critical path p50", "ms", e.Overhead.P50, false)
		add("ensemble", "overhead over critical path p95", "ms", e.Overhead.P95, false)
		add("ensemble", "first text over TTFT p50", "ms", e.FirstTextOverhead.P50, false)
	}
	if t := r.Throughput; t != nil {
		add("throughput", "jobs completed", "jobs/s", t.JobsPerSecond, true)
		add("throughput", "job latency p50", "ms", t.Latency.P50, false)
		add("throughput", "Redis commands/job", "commands", t.CommandsPerJob, false)
		add("throughput", "Redis bytes per finished job", "bytes", t.RedisBytesPerJob, false)
		for _, p := range []string{"api", "worker", "redis", "llmsim"} {
			if v, ok := t.CPUPerJobMS[p]; ok {
				add("throughput", p+" CPU per job", "ms", v, false)
			}
		}
		if t.StreamedTokensPerJob > 0 {
			add("throughput", "service CPU per 1,000 streamed tokens", "ms", t.ServiceCPUPerKTokensMS, false)
		}
		if t.IdleSeconds > 0 {
			add("throughput", "idle Redis commands/s per worker", "commands/s", t.IdleCommandsPerSecondPerWorker, false)
		}
	}
	if s := r.Streaming; s != nil {
		add("streaming", "jobs completed", "jobs/s", s.JobsPerSecond, true)
		add("streaming", "service CPU per 1,000 streamed tokens", "ms", s.ServiceCPUPerKTokensMS, false)
		add("streaming", "Redis commands/job", "commands", s.CommandsPerJob, false)
		for _, p := range []string{"api", "worker", "redis"} {
			if v, ok := s.CPUPerJobMS[p]; ok {
				add("streaming", p+" CPU per job", "ms", v, false)
			}
		}
	}
	if l := r.Load; l != nil {
		add("load", "total p50", "ms", l.Total.P50, false)
		add("load", "wall", "s", l.WallSeconds, false)
	}
	if s := r.SSE; s != nil && len(s.Points) > 0 {
		last := s.Points[len(s.Points)-1]
		add("sse", fmt.Sprintf("api RSS at %d subscribers", last.Subscribers), "MB", last.RSSMB, false)
		add("sse", fmt.Sprintf("api goroutine stacks at %d subscribers", last.Subscribers), "MB", last.StackMB, false)
	}
	if m := r.Memory; m != nil {
		add("memory", "worker RSS", "MB", m.WorkerRSSMB, false)
	}
	if f := r.Faults; f != nil {
		add("faults", "completed under faults", "%", f.CompletedPct, true)
		add("faults", "provider calls with / without faults", "x", f.CallRatio, false)
	}
	if c := r.Cached; c != nil {
		add("cached", "POST → job.completed p50", "ms", c.Total.P50, false)
	}
	return out
}

// Side names one of the two builds of an A/B run.
type Side string

// The two builds: the base revision, and this working tree.
const (
	SideBase Side = "base"
	SideThis Side = "this"
)

// ABRun is one run of one scenario against one build.
type ABRun struct {
	Round    int      `json:"round"`
	Side     Side     `json:"side"`
	Scenario string   `json:"scenario"`
	Figures  []Figure `json:"figures,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// ABRow compares one figure between the builds: the median over the rounds
// of each, and this build's median over the base's.
type ABRow struct {
	Scenario       string    `json:"scenario"`
	Measure        string    `json:"measure"`
	Unit           string    `json:"unit"`
	HigherIsBetter bool      `json:"higher_is_better"`
	Base           []float64 `json:"base"`
	This           []float64 `json:"this"`
	BaseMedian     float64   `json:"base_median"`
	ThisMedian     float64   `json:"this_median"`
	// Ratio is ThisMedian / BaseMedian (0 when either side is missing or
	// the base is 0).
	Ratio float64 `json:"ratio"`
}

// ABReport is an A/B run: the same scenarios against the binaries of a base
// revision and of this tree, in alternating order, in one process.
type ABReport struct {
	When      time.Time `json:"when"`
	Machine   string    `json:"machine"`
	BaseRev   string    `json:"base_rev"`
	ThisRev   string    `json:"this_rev"`
	Scenarios []string  `json:"scenarios"`
	Rounds    int       `json:"rounds"`
	// LoadAvg is /proc/loadavg at the start and at the end of the run.
	LoadAvg [2]string `json:"load_avg"`
	Runs    []ABRun   `json:"runs"`
	Rows    []ABRow   `json:"rows"`
}

// Order returns the order of the two builds in round r (from 0): base
// first in even rounds, this build first in odd ones, so that drift of the
// machine's load over the run does not favour one side.
func Order(round int) [2]Side {
	if round%2 == 0 {
		return [2]Side{SideBase, SideThis}
	}
	return [2]Side{SideThis, SideBase}
}

// Compare fills r.Rows from r.Runs: one row per figure that either side
// reported, in the order the figures first appear.
func (r *ABReport) Compare() {
	type key struct{ scenario, measure string }
	rows := map[key]*ABRow{}
	var order []key
	for _, run := range r.Runs {
		for _, f := range run.Figures {
			k := key{f.Scenario, f.Measure}
			row, ok := rows[k]
			if !ok {
				row = &ABRow{Scenario: f.Scenario, Measure: f.Measure, Unit: f.Unit, HigherIsBetter: f.HigherIsBetter}
				rows[k] = row
				order = append(order, k)
			}
			if run.Side == SideBase {
				row.Base = append(row.Base, f.Value)
			} else {
				row.This = append(row.This, f.Value)
			}
		}
	}
	r.Rows = r.Rows[:0]
	for _, k := range order {
		row := rows[k]
		row.BaseMedian, row.ThisMedian = median(row.Base), median(row.This)
		if len(row.Base) > 0 && len(row.This) > 0 && row.BaseMedian != 0 {
			row.Ratio = row.ThisMedian / row.BaseMedian
		}
		r.Rows = append(r.Rows, *row)
	}
}

// Failed returns the runs that ended in an error.
func (r *ABReport) Failed() []ABRun {
	var out []ABRun
	for _, run := range r.Runs {
		if run.Error != "" {
			out = append(out, run)
		}
	}
	return out
}

// median is the middle value of vs (the mean of the two middle ones for an
// even count); 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Print writes the comparison as a Markdown table, each side's values per
// round after its median, then the runs that failed.
func (r *ABReport) Print(w io.Writer) {
	fmt.Fprintf(w, "\nMachine: %s; load average at start %s, at end %s\n", r.Machine, r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintf(w, "\n## A/B: base %s against this build %s (%d rounds, order alternating)\n\n", r.BaseRev, r.ThisRev, r.Rounds)
	fmt.Fprintf(w, "| scenario | measure | base %s | this build | this / base | better |\n| --- | --- | --- | --- | --- | --- |\n", r.BaseRev)
	for _, row := range r.Rows {
		better := "lower"
		if row.HigherIsBetter {
			better = "higher"
		}
		ratio := "—"
		if row.Ratio != 0 {
			ratio = fmt.Sprintf("%.3f", row.Ratio)
		}
		fmt.Fprintf(w, "| %s | %s (%s) | %s | %s | %s | %s |\n", row.Scenario, row.Measure, row.Unit,
			formatSide(row.Base), formatSide(row.This), ratio, better)
	}
	for _, run := range r.Failed() {
		fmt.Fprintf(w, "\nround %d, %s, %s failed: %s\n", run.Round+1, run.Side, run.Scenario, run.Error)
	}
}

// formatSide writes a side's median and, with more than one round, each
// round's value: "95.2 (94.0, 96.4)".
func formatSide(vs []float64) string {
	if len(vs) == 0 {
		return "—"
	}
	s := formatValue(median(vs))
	if len(vs) > 1 {
		parts := make([]string, len(vs))
		for i, v := range vs {
			parts[i] = formatValue(v)
		}
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func formatValue(v float64) string {
	if v >= 1000 || v <= -1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// LoadAvg returns the first three fields of /proc/loadavg, or "?".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// ResolveRevision returns the full commit id and the short name of rev in
// the repository that contains the working directory.
func ResolveRevision(ctx context.Context, rev string) (full, short string, err error) {
	root, err := stack.ModuleRoot()
	if err != nil {
		return "", "", err
	}
	full, err = git(ctx, root, "rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return "", "", err
	}
	short, err = git(ctx, root, "rev-parse", "--short", full)
	return full, short, err
}

// DescribeWorkingTree names this build: HEAD's short id, "+dirty" when the
// tree has changes that are not committed.
func DescribeWorkingTree(ctx context.Context) string {
	root, err := stack.ModuleRoot()
	if err != nil {
		return "working tree"
	}
	head, err := git(ctx, root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "working tree"
	}
	if st, err := git(ctx, root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		head += "+dirty"
	}
	return head
}

// BuildRevision builds the service binaries (api, worker, llmsim) of commit
// rev of the repository that contains the working directory into binDir:
// it extracts the commit's files (git archive) into a temporary directory,
// builds there and removes the directory. It leaves the repository, its
// index and its work tree untouched. The revision must have cmd/api,
// cmd/worker and cmd/llmsim; their packages may live elsewhere (the
// simulator was internal/llmsim before the tooling moved under
// internal/tooling), as each revision builds its own tree.
func BuildRevision(ctx context.Context, rev, binDir string) (err error) {
	root, err := stack.ModuleRoot()
	if err != nil {
		return err
	}
	src, err := os.MkdirTemp("", "bench-ab-src-")
	if err != nil {
		return fmt.Errorf("build %s: %w", rev, err)
	}
	defer func() {
		if rerr := os.RemoveAll(src); rerr != nil && err == nil {
			err = fmt.Errorf("build %s: remove sources: %w", rev, rerr)
		}
	}()
	cmd := exec.CommandContext(ctx, "git", "archive", "--format=tar", rev)
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("build %s: %w", rev, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("build %s: git archive: %w", rev, err)
	}
	xerr := extractTar(out, src)
	if xerr != nil {
		_, _ = io.Copy(io.Discard, out) // let git finish writing
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("build %s: git archive: %w: %s", rev, err, strings.TrimSpace(stderr.String()))
	}
	if xerr != nil {
		return fmt.Errorf("build %s: %w", rev, xerr)
	}
	// No VCS stamp: the extracted tree has no .git.
	if err := stack.BuildAt(ctx, src, binDir, "-buildvcs=false"); err != nil {
		return fmt.Errorf("build %s: %w", rev, err)
	}
	return nil
}

// extractTar writes the regular files and directories of the tar stream r
// under dir. It refuses names that would land outside dir; symbolic links
// are skipped (the service's sources have none that a build needs).
func extractTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("archive entry %q is outside the tree", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o644)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(f, tr)
			if err := f.Close(); cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return fmt.Errorf("extract %s: %w", h.Name, cerr)
			}
		}
	}
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}
