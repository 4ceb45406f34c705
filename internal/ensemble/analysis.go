package ensemble

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Prompt is a system and a user message plus an answer budget.
type Prompt struct {
	System    string
	User      string
	MaxTokens int
}

// AnswerPrompt is what every member model is asked: the question itself.
func AnswerPrompt(question string) Prompt {
	return Prompt{
		System:    "You are a knowledgeable assistant. Answer the question accurately and concisely, in one to three short paragraphs. State uncertainty where it exists.",
		User:      question,
		MaxTokens: 600,
	}
}

func answersBlock(question string, done []job.Member) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Question: %s\n\n", question)
	for _, m := range done {
		fmt.Fprintf(&b, "=== Answer of model %s ===\n%s\n\n", m.Label, strings.TrimSpace(m.Text))
	}
	return b.String()
}

// SynthesisPrompt asks for one answer that merges the models' answers.
func SynthesisPrompt(question string, done []job.Member) Prompt {
	sys := `You merge several models' answers to one question into a single best answer (the synthesis). Keep what they agree on, resolve or state their disagreements, and keep well-supported points only one of them made. Do not mention the models. Plain prose, one to three paragraphs.`
	return Prompt{System: sys, User: answersBlock(question, done) + "Write the synthesis now.", MaxTokens: 700}
}

// AnalysisPrompt asks for the points of consensus, the disagreements and
// the claims only one model made, as one JSON object.
func AnalysisPrompt(question string, done []job.Member) Prompt {
	sys := `You compare several models' answers to the same question.
Reply with one JSON object and nothing else, of exactly this form:
{"consensus":["<point all answers share>"],"disagreements":[{"topic":"<what they disagree on>","positions":[{"model":"<model name>","position":"<what it says>"}]}],"unique_claims":[{"model":"<model name>","claim":"<claim only this model made>"}]}
Name models exactly as in the answer headers. Use empty lists when there is nothing to report.`
	return Prompt{System: sys, User: answersBlock(question, done) + "Compare the answers now.", MaxTokens: 300 + 200*len(done)}
}

// Analysis is the structured comparison of the answers.
type Analysis struct {
	Consensus     []string       `json:"consensus"`
	Disagreements []Disagreement `json:"disagreements"`
	UniqueClaims  []Claim        `json:"unique_claims"`
}

// Disagreement is one topic the models answer differently, with each
// model's position.
type Disagreement struct {
	Topic     string     `json:"topic"`
	Positions []Position `json:"positions"`
}

// Position is what one model says on a disputed topic.
type Position struct {
	Model    string `json:"model"`
	Position string `json:"position"`
}

// Claim is a claim only one model made.
type Claim struct {
	Model string `json:"model"`
	Claim string `json:"claim"`
}

// ErrMalformed means the model's analysis answer could not be used.
var ErrMalformed = errors.New("malformed analysis answer")

