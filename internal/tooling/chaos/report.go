package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/internal/tooling/bench"
)

// Row is one scenario's result: one row of the table.
type Row struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description"`
	Started     time.Time `json:"started"`
	WallSeconds float64   `json:"wall_seconds"`

	// Accepted counts the jobs the api accepted (2xx).
	Accepted int `json:"accepted"`
	// Ended counts the accepted jobs by their status at the check.
	Ended map[string]int `json:"ended"`
	// Lost counts jobs whose data was gone at the check (404).
	Lost int `json:"lost,omitempty"`
	// Stuck counts jobs not terminal at their deadline plus one second.
	Stuck int `json:"stuck"`
	// Duplicates counts duplicated terminal and aggregation events over
	// every job's whole stream, by kind in DuplicateKinds.
	Duplicates        int            `json:"duplicates"`
	DuplicateKinds    map[string]int `json:"duplicate_kinds,omitempty"`
	DuplicateExamples []string       `json:"duplicate_examples,omitempty"`
	// Late counts events after a job's job.completed (webhooks aside).
	Late int `json:"late_events,omitempty"`
	// ProviderCalls is the simulator's count of chat completions;
	// FaultFreeCalls what the same jobs make when nothing fails.
	ProviderCalls  int64 `json:"provider_calls"`
	FaultFreeCalls int64 `json:"fault_free_calls"`
	// Recovery is the time from the fault to recovery, as the scenario
	// defines it.
	Recovery Recovery `json:"recovery"`
	// Breaker is what the watch of the workers' breakers saw.
	Breaker BreakerReport `json:"breaker"`
	// Checks are the scenario's own acceptance criteria.
	Checks []Check   `json:"checks"`
	Notes  []string  `json:"notes,omitempty"`
	Jobs   []JobLine `json:"jobs,omitempty"`
	// Error is set when the harness could not run the scenario through.
	Error string `json:"error,omitempty"`
}

// Recovery is a scenario's time from the fault to recovery.
type Recovery struct {
	Definition string `json:"definition"`
	// Text is the value as printed.
	Text string `json:"text"`
	// Summary holds the distribution when the recovery is per job.
	Summary *bench.Summary `json:"summary,omitempty"`
	// Never counts the jobs that never recovered.
	Never int `json:"never,omitempty"`
}

// Check is one criterion of a scenario. Acceptance criteria (those of the
// issue that asked for the suite) decide the row's result; an Info check
// is measured and shown but does not.
type Check struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	Got  string `json:"got"`
	Info bool   `json:"info,omitempty"`
}

// JobLine is one job of a scenario, in the JSON report.
type JobLine struct {
	ID         string         `json:"id"`
	Status     string         `json:"status"`
	Lost       bool           `json:"lost,omitempty"`
	Stuck      bool           `json:"stuck,omitempty"`
	Attempts   int            `json:"post_attempts,omitempty"`
	Accepted   time.Time      `json:"accepted"`
	Deadline   time.Time      `json:"deadline,omitzero"`
	Finished   time.Time      `json:"finished,omitzero"`
	Errors     []string       `json:"errors,omitempty"`
	Duplicates map[string]int `json:"duplicates,omitempty"`
	Events     int            `json:"events"`
	ReadErr    string         `json:"read_error,omitempty"`
}

// Pass reports whether the scenario met its acceptance: it ran through, no
// job was stuck, no event was duplicated and each check passed.
func (r *Row) Pass() bool {
	if r.Error != "" || r.Stuck > 0 || r.Duplicates > 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.Pass && !c.Info {
			return false
		}
	}
	return true
}

// check adds an acceptance criterion.
func (r *Row) check(name string, pass bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Pass: pass, Got: fmt.Sprintf(format, args...)})
}

// info adds a criterion that is shown but does not decide the result.
func (r *Row) info(name string, pass bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Pass: pass, Got: fmt.Sprintf(format, args...), Info: true})
}

func (r *Row) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Report is a run of the suite.
type Report struct {
	When        time.Time `json:"when"`
	Machine     string    `json:"machine"`
	Command     string    `json:"command"`
	WallSeconds float64   `json:"wall_seconds"`
	Rows        []*Row    `json:"scenarios"`
}

