// Package chaos is the chaos suite of the time-travel service: it runs the
// real processes on loopback (Redis with and without AOF, the LLM
// simulator, two workers, two api replicas), breaks one thing per scenario
// (a worker killed mid-snapshot or mid-aggregation, an api replica killed
// under a burst of POSTs, Redis shut down, killed or restarted empty, a
// worker drained, the provider down for a minute or two) and measures what
// the users of the service would see: every accepted job's end, stuck jobs,
// duplicated events in the streams, provider calls against a fault-free run,
// and the time from the fault to recovery.
//
// Nothing is assumed about the service beyond its public contract
// (docs/api.md), its configuration variables and the metrics it exports,
// plus two observation points: each worker reaches the simulator through a
// tap of the suite's own (a reverse proxy that knows which job every call in
// flight belongs to, so a kill can be aimed and its victims named), and
// asynq's queue counters tell when no task is left to run. Every figure is
// measured in the run; a scenario that cannot run through is an ERROR, not
// a PASS.
//
// The suite is slow by nature (each scenario waits past the last job's
// deadline, and the outages last one and two minutes) and is not part of
// `make test`; run it with `make chaos`.
package chaos

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/tooling/bench"
)

// Config configures Run.
type Config struct {
	// BinDir holds the api, worker and llmsim binaries (stack.Build).
	BinDir string
	// Dir receives each scenario's logs and Redis files, in a directory
	// named after it. Empty: a temporary directory, removed at the end
	// unless Keep.
	Dir  string
	Keep bool
	// Run selects the scenarios whose name it matches; nil runs them all.
	Run *regexp.Regexp
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Command is the command line, for the report.
	Command string
	// SkipSelfCheck skips the check, before the scenarios, that the suite
	// sees an injected duplicate and a stuck job (about 15 s).
	SkipSelfCheck bool
}

// scenario is one row of the table.
type scenario struct {
	Name string
	// Description says what the scenario does, in a sentence.
	Description string
	// Recovery defines the scenario's recovery time.
	Recovery string
	Config   clusterConfig
	// Run starts the load, injects the fault and returns how to judge the
	// outcome once collect has read every job.
	Run func(ctx context.Context, c *cluster) (judge func(*Row), err error)
}

// Names returns the names of the scenarios, in the order they run.
func Names() []string {
	var out []string
	for _, s := range scenarios() {
		out = append(out, s.Name)
	}
	return out
}

// Describe returns each scenario's name and description, one per line.
func Describe() string {
	var b strings.Builder
	for _, s := range scenarios() {
		fmt.Fprintf(&b, "%-24s %s\n", s.Name, s.Description)
	}
	return b.String()
}

// Run runs the selected scenarios one after another, each on a service of
// its own, and returns the report. It fails only when no scenario matches
// or the directory cannot be made; a scenario that cannot run through is
// reported in its row.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	var selected []scenario
	for _, s := range scenarios() {
		if cfg.Run == nil || cfg.Run.MatchString(s.Name) {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		return nil, fmt.Errorf("chaos: no scenario matches %q (have %s)", cfg.Run, strings.Join(Names(), ", "))
	}
	base := cfg.Dir
	if base == "" {
		d, err := os.MkdirTemp("", "ttchaos-")
		if err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
		base = d
		if !cfg.Keep {
			defer os.RemoveAll(d)
		}
	}
	rep := &Report{When: time.Now(), Machine: bench.MachineDescription(), Command: cfg.Command}
	if !cfg.SkipSelfCheck {
		if err := selfCheck(ctx, cfg, filepath.Join(base, "self-check")); err != nil {
			return nil, fmt.Errorf("chaos: %w", err)
		}
	}
	for _, s := range selected {
		if ctx.Err() != nil {
			break
		}
		row := runScenario(ctx, s, cfg, filepath.Join(base, s.Name))
		rep.Rows = append(rep.Rows, row)
	}
	rep.WallSeconds = time.Since(rep.When).Seconds()
	if cfg.Keep {
		fmt.Fprintf(logWriter(cfg.Log), "logs and Redis files kept in %s\n", base)
	}
	return rep, nil
}

