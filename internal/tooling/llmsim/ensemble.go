package llmsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Markers of the ensemble kind's prompts (package ensemble): its member
// answers are asked with a system message that contains answerMarker, and
// its synthesis and analysis list the answers under headers that start with
// answerHeader.
const (
	answerMarker = "Answer the question accurately and concisely"
	answerHeader = "=== Answer of model "
)

// ensembleModels returns the model names of the answer headers in s, in
// order.
func ensembleModels(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(line, answerHeader); ok {
			out = append(out, strings.TrimSpace(strings.TrimSuffix(rest, "===")))
		}
	}
	return out
}

// ensembleText answers an ensemble prompt, or reports that p is none.
// Each model answers the same question in its own words (the text depends
// on the model), with a leaning of its own so that the answers differ.
func ensembleText(p prompt, system, question string) (string, bool) {
	all := system + "\n" + question
	models := ensembleModels(all)
	switch {
	case len(models) > 0 && p.jsonMode:
		return ensembleAnalysis(models, question), true
	case len(models) > 0:
		r := newRand("synthesis", p.model, strings.Join(models, ","), question)
		var w words
		w.add(simLabel)
		w.add(fmt.Sprintf("Taken together, the %d answers agree on the core of the question and differ on emphasis.", len(models)))
		fill(&w, minWords+r.IntN(40), r, ensemblePool(question))
		return strings.Join(w, " "), true
	case strings.Contains(system, answerMarker):
		r := newRand("answer", p.model, question)
		lean := pick(rand.New(rand.NewPCG(hash64(p.model), 7)), leanings)
		var w words
		w.add(simLabel)
		w.add(fmt.Sprintf("Model %s answers %s with a focus on %s.", p.model, quote(firstLine(question), 12), lean))
		fill(&w, minWords+r.IntN(50), r, ensemblePool(question))
		if p.words > 0 {
			fill(&w, p.words, r, ensemblePool(question))
			w = w[:p.words]
		}
		return strings.Join(w, " "), true
	}
	return "", false
}

var leanings = []string{"cost", "accuracy", "speed of adoption", "safety", "open standards", "long-term risk", "user experience", "regulation"}

func ensemblePool(question string) []sentence {
	return []sentence{
		func(r *rand.Rand) string { return fmt.Sprintf("Most sources stress %s.", pick(r, topics)) },
		func(r *rand.Rand) string {
			return fmt.Sprintf("Estimates differ by roughly %d percent depending on the source.", 5+r.IntN(30))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("A careful reader would also weigh %s.", pick(r, topics))
		},
		func(*rand.Rand) string {
			return fmt.Sprintf("The question %s has no single settled answer.", quote(firstLine(question), 8))
		},
		func(*rand.Rand) string { return "This text is simulated and does not come from a real language model." },
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimPrefix(s, "Question: "), "\n")
	return s
}

// ensembleAnalysis is the simulated comparison of the answers of models:
// one point of consensus, one disagreement naming each model's position,
// and a claim only the first model made.
func ensembleAnalysis(models []string, question string) string {
	type position struct {
		Model    string `json:"model"`
		Position string `json:"position"`
	}
	type disagreement struct {
		Topic     string     `json:"topic"`
		Positions []position `json:"positions"`
	}
	type claim struct {
		Model string `json:"model"`
		Claim string `json:"claim"`
	}
	out := struct {
		Consensus     []string       `json:"consensus"`
		Disagreements []disagreement `json:"disagreements"`
		UniqueClaims  []claim        `json:"unique_claims"`
	}{Consensus: []string{"All answers address " + quote(firstLine(question), 8) + " (simulated)."}}
	d := disagreement{Topic: "what matters most (simulated)"}
	for _, m := range models {
		lean := pick(rand.New(rand.NewPCG(hash64(m), 7)), leanings)
		d.Positions = append(d.Positions, position{Model: m, Position: "stresses " + lean})
	}
	out.Disagreements = []disagreement{d}
	out.UniqueClaims = []claim{{Model: models[0], Claim: "only " + models[0] + " cites a specific estimate (simulated)"}}
	b, err := json.Marshal(out)
	if err != nil { // cannot happen: only strings and slices
		panic(fmt.Errorf("llmsim: encode analysis: %w", err))
	}
	return string(b)
}