// Pass reports whether every scenario passed.
func (r *Report) Pass() bool {
	for _, row := range r.Rows {
		if !row.Pass() {
			return false
		}
	}
	return true
}

func passText(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// seconds formats a duration in seconds, one decimal.
func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// Markdown writes the report as a Markdown table, one row per scenario,
// then the definitions and each scenario's criteria and notes, ready to
// paste into docs/operations.md.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "Chaos suite, %s, %s; %s in all; `%s`.\n\n", r.When.Format("2006-01-02 15:04 MST"), r.Machine,
		seconds(time.Duration(r.WallSeconds*float64(time.Second))), r.Command)
	fmt.Fprintln(w, "| scenario | accepted | completed | partial | failed | canceled | stuck | dup. events | provider calls (fault-free) | recovery | 0 stuck | 0 dup. | scenario criteria | result |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|---|---|")
	for _, row := range r.Rows {
		crit, ok, any := "—", true, false
		for _, c := range row.Checks {
			if !c.Info {
				ok, any = ok && c.Pass, true
			}
		}
		if any {
			crit = passText(ok)
		}
		result := passText(row.Pass())
		if row.Error != "" {
			result = "ERROR"
		}
		accepted := fmt.Sprint(row.Accepted)
		if row.Lost > 0 {
			accepted += fmt.Sprintf(" (%d lost)", row.Lost)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %d | %d | %d (%d) | %s | %s | %s | %s | %s |\n",
			row.Scenario, accepted, row.Ended["completed"], row.Ended["partial"], row.Ended["failed"], row.Ended["canceled"],
			row.Stuck, row.Duplicates, row.ProviderCalls, row.FaultFreeCalls, cell(row.Recovery.Text),
			passText(row.Stuck == 0 && row.Error == ""), passText(row.Duplicates == 0 && row.Error == ""), crit, result)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Columns: jobs accepted (2xx; \"lost\": 404 after Redis lost its data); ended by status at the check;")
	fmt.Fprintln(w, "stuck: not terminal when read by GET after its deadline + 1 s; dup. events: over every job's whole")
	fmt.Fprintln(w, "stream read from the start, a snapshot end twice without a `snapshot.started` between, a second")
	fmt.Fprintln(w, "`job.completed`, `key_changes.*` or `narrative.completed/failed` twice (even across an `aggregate.started`),")
	fmt.Fprintln(w, "narrative deltas after the last `aggregate.started` that are not the `narrative.completed` text, or one")
	fmt.Fprintln(w, "event id twice; provider calls: the simulator's count, and in parentheses the fault-free count")
	fmt.Fprintln(w, "(snapshots + key changes + narrative per job, less cached answers). Scenario criteria: PASS/FAIL")
	fmt.Fprintln(w, "below come from the issue and decide the result; \"met\"/\"not met\" are measured for information only.")
	fmt.Fprintln(w)
	for _, row := range r.Rows {
		fmt.Fprintf(w, "- **%s** — %s Recovery: %s.", row.Scenario, row.Description, row.Recovery.Definition)
		if row.Error != "" {
			fmt.Fprintf(w, " ERROR: %s.", cell(row.Error))
		}
		for _, c := range row.Checks {
			if c.Info {
				met := "met"
				if !c.Pass {
					met = "not met"
				}
				fmt.Fprintf(w, " (%s) %s: %s.", met, c.Name, c.Got)
				continue
			}
			fmt.Fprintf(w, " %s %s: %s.", passText(c.Pass), c.Name, c.Got)
		}
		if row.Duplicates > 0 {
			var kinds []string
			for _, k := range slices.Sorted(maps.Keys(row.DuplicateKinds)) {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, row.DuplicateKinds[k]))
			}
			fmt.Fprintf(w, " Duplicates: %s", strings.Join(kinds, ", "))
			if len(row.DuplicateExamples) > 0 {
				fmt.Fprintf(w, " (e.g. %s)", row.DuplicateExamples[0])
			}
			fmt.Fprint(w, ".")
		}
		for _, n := range row.Notes {
			fmt.Fprintf(w, " %s.", strings.TrimSuffix(n, "."))
		}
		fmt.Fprintln(w)
	}
}

// cell keeps a table cell on one line and free of column separators.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", "/")
}
