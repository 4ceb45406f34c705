package llmsim

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// simLabel starts every prose answer so that no reader mistakes it for a real
// model output.
const simLabel = "[Simulated answer]"

// Lengths of prose answers, in words, unless a caller asks for an exact count.
const (
	minWords = 60
	maxWords = 150
)

// message is a chat message reduced to its role and text.
type message struct {
	role, text string
}

// prompt is what the text generator needs from a request.
type prompt struct {
	model    string
	messages []message
	jsonMode bool
	words    int // exact number of words wanted; 0 for the default length
}

// generate returns the deterministic completion text for p: the same prompt
// always gives the same text.
func generate(p prompt) string {
	var all, user, system strings.Builder
	question := ""
	for _, m := range p.messages {
		if m.role == "system" {
			system.WriteString(m.text)
		}
		all.WriteString(m.text)
		all.WriteByte('\n')
		if m.role == "user" {
			user.WriteString(m.text)
			user.WriteByte('\n')
			question = m.text
		}
	}
	if question == "" && len(p.messages) > 0 {
		question = p.messages[len(p.messages)-1].text
	}
	if text, ok := ensembleText(p, system.String(), user.String()); ok {
		return text
	}
	dates := extractDates(all.String())
	aiText := user.String()
	if aiText == "" {
		aiText = question
	}
	ai := isAIQuestion(aiText)

	if p.jsonMode {
		return keyChanges(dates, ai)
	}

	var (
		w    words
		pool []sentence
		r    *rand.Rand
		trim bool
	)
	if len(dates) == 1 {
		d := dates[0]
		r = newRand("snapshot", p.model, d.iso, question)
		if ai {
			w, pool = snapshotAI(d, question)
		} else {
			w, pool = snapshotGeneric(d, question)
		}
		trim = true
	} else {
		isos := make([]string, len(dates))
		for i, d := range dates {
			isos[i] = d.iso
		}
		r = newRand("narrative", p.model, strings.Join(isos, ","), question)
		w, pool = narrative(dates, ai)
	}

	if p.words > 0 {
		fill(&w, p.words, r, pool)
		w = w[:p.words]
	} else {
		fill(&w, minWords+10+r.IntN(50), r, pool)
		if trim && len(w) > maxWords {
			w = w[:maxWords]
		}
	}
	return strings.Join(w, " ")
}

// words is a text under construction, one element per word.
type words []string

func (w *words) add(s string) { *w = append(*w, strings.Fields(s)...) }

// sentence produces one filler sentence; it may draw from r for variety.
type sentence func(r *rand.Rand) string

// fill appends sentences from pool, in an order drawn from r, until w holds
// at least target words. The pool is reshuffled and reused when exhausted.
func fill(w *words, target int, r *rand.Rand, pool []sentence) {
	if len(pool) == 0 {
		pool = []sentence{func(*rand.Rand) string { return "(simulated)" }}
	}
	for len(*w) < target {
		for _, i := range r.Perm(len(pool)) {
			if len(*w) >= target {
				return
			}
			w.add(pool[i](r))
		}
	}
}

// day is a calendar date found in a prompt.
type day struct {
	iso string // YYYY-MM-DD as written in the prompt
	t   time.Time
}

func (d day) long() string  { return d.t.Format("January 2, 2006") }
func (d day) month() string { return d.t.Format("January 2006") }

// extractDates returns every distinct valid calendar date written as
// YYYY-MM-DD in s, in order of first appearance. A date must not be directly
// preceded or followed by another digit.
func extractDates(s string) []day {
	var out []day
	seen := make(map[string]bool)
	for i := 0; i+10 <= len(s); i++ {
		if !isDateAt(s, i) ||
			(i > 0 && isDigit(s[i-1])) ||
			(i+10 < len(s) && isDigit(s[i+10])) {
			continue
		}
		iso := s[i : i+10]
		t, err := time.Parse(time.DateOnly, iso)
		if err != nil {
			continue
		}
		if !seen[iso] {
			seen[iso] = true
			out = append(out, day{iso: iso, t: t})
		}
		i += 9
	}
	return out
}