func logWriter(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// runScenario runs one scenario on a fresh service and fills its row.
func runScenario(ctx context.Context, s scenario, cfg Config, dir string) *Row {
	start := time.Now()
	row := &Row{Scenario: s.Name, Description: s.Description, Started: start, Ended: map[string]int{},
		Recovery: Recovery{Definition: s.Recovery, Text: "—"}}
	defer func() { row.WallSeconds = time.Since(start).Seconds() }()
	log := &progress{w: cfg.Log, name: s.Name, start: start}
	log.printf("starting: %s", s.Description)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err := startCluster(sctx, s.Config, cfg.BinDir, dir, log)
	cancel()
	if err != nil {
		row.Error = "start: " + err.Error()
		log.printf("ERROR %s", row.Error)
		return row
	}
	defer c.stop()
	judge, err := s.Run(ctx, c)
	if err != nil {
		row.Error = err.Error()
		log.printf("ERROR %s", row.Error)
	}
	c.collect(ctx)
	fill(ctx, c, row)
	if judge != nil {
		judge(row)
	}
	log.printf("%s: accepted %d, %s, stuck %d, duplicates %d, calls %d (fault-free %d), recovery %s",
		passText(row.Pass()), row.Accepted, formatCounts(row.Ended), row.Stuck, row.Duplicates,
		row.ProviderCalls, row.FaultFreeCalls, row.Recovery.Text)
	return row
}

// fill sets what every scenario measures the same way.
func fill(ctx context.Context, c *cluster, row *Row) {
	jobs := c.jobs.all()
	row.Accepted = len(jobs)
	var unread int
	for _, j := range jobs {
		switch {
		case j.Lost:
			row.Lost++
		case terminal(j.Status):
			row.Ended[j.Status]++
		}
		if j.Stuck {
			row.Stuck++
		}
		row.Duplicates += j.Audit.Duplicates
		for k, n := range j.Audit.Kinds {
			if row.DuplicateKinds == nil {
				row.DuplicateKinds = map[string]int{}
			}
			row.DuplicateKinds[k] += n
		}
		for _, e := range j.Audit.Examples {
			if len(row.DuplicateExamples) < 5 {
				row.DuplicateExamples = append(row.DuplicateExamples, "job "+j.ID+": "+e)
			}
		}
		row.Late += j.Audit.Late
		row.FaultFreeCalls += int64(j.Audit.faultFreeCalls())
		if j.ReadErr != "" {
			unread++
		}
		row.Jobs = append(row.Jobs, JobLine{ID: j.ID, Status: j.Status, Lost: j.Lost, Stuck: j.Stuck, Attempts: j.Attempts,
			Accepted: j.Accepted, Deadline: j.Deadline, Finished: j.Finished, Errors: j.Errors, Duplicates: j.Audit.Kinds,
			Events: len(j.Events), ReadErr: j.ReadErr})
	}
	if st, err := c.simStats(ctx); err == nil {
		row.ProviderCalls = st.Total.Requests
		if f := st.Total.Faults.Total(); f > 0 {
			row.note("the simulator injected %d faults", f)
		}
	} else {
		row.note("simulator counters unreadable: %v", err)
	}
	row.Breaker = c.breaker.report()
	if row.Late > 0 {
		row.note("%d events came after their job's job.completed", row.Late)
	}
	if msg, n, of := commonError(jobs); n > 0 {
		row.note("%d of the %d jobs not completed say %q", n, of, msg)
	}
	if unread > 0 {
		row.note("%d streams could not be read whole (e.g. %s)", unread, firstReadErr(jobs))
	}
	c.jobs.mu.Lock()
	for _, msg := range slices.Sorted(maps.Keys(c.jobs.postErrors)) {
		row.note("%d POSTs abandoned after retries: %s", c.jobs.postErrors[msg], msg)
	}
	c.jobs.mu.Unlock()
}

// commonError returns the error most of the jobs that ended other than
// completed report, how many report it, and how many such jobs there are.
func commonError(jobs []*trackedJob) (string, int, int) {
	count := map[string]int{}
	of := 0
	for _, j := range jobs {
		if j.Lost || j.Status == "completed" || !terminal(j.Status) {
			continue
		}
		of++
		seen := map[string]bool{}
		for _, e := range j.Errors {
			if len(e) > 160 {
				e = e[:160] + "…"
			}
			if !seen[e] {
				seen[e] = true
				count[e]++
			}
		}
	}
	best, n := "", 0
	for _, e := range slices.Sorted(maps.Keys(count)) {
		if count[e] > n {
			best, n = e, count[e]
		}
	}
	return best, n, of
}

func firstReadErr(jobs []*trackedJob) string {
	for _, j := range jobs {
		if j.ReadErr != "" {
			return j.ReadErr
		}
	}
	return ""
}

func terminal(status string) bool {
	switch status {
	case "completed", "partial", "failed", "canceled":
		return true
	}
	return false
}

// formatCounts writes counts by name, sorted: "completed 19, partial 1".
func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// endsSince summarises, over jobs, the time from t to each job's end. Jobs
// that never ended count in Never, and make the p95 infinite when they are
// more than 5 %.
func endsSince(jobs []*trackedJob, t time.Time) Recovery {
	var ds []time.Duration
	never := 0
	for _, j := range jobs {
		if j.Finished.IsZero() || j.Lost {
			never++
			continue
		}
		ds = append(ds, max(j.Finished.Sub(t), 0))
	}
	s := bench.Summarize(ds)
	r := Recovery{Summary: &s, Never: never}
	switch {
	case len(jobs) == 0:
		r.Text = "no job"
	case never > 0:
		r.Text = fmt.Sprintf("p50 %s, %d of %d never ended", msText(s.P50, len(ds) > 0), never, len(jobs))
	default:
		r.Text = fmt.Sprintf("p50 %.1f s / p95 %.1f s (n=%d)", s.P50/1000, s.P95/1000, len(ds))
	}
	return r
}

// p95Within reports whether at least 95 % of the jobs ended within d of
// the fault (the nearest-rank p95, with jobs that never ended counted as
// infinitely late).
func p95Within(jobs []*trackedJob, t time.Time, d time.Duration) (bool, string) {
	if len(jobs) == 0 {
		return false, "no job was in flight on the victim"
	}
	ds := make([]time.Duration, 0, len(jobs))
	for _, j := range jobs {
		if j.Finished.IsZero() || j.Lost {
			ds = append(ds, time.Duration(1<<62))
			continue
		}
		ds = append(ds, max(j.Finished.Sub(t), 0))
	}
	slices.Sort(ds)
	p95 := ds[max(0, (95*len(ds)+99)/100-1)]
	if p95 == time.Duration(1<<62) {
		return false, fmt.Sprintf("p95 never (%d jobs)", len(ds))
	}
	return p95 <= d, fmt.Sprintf("p95 %s (%d jobs)", seconds(p95), len(ds))
}

func msText(ms float64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}

// statusesOf counts jobs by status ("never ended" for the others).
func statusesOf(jobs []*trackedJob) map[string]int {
	m := map[string]int{}
	for _, j := range jobs {
		switch {
		case j.Lost:
			m["lost"]++
		case terminal(j.Status):
			m[j.Status]++
		default:
			m["never ended"]++
		}
	}
	return m
}

// allCompleted reports whether every job ended completed, and the counts.
func allCompleted(jobs []*trackedJob) (bool, string) {
	m := statusesOf(jobs)
	return len(jobs) > 0 && m["completed"] == len(jobs), formatCounts(m)
}

// liveExactness sums the exactness of the live readers of jobs.
func liveExactness(jobs []*trackedJob) (readers, exact, reconnects int, sum Exactness) {
	for _, j := range jobs {
		if j.live == nil || j.Lost {
			continue
		}
		readers++
		j.live.mu.Lock()
		live := append([]client.Event(nil), j.live.events...)
		reconnects += j.live.reconnects
		j.live.mu.Unlock()
		e := exactness(live, j.Events)
		if e.Exact() {
			exact++
		}
		sum.Duplicates += e.Duplicates
		sum.Missing += e.Missing
		sum.Phantom += e.Phantom
		sum.Reordered = sum.Reordered || e.Reordered
	}
	return readers, exact, reconnects, sum
}
