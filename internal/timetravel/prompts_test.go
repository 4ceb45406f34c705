package timetravel

import (
	"regexp"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/job"
)

var isoDate = regexp.MustCompile(`\d{4}-\d{2}-\d{2}`)

var complexities = []Complexity{ComplexityBrief, ComplexityStandard, ComplexityDetailed}

func TestSnapshotPrompt(t *testing.T) {
	t.Parallel()
	tests := []TimePoint{
		{Date: "2023-01-01", Label: "January 2023"},
		{Date: "2023-03-14", Label: "March 14, 2023"},
		{Date: "2026-11-26", Label: "today (November 26, 2026)"},
		{Date: "1999-12-31", Label: "the eve of Y2K"},
	}
	const question = "What are the best AI models?"
	for _, tp := range tests {
		for _, c := range complexities {
			t.Run(tp.Date+"/"+string(c), func(t *testing.T) {
				t.Parallel()
				p := Snapshot(question, tp, c)
				all := p.System + "\n" + p.User
				dates := isoDate.FindAllString(all, -1)
				if len(dates) != 1 || dates[0] != tp.Date {
					t.Errorf("prompt names dates %q, want exactly [%s]:\n%s", dates, tp.Date, all)
				}
				if !strings.Contains(p.System, tp.Label) {
					t.Errorf("system prompt lacks the label %q:\n%s", tp.Label, p.System)
				}
				if p.User != question {
					t.Errorf("User = %q, want the question", p.User)
				}
				if p.MaxTokens <= 0 {
					t.Errorf("MaxTokens = %d", p.MaxTokens)
				}
			})
		}
	}
}

func TestMaxTokensByComplexity(t *testing.T) {
	t.Parallel()
	tp := TimePoint{Date: "2023-01-01", Label: "January 2023"}
	snap := Snapshot("q", tp, ComplexityStandard).MaxTokens
	narr := Narrative("q", threeSnaps, ComplexityStandard).MaxTokens
	for i := 1; i < len(complexities); i++ {
		lo, hi := complexities[i-1], complexities[i]
		if a, b := Snapshot("q", tp, lo).MaxTokens, Snapshot("q", tp, hi).MaxTokens; a >= b {
			t.Errorf("Snapshot MaxTokens: %s %d, %s %d; want increasing", lo, a, hi, b)
		}
		if a, b := Narrative("q", threeSnaps, lo).MaxTokens, Narrative("q", threeSnaps, hi).MaxTokens; a >= b {
			t.Errorf("Narrative MaxTokens: %s %d, %s %d; want increasing", lo, a, hi, b)
		}
	}
	// An unknown complexity gets the standard budget.
	if got := Snapshot("q", tp, "").MaxTokens; got != snap {
		t.Errorf("Snapshot MaxTokens for empty complexity = %d, want standard's %d", got, snap)
	}
	if got := Narrative("q", threeSnaps, "other").MaxTokens; got != narr {
		t.Errorf("Narrative MaxTokens for unknown complexity = %d, want standard's %d", got, narr)
	}
}

// datesInOrder checks that s names every snapshot's date, in order, and
// carries each snapshot's label and trimmed text.
func datesInOrder(t *testing.T, what, s string, snaps []job.Member) {
	t.Helper()
	var want []string
	for _, sn := range snaps {
		want = append(want, DateOf(sn))
	}
	if got := isoDate.FindAllString(s, -1); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s names dates %q, want %q", what, got, want)
	}
	last := -1
	for _, sn := range snaps {
		i := strings.Index(s, DateOf(sn))
		if i <= last {
			t.Errorf("%s: %s is not after the previous date", what, DateOf(sn))
		}
		last = i
		for _, part := range []string{sn.Label, strings.TrimSpace(sn.Text)} {
			if !strings.Contains(s, part) {
				t.Errorf("%s lacks %q", what, part)
			}
		}
	}
}

func TestKeyChangesPrompt(t *testing.T) {
	t.Parallel()
	snaps := append([]job.Member(nil), threeSnaps...)
	snaps[1].Text = "\n  GPT-4o is out.  \n"
	const question = "Which AI model is best?"
	p := KeyChanges(question, snaps)
	datesInOrder(t, "KeyChanges user prompt", p.User, snaps)
	if !strings.Contains(p.User, question) {
		t.Errorf("user prompt lacks the question")
	}
	if strings.Contains(p.User, snaps[1].Text) {
		t.Errorf("user prompt has the untrimmed text")
	}
	for _, want := range []string{`"transitions"`, `"from"`, `"to"`, `"changes"`, "JSON"} {
		if !strings.Contains(p.System, want) {
			t.Errorf("system prompt lacks %s", want)
		}
	}
	if isoDate.MatchString(p.System) {
		t.Errorf("system prompt names a concrete date: %q", isoDate.FindAllString(p.System, -1))
	}
	two := KeyChanges(question, snaps[:2]).MaxTokens
	if p.MaxTokens <= two {
		t.Errorf("MaxTokens for 3 snapshots (%d) not above that for 2 (%d)", p.MaxTokens, two)
	}
}

func TestNarrativePrompt(t *testing.T) {
	t.Parallel()
	const question = "Which AI model is best?"
	for _, c := range complexities {
		p := Narrative(question, threeSnaps, c)
		datesInOrder(t, "Narrative user prompt ("+string(c)+")", p.User, threeSnaps)
		if !strings.Contains(p.User, question) {
			t.Errorf("user prompt lacks the question")
		}
		if isoDate.MatchString(p.System) {
			t.Errorf("system prompt names a concrete date")
		}
	}
}

func TestPromptsKeepGivenOrder(t *testing.T) {
	t.Parallel()
	// The prompts list snapshots in the order given; the caller sorts. A
	// reversed list must be rendered reversed, not re-sorted, so that the
	// parse of the answer (which pairs consecutive entries) matches it.
	rev := []job.Member{threeSnaps[2], threeSnaps[1], threeSnaps[0]}
	p := KeyChanges("q", rev)
	got := isoDate.FindAllString(p.User, -1)
	want := []string{DateOf(threeSnaps[2]), DateOf(threeSnaps[1]), DateOf(threeSnaps[0])}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("dates %q, want %q", got, want)
	}
}