// isDateAt reports whether s[i:i+10] has the shape dddd-dd-dd.
func isDateAt(s string, i int) bool {
	for k := range 10 {
		c := s[i+k]
		if k == 4 || k == 7 {
			if c != '-' {
				return false
			}
		} else if !isDigit(c) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// aiWords and aiPhrases mark a question about AI or language models.
var (
	aiWords = map[string]bool{
		"ai": true, "llm": true, "llms": true, "gpt": true, "chatgpt": true,
		"claude": true, "gemini": true, "llama": true, "chatbot": true,
		"chatbots": true, "openai": true, "anthropic": true, "deepseek": true,
		"mistral": true,
	}
	aiPhrases = []string{
		"language model", "artificial intelligence", "machine learning",
		"a.i.", "foundation model", "neural network",
	}
)

// isAIQuestion reports whether s asks about AI or language models.
func isAIQuestion(s string) bool {
	s = strings.ToLower(s)
	for _, p := range aiPhrases {
		if strings.Contains(s, p) {
			return true
		}
	}
	for _, f := range strings.FieldsFunc(s, notAlnum) {
		if aiWords[f] {
			return true
		}
	}
	return false
}

func notAlnum(c rune) bool {
	return !('a' <= c && c <= 'z' || '0' <= c && c <= '9')
}

// release is a public AI model release.
type release struct {
	date   string // YYYY-MM-DD
	name   string
	vendor string
	open   bool // weights publicly downloadable
	weight int  // notability; higher is kept first when space is short
}

// timeline lists notable public AI model releases in date order.
var timeline = []release{
	{"2018-10-11", "BERT", "Google", true, 1},
	{"2019-02-14", "GPT-2", "OpenAI", true, 1},
	{"2020-06-11", "GPT-3", "OpenAI", false, 2},
	{"2022-04-04", "PaLM", "Google", false, 1},
	{"2022-11-30", "ChatGPT/GPT-3.5", "OpenAI", false, 3},
	{"2023-02-24", "LLaMA", "Meta", true, 2},
	{"2023-03-14", "GPT-4", "OpenAI", false, 3},
	{"2023-03-14", "Claude", "Anthropic", false, 2},
	{"2023-05-10", "PaLM 2", "Google", false, 1},
	{"2023-07-11", "Claude 2", "Anthropic", false, 2},
	{"2023-07-18", "Llama 2", "Meta", true, 2},
	{"2023-09-27", "Mistral 7B", "Mistral AI", true, 1},
	{"2023-11-06", "GPT-4 Turbo", "OpenAI", false, 1},
	{"2023-12-06", "Gemini 1.0", "Google", false, 2},
	{"2023-12-11", "Mixtral 8x7B", "Mistral AI", true, 1},
	{"2024-02-15", "Gemini 1.5 Pro", "Google", false, 1},
	{"2024-03-04", "Claude 3", "Anthropic", false, 3},
	{"2024-04-18", "Llama 3", "Meta", true, 2},
	{"2024-05-13", "GPT-4o", "OpenAI", false, 3},
	{"2024-06-20", "Claude 3.5 Sonnet", "Anthropic", false, 2},
	{"2024-07-23", "Llama 3.1 405B", "Meta", true, 1},
	{"2024-09-12", "o1", "OpenAI", false, 3},
	{"2024-12-11", "Gemini 2.0 Flash", "Google", false, 1},
	{"2024-12-26", "DeepSeek-V3", "DeepSeek", true, 1},
	{"2025-01-20", "DeepSeek-R1", "DeepSeek", true, 3},
	{"2025-02-24", "Claude 3.7 Sonnet", "Anthropic", false, 2},
	{"2025-02-27", "GPT-4.5", "OpenAI", false, 1},
	{"2025-03-25", "Gemini 2.5 Pro", "Google", false, 2},
	{"2025-04-05", "Llama 4", "Meta", true, 1},
	{"2025-04-16", "o3", "OpenAI", false, 2},
	{"2025-05-22", "Claude 4", "Anthropic", false, 2},
	{"2025-08-07", "GPT-5", "OpenAI", false, 3},
}

func (r release) time() time.Time {
	t, _ := time.Parse(time.DateOnly, r.date) // the timeline is checked by a test
	return t
}

func (r release) month() string { return r.time().Format("January 2006") }

// releasedBy returns the releases on or before iso, in date order.
func releasedBy(iso string) []release {
	n := sort.Search(len(timeline), func(i int) bool { return timeline[i].date > iso })
	return timeline[:n]
}

// frontier returns the newest release of each vendor in avail, newest first
// and, on the same day, most notable first.
func frontier(avail []release) []release {
	seen := make(map[string]bool)
	var out []release
	for i := len(avail) - 1; i >= 0; i-- {
		if r := avail[i]; !seen[r.vendor] {
			seen[r.vendor] = true
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].date > out[j].date || out[i].date == out[j].date && out[i].weight > out[j].weight
	})
	return out
}

// newest returns the most notable of the latest releases in avail.
func newest(avail []release) release {
	best := avail[len(avail)-1]
	for i := len(avail) - 2; i >= 0 && avail[i].date == best.date; i-- {
		if avail[i].weight > best.weight {
			best = avail[i]
		}
	}
	return best
}

// snapshotAI starts an answer to an AI-model question as of d and returns it
// with the filler sentences that may complete it.
func snapshotAI(d day, question string) (words, []sentence) {
	var w words
	w.add(simLabel)
	avail := releasedBy(d.iso)
	front := frontier(avail)
	after := func(*rand.Rand) string {
		return fmt.Sprintf("Anything released after %s is intentionally left out of this answer.", d.long())
	}
	simulated := func(*rand.Rand) string {
		return "This text is simulated and does not come from a real language model."
	}
	if len(front) == 0 {
		w.add(fmt.Sprintf("As of %s (%s), no widely known large language model had been released, so the question %s has no good answer at that date.",
			d.long(), d.iso, quote(question, 12)))
		return w, []sentence{
			after, simulated,
			func(*rand.Rand) string {
				return "Research focused on smaller task-specific neural networks rather than general-purpose assistants."
			},
			func(*rand.Rand) string {
				return "Machine translation, image recognition and speech recognition were the most visible uses of AI."
			},
			func(*rand.Rand) string {
				return "Chatbots of the time were rule-based or narrow, and far less capable than later systems."
			},
			func(*rand.Rand) string {
				return "Word embeddings and recurrent networks were the usual tools for processing language."
			},
		}
	}

	names := make([]string, len(front))
	for i, r := range front {
		names[i] = fmt.Sprintf("%s (%s, %s)", r.name, r.vendor, r.month())
	}
	w.add(fmt.Sprintf("As of %s (%s), in answer to %s, the best-known AI models were %s.",
		d.long(), d.iso, quote(question, 12), join(names)))
	n := newest(avail)
	w.add(fmt.Sprintf("The most recent of them, %s, was released on %s, %s.",
		n.name, n.time().Format("January 2, 2006"), daysBefore(n.time(), d.t)))

	var open []string
	for i := len(avail) - 1; i >= 0 && len(open) < 3; i-- {
		if avail[i].open {
			open = append(open, avail[i].name)
		}
	}
	vendors := make(map[string]bool)
	for _, r := range avail {
		vendors[r.vendor] = true
	}
	return w, []sentence{
		after, simulated,
		func(*rand.Rand) string {
			if len(open) == 0 {
				return "No competitive open-weight model was available yet."
			}
			return fmt.Sprintf("Open-weight options available at that point included %s.", join(open))
		},
		func(*rand.Rand) string {
			return fmt.Sprintf("By %s, %d notable models from %d vendors had been released.", d.month(), len(avail), len(vendors))
		},
		func(*rand.Rand) string {
			return "Which one is best depends on the task: cost, speed, context length and licensing all matter."
		},
		func(*rand.Rand) string {
			return "Comparisons at the time relied mostly on public benchmarks and hands-on testing."
		},
		func(*rand.Rand) string {
			return "Rankings changed quickly, with a notable release every few months."
		},
		func(*rand.Rand) string {
			return "For everyday use, most people reached for a hosted assistant rather than running a model themselves."
		},
	}
}

// Topics and outlooks of generic answers.
var (
	topics = []string{
		"cost and availability", "reliability", "regulation", "performance benchmarks",
		"ease of use", "safety", "long-term support", "community adoption",
		"energy efficiency", "open standards", "security", "interoperability",
	}
	outlooks = []string{
		"cautiously optimistic", "sceptical", "enthusiastic", "divided",
		"pragmatic", "uncertain", "confident", "wary",
	}
)

// themeOf returns the main topic and outlook of generic answers as of d; it
// depends on the date only, so that snapshots, key changes and narratives
// about the same date agree.
func themeOf(d day) (topic, outlook string) {
	h := hash64("theme", d.iso)
	return topics[h%uint64(len(topics))], outlooks[(h>>32)%uint64(len(outlooks))]
}

// snapshotGeneric starts an answer to any other question as of d and returns
// it with the filler sentences that may complete it.
func snapshotGeneric(d day, question string) (words, []sentence) {
	topic, outlook := themeOf(d)
	var w words
	w.add(simLabel)
	w.add(fmt.Sprintf("As of %s (%s), here is how the question %s would have been answered.",
		d.long(), d.iso, quote(question, 12)))
	w.add(fmt.Sprintf("At that point the discussion centred on %s, and the prevailing mood was %s.", topic, outlook))
	quarter := []string{"first", "second", "third", "fourth"}[(d.t.Month()-1)/3]
	return w, []sentence{
		func(r *rand.Rand) string {
			return fmt.Sprintf("Sources from %s would mostly point to %s as the deciding factor.", d.month(), pick(r, topics))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("A typical answer in %d would have cited about %d relevant developments from the preceding twelve months.",
				d.t.Year(), 3+r.IntN(9))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("Compared with earlier in %d, attention had moved towards %s.", d.t.Year(), pick(r, topics))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("Expert opinion was %s, although estimates still varied by roughly %d percent.", pick(r, outlooks), 5+r.IntN(30))
		},
		func(*rand.Rand) string {
			return fmt.Sprintf("Anything that happened after %s is deliberately left out of this answer.", d.long())
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("Readers at the time would have been advised to weigh %s before drawing conclusions.", pick(r, topics))
		},
		func(r *rand.Rand) string {
			return fmt.Sprintf("In the %s quarter of %d, most practical advice stressed %s.", quarter, d.t.Year(), pick(r, topics))
		},
		func(*rand.Rand) string {
			return "Details vary by source, so this summary keeps to the most widely shared points."
		},
		func(*rand.Rand) string {
			return fmt.Sprintf("In short, the answer as of %s centres on %s with a %s outlook.", d.long(), topic, outlook)
		},
		func(*rand.Rand) string {
			return "This text is simulated and does not come from a real language model."
		},
	}
}

// narrative starts a story of how the answer evolved across dates, mentioning
// every date, and returns it with the filler sentences that may complete it.
func narrative(dates []day, ai bool) (words, []sentence) {
	var w words
	w.add(simLabel)
	if len(dates) == 0 {
		w.add("No dates were found in the request, so this narrative describes the answer in general terms.")
	} else {
		w.add(fmt.Sprintf("This narrative traces how the answer changed across %d dates, from %s to %s.",
			len(dates), dates[0].iso, dates[len(dates)-1].iso))
	}
	// Many dates get terse sentences so that the text stays short.
	terse := len(dates) > 6
	if terse && ai {
		w.add("Leading models by date:")
	}
	for _, d := range dates {
		if !ai {
			topic, outlook := themeOf(d)
			w.add(fmt.Sprintf("On %s the focus was %s, with a %s tone.", d.iso, topic, outlook))
			continue
		}
		var names []string
		for _, r := range frontier(releasedBy(d.iso)) {
			if len(names) < 2 {
				names = append(names, r.name)
			}
		}
		switch {
		case terse && len(names) == 0:
			w.add(d.iso + ": none yet.")
		case terse:
			w.add(fmt.Sprintf("%s: %s.", d.iso, join(names)))
		case len(names) == 0:
			w.add(fmt.Sprintf("On %s no notable language model had been released yet.", d.iso))
		case len(names) == 1:
			w.add(fmt.Sprintf("On %s the leading model was %s.", d.iso, names[0]))
		default:
			w.add(fmt.Sprintf("On %s the leading models were %s.", d.iso, join(names)))
		}
	}
	pool := []sentence{
		func(*rand.Rand) string {
			return "Each step reflects what was publicly known at that date, and nothing later."
		},
		func(*rand.Rand) string { return "The overall direction was gradual rather than abrupt." },
		func(*rand.Rand) string {
			return "Sources from later dates tend to be more detailed and more confident."
		},
		func(*rand.Rand) string { return "Some earlier points were revised as new information appeared." },
		func(*rand.Rand) string {
			return "This text is simulated and does not come from a real language model."
		},
		func(*rand.Rand) string {
			return "Compare the individual snapshots for the details behind each change."
		},
	}
	if ai && len(dates) >= 2 {
		lo, hi := span(dates)
		n := len(releasedBy(hi.iso)) - len(releasedBy(lo.iso))
		pool = append(pool, func(*rand.Rand) string {
			return fmt.Sprintf("Between %s and %s, %d notable models were released.", lo.long(), hi.long(), n)
		})
	}
	return w, pool
}

// span returns the earliest and the latest of dates, which must not be empty.
func span(dates []day) (lo, hi day) {
	lo, hi = dates[0], dates[0]
	for _, d := range dates[1:] {
		if d.iso < lo.iso {
			lo = d
		}
		if d.iso > hi.iso {
			hi = d
		}
	}
	return lo, hi
}

// transition is one entry of a key-changes answer.
type transition struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Changes []string `json:"changes"`
}

