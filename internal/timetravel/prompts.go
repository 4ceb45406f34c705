// Package timetravel is the time-travel job kind (see Kind): its request,
// its plan, and the prompts of a time-travel job and the parsing
// of the model's answers: the snapshot prompt (answer as of a date), the
// batched key-changes extraction (one call for every consecutive pair, JSON
// out) and the evolution narrative.
package timetravel

import (
	"fmt"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// PromptVersion changes whenever a prompt changes in a way that changes the
// answers (cache keys include it).
const PromptVersion = "v1"

// Prompt is a system and a user message plus an answer budget.
type Prompt struct {
	System    string
	User      string
	MaxTokens int
}

func lengthHint(c Complexity) (string, int) {
	switch c {
	case ComplexityBrief:
		return "Answer in at most 3 sentences.", 200
	case ComplexityDetailed:
		return "Answer thoroughly, in several paragraphs, with specifics.", 1500
	default:
		return "Answer in one or two short paragraphs.", 600
	}
}

// Snapshot is the prompt that asks the model to answer as it would have on
// tp's date. The prompt names exactly one date in YYYY-MM-DD form.
func Snapshot(question string, tp TimePoint, c Complexity) Prompt {
	hint, budget := lengthHint(c)
	sys := fmt.Sprintf(`You are a knowledgeable assistant answering as of %s. Today's date is %s.
Use only information that was publicly known on or before that date. Do not mention, hint at or predict anything that happened later; if something was uncertain then, say so as it would have been said then.
%s Do not mention that you are role-playing a date.`, tp.Label, tp.Date, hint)
	return Prompt{System: sys, User: question, MaxTokens: budget}
}

// KeyChanges is the single batched prompt that asks for the key changes
// between every pair of consecutive snapshots, as a JSON object of the form
// {"transitions":[{"from":"YYYY-MM-DD","to":"YYYY-MM-DD","changes":["..."]}]}.
// snaps must be in chronological order and number at least two.
func KeyChanges(question string, snaps []job.Member) Prompt {
	var b strings.Builder
	fmt.Fprintf(&b, "Question: %s\n\n", question)
	for _, s := range snaps {
		fmt.Fprintf(&b, "=== Answer as of %s (%s) ===\n%s\n\n", s.Label, DateOf(s), strings.TrimSpace(s.Text))
	}
	b.WriteString("For each pair of consecutive answers above, list the key changes from the earlier to the later answer.")
	sys := `You compare answers to the same question given at different dates and extract what changed.
Reply with one JSON object and nothing else, of exactly this form:
{"transitions":[{"from":"<earlier date YYYY-MM-DD>","to":"<later date YYYY-MM-DD>","changes":["<short change>", "..."]}]}
Include one transition per consecutive pair, in date order, each with 1 to 5 short, concrete changes (empty list if nothing changed).`
	return Prompt{System: sys, User: b.String(), MaxTokens: 300 + 150*len(snaps)}
}

// Narrative is the prompt for the story of how the answer evolved across the
// snapshots (in chronological order).
func Narrative(question string, snaps []job.Member, c Complexity) Prompt {
	_, budget := lengthHint(c)
	var b strings.Builder
	fmt.Fprintf(&b, "Question: %s\n\n", question)
	for _, s := range snaps {
		fmt.Fprintf(&b, "=== Answer as of %s (%s) ===\n%s\n\n", s.Label, DateOf(s), strings.TrimSpace(s.Text))
	}
	b.WriteString("Write the narrative now.")
	sys := `You are a historian of knowledge. Given answers to one question as they would have been given at successive dates, write a short narrative (one to three paragraphs) of how the answer evolved over time: what stayed, what changed, and what drove the changes. Refer to the dates by their labels. Plain prose, no lists, no headings.`
	return Prompt{System: sys, User: b.String(), MaxTokens: budget}
}