// ParseAnalysis reads the model's answer to AnalysisPrompt for the given
// answers. It tolerates code fences and prose around the JSON object,
// other names for the three lists ("agreements", "points_of_consensus",
// "conflicts", "unique", "solo_claims"), positions given as an object of
// model → position, items given as objects with a "point" or "text", and
// models named in other words than asked: in any case, as "model X",
// "answer 2", a letter or a number (by their order). A model name that
// names no answer is kept as written. It fails with ErrMalformed when the
// answer has no JSON object or none of the three lists.
func ParseAnalysis(answer string, done []job.Member) (Analysis, error) {
	raw := extractObject(answer)
	if raw == "" {
		return Analysis{}, fmt.Errorf("%w: no JSON object in %q", ErrMalformed, clip(answer, 80))
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return Analysis{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	pick := func(names ...string) (json.RawMessage, bool) {
		for k, v := range doc {
			nk := normKey(k)
			for _, n := range names {
				if nk == n {
					return v, true
				}
			}
		}
		return nil, false
	}
	r := resolver{done: done}
	out := Analysis{Consensus: []string{}, Disagreements: []Disagreement{}, UniqueClaims: []Claim{}}
	found := false
	if v, ok := pick("consensus", "agreements", "pointsofconsensus", "agreed", "common"); ok {
		found = true
		out.Consensus = texts(v)
	}
	if v, ok := pick("disagreements", "conflicts", "differences", "disputes"); ok {
		found = true
		var items []map[string]json.RawMessage
		_ = json.Unmarshal(v, &items)
		for _, it := range items {
			d := Disagreement{Topic: field(it, "topic", "point", "issue", "subject"), Positions: []Position{}}
			if pv, ok := it["positions"]; ok {
				d.Positions = r.positions(pv)
			} else if pv, ok := it["views"]; ok {
				d.Positions = r.positions(pv)
			}
			if d.Topic != "" || len(d.Positions) > 0 {
				out.Disagreements = append(out.Disagreements, d)
			}
		}
	}
	if v, ok := pick("uniqueclaims", "unique", "soloclaims", "onlyonemodel", "claims"); ok {
		found = true
		var items []map[string]json.RawMessage
		_ = json.Unmarshal(v, &items)
		for _, it := range items {
			c := Claim{Model: r.name(field(it, "model", "source", "by")), Claim: field(it, "claim", "point", "text")}
			if c.Claim != "" {
				out.UniqueClaims = append(out.UniqueClaims, c)
			}
		}
	}
	if !found {
		return Analysis{}, fmt.Errorf("%w: no consensus, disagreements or unique_claims", ErrMalformed)
	}
	return out, nil
}

// texts reads a list of strings, or of objects with a point or text.
func texts(raw json.RawMessage) []string {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return []string{}
	}
	out := []string{}
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
			continue
		}
		var o map[string]json.RawMessage
		if json.Unmarshal(it, &o) == nil {
			if s := field(o, "point", "text", "claim"); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// field returns the first of names that o has as a string, trimmed.
func field(o map[string]json.RawMessage, names ...string) string {
	for _, n := range names {
		var s string
		if raw, ok := o[n]; ok && json.Unmarshal(raw, &s) == nil {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

type resolver struct{ done []job.Member }

// positions reads a list of {model, position} or an object model →
// position.
func (r resolver) positions(raw json.RawMessage) []Position {
	out := []Position{}
	var list []map[string]json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		for _, it := range list {
			p := Position{Model: r.name(field(it, "model", "source", "by")), Position: field(it, "position", "view", "claim", "text")}
			if p.Position != "" {
				out = append(out, p)
			}
		}
		return out
	}
	var obj map[string]string
	if json.Unmarshal(raw, &obj) == nil {
		for _, m := range r.done { // the answers' order, not the map's
			for k, v := range obj {
				if r.name(k) == m.Label && strings.TrimSpace(v) != "" {
					out = append(out, Position{Model: m.Label, Position: strings.TrimSpace(v)})
				}
			}
		}
	}
	return out
}

// name resolves how the answer names a model to the model's name.
func (r resolver) name(s string) string {
	s = strings.TrimSpace(s)
	n := strings.ToLower(s)
	for _, prefix := range []string{"model ", "answer ", "model", "answer"} {
		if rest, ok := strings.CutPrefix(n, prefix); ok && rest != "" {
			n = strings.TrimSpace(rest)
			break
		}
	}
	for _, m := range r.done {
		if strings.EqualFold(m.Label, n) || strings.EqualFold(m.Label, s) {
			return m.Label
		}
	}
	if i, err := strconv.Atoi(n); err == nil && i >= 1 && i <= len(r.done) {
		return r.done[i-1].Label
	}
	if len(n) == 1 && n[0] >= 'a' && int(n[0]-'a') < len(r.done) {
		return r.done[n[0]-'a'].Label
	}
	return s
}

// normKey folds a JSON key for comparison: lower case, letters and digits
// only.
func normKey(k string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(k) {
		if unicode.IsLetter(c) || unicode.IsDigit(c) {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// extractObject returns the outermost {...} of s, skipping code fences and
// surrounding prose; empty when there is none.
func extractObject(s string) string {
	start := strings.IndexByte(s, '{')
	end := strings.LastIndexByte(s, '}')
	if start < 0 || end < start {
		return ""
	}
	return s[start : end+1]
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