// keyChanges returns the JSON key-changes answer: one transition per
// consecutive pair of dates, each with one to three changes.
func keyChanges(dates []day, ai bool) string {
	out := struct {
		Transitions []transition `json:"transitions"`
	}{Transitions: []transition{}}
	for i := 1; i < len(dates); i++ {
		a, b := dates[i-1], dates[i]
		var changes []string
		if ai {
			changes = aiChanges(a, b)
		} else {
			changes = genericChanges(a, b)
		}
		out.Transitions = append(out.Transitions, transition{From: a.iso, To: b.iso, Changes: changes})
	}
	buf, err := json.Marshal(out)
	if err != nil { // cannot happen: only strings and slices
		panic(fmt.Errorf("llmsim: encode key changes: %w", err))
	}
	return string(buf)
}

// aiChanges lists up to three notable model releases between a and b.
func aiChanges(a, b day) []string {
	lo, hi := a, b
	forward := a.iso < b.iso
	if !forward {
		lo, hi = b, a
	}
	between := timeline[len(releasedBy(lo.iso)):len(releasedBy(hi.iso))]
	if len(between) == 0 {
		return []string{fmt.Sprintf("No notable model releases between %s and %s", lo.month(), hi.month())}
	}
	picked := append([]release(nil), between...)
	sort.SliceStable(picked, func(i, j int) bool { return picked[i].weight > picked[j].weight })
	if len(picked) > 3 {
		picked = picked[:3]
	}
	sort.SliceStable(picked, func(i, j int) bool { return picked[i].date < picked[j].date })
	changes := make([]string, len(picked))
	for i, r := range picked {
		if forward {
			changes[i] = fmt.Sprintf("%s released by %s (%s)", r.name, r.vendor, r.month())
		} else {
			changes[i] = fmt.Sprintf("%s (%s, %s) not yet released", r.name, r.vendor, r.month())
		}
	}
	return changes
}

// genericChanges lists one to three invented changes between a and b.
func genericChanges(a, b day) []string {
	ta, oa := themeOf(a)
	tb, ob := themeOf(b)
	var c []string
	if ta != tb {
		c = append(c, fmt.Sprintf("Focus shifted from %s to %s (simulated)", ta, tb))
	} else {
		c = append(c, fmt.Sprintf("Focus on %s persisted, with sources updated to %s (simulated)", ta, b.month()))
	}
	if oa != ob {
		c = append(c, fmt.Sprintf("Outlook moved from %s to %s (simulated)", oa, ob))
	} else {
		c = append(c, fmt.Sprintf("Outlook remained %s (simulated)", oa))
	}
	if a.iso < b.iso {
		c = append(c, fmt.Sprintf("Developments from %s to %s taken into account (simulated)", a.month(), b.month()))
	} else {
		c = append(c, fmt.Sprintf("Developments after %s no longer taken into account (simulated)", b.month()))
	}
	return c[:1+hash64("changes", a.iso, b.iso)%3]
}

// quote returns the first max words of s in double quotes.
func quote(s string, max int) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return `""`
	}
	if len(f) > max {
		f = f[:max]
		f[max-1] += "..."
	}
	return `"` + strings.Join(f, " ") + `"`
}

// join lists items as "a", "a and b" or "a, b and c".
func join(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// daysBefore describes how long before ref the time t is.
func daysBefore(t, ref time.Time) string {
	switch n := int(ref.Sub(t).Hours() / 24); n {
	case 0:
		return "that same day"
	case 1:
		return "one day earlier"
	default:
		return fmt.Sprintf("%d days earlier", n)
	}
}

func pick(r *rand.Rand, from []string) string { return from[r.IntN(len(from))] }

// hash64 hashes parts, separated so that ("ab","c") and ("a","bc") differ.
func hash64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// newRand returns a generator seeded by parts; math/rand/v2's PCG is a fixed
// algorithm, so the sequence is stable across Go releases.
func newRand(parts ...string) *rand.Rand {
	h := hash64(parts...)
	return rand.New(rand.NewPCG(h, h^0x9e3779b97f4a7c15))
}
