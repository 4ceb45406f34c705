package llmsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// snapshotPrompt asks question as of date, the way a caller would.
func snapshotPrompt(model, date, question string) prompt {
	return prompt{model: model, messages: []message{
		{role: "system", text: "Answer as if today were " + date + ". Do not mention later events."},
		{role: "user", text: question},
	}}
}

func wordCount(s string) int { return len(strings.Fields(s)) }

func TestExtractDates(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: nil},
		{in: "no dates here", want: nil},
		{in: "2023-01-01", want: []string{"2023-01-01"}},
		{in: "from 2023-03-15 to 2023-01-01, again 2023-03-15.", want: []string{"2023-03-15", "2023-01-01"}},
		{in: "a:2024-02-29,b:2023-02-29 c:2023-13-01 d:2023-00-10", want: []string{"2024-02-29"}},
		{in: "12023-01-01 2023-01-011 2023-01-01x", want: []string{"2023-01-01"}},
		{in: "2023-1-01 2023/01/01 20230101", want: nil},
		{in: "x2022-11-30y(2025-01-20)", want: []string{"2022-11-30", "2025-01-20"}},
	}
	for _, tt := range tests {
		var got []string
		for _, d := range extractDates(tt.in) {
			got = append(got, d.iso)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("extractDates(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsAIQuestion(t *testing.T) {
	tests := []struct {
		q    string
		want bool
	}{
		{"What are the best AI models?", true},
		{"Which LLM should I use for coding?", true},
		{"Is GPT-4 better than Claude?", true},
		{"What's new in large language models?", true},
		{"What is the best car to buy?", false},
		{"What did the mayor say about fullmoon parties?", false},
		{"Who won the football world cup?", false},
	}
	for _, tt := range tests {
		if got := isAIQuestion(tt.q); got != tt.want {
			t.Errorf("isAIQuestion(%q) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

func TestTimelineIsValidAndSorted(t *testing.T) {
	for i, r := range timeline {
		if _, err := time.Parse(time.DateOnly, r.date); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
		if i > 0 && timeline[i-1].date > r.date {
			t.Errorf("%s (%s) is out of order", r.name, r.date)
		}
	}
}

func TestSnapshot(t *testing.T) {
	questions := []string{"What are the best AI models?", "What is the best way to learn a language?"}
	dates := []string{"2019-06-01", "2023-01-01", "2023-03-15", "2024-05-01", "2025-06-30"}
	for _, q := range questions {
		seen := make(map[string]string)
		for _, date := range dates {
			p := snapshotPrompt("sim-snapshot", date, q)
			text := generate(p)
			if again := generate(p); again != text {
				t.Errorf("%q as of %s is not deterministic:\n%s\n%s", q, date, text, again)
			}
			if n := wordCount(text); n < minWords || n > maxWords {
				t.Errorf("%q as of %s: %d words, want %d..%d: %s", q, date, n, minWords, maxWords, text)
			}
			if !strings.HasPrefix(text, simLabel) || !strings.Contains(text, date) {
				t.Errorf("%q as of %s: want the label and the date: %s", q, date, text)
			}
			if got := extractDates(text); len(got) != 1 || got[0].iso != date {
				t.Errorf("%q as of %s: the text mentions other ISO dates %v", q, date, got)
			}
			if prev, dup := seen[text]; dup {
				t.Errorf("%q: same text for %s and %s", q, prev, date)
			}
			seen[text] = date
		}
	}

	// Another model or question gives another text.
	base := generate(snapshotPrompt("a", "2023-03-15", "Which car should I buy?"))
	for _, p := range []prompt{
		snapshotPrompt("b", "2023-03-15", "Which car should I buy?"),
		snapshotPrompt("a", "2023-03-15", "Which bike should I buy?"),
	} {
		if generate(p) == base {
			t.Errorf("prompt %+v gives the same text as another model or question", p)
		}
	}
}

func TestSnapshotAITimeline(t *testing.T) {
	tests := []struct {
		date          string
		want, notWant []string
	}{
		{date: "2017-01-01", notWant: []string{"GPT", "BERT", "Claude"}},
		{date: "2020-07-01", want: []string{"GPT-3"}, notWant: []string{"GPT-4", "ChatGPT"}},
		{date: "2023-01-01", want: []string{"ChatGPT/GPT-3.5"}, notWant: []string{"GPT-4", "Claude", "LLaMA", "Llama"}},
		{date: "2023-03-15", want: []string{"GPT-4", "Claude", "LLaMA"}, notWant: []string{"Claude 2", "Gemini", "GPT-4o"}},
		{date: "2024-05-13", want: []string{"GPT-4o", "Claude 3", "Llama 3", "Gemini 1.5 Pro"}, notWant: []string{"Claude 3.5", "o1", "DeepSeek"}},
		{date: "2025-01-20", want: []string{"DeepSeek-R1", "o1", "Claude 3.5 Sonnet"}, notWant: []string{"GPT-5", "Claude 3.7"}},
		{date: "2025-09-01", want: []string{"GPT-5", "Claude 4"}},
	}
	for _, tt := range tests {
		text := generate(snapshotPrompt("sim-snapshot", tt.date, "What are the best AI models?"))
		for _, w := range tt.want {
			if !strings.Contains(text, w) {
				t.Errorf("as of %s, want %q in: %s", tt.date, w, text)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(text, w) {
				t.Errorf("as of %s, %q must not appear: %s", tt.date, w, text)
			}
		}
	}
}

func TestKeyChanges(t *testing.T) {
	four := []string{"2023-01-01", "2023-03-15", "2024-05-01", "2025-06-30"}
	tests := []struct {
		name     string
		dates    []string
		question string
		want     []string // substrings of the first transition's changes
	}{
		{name: "ai", dates: four, question: "What are the best AI models?", want: []string{"GPT-4 released by OpenAI (March 2023)"}},
		{name: "generic", dates: four, question: "What is the best way to learn a language?", want: []string{"(simulated)"}},
		{name: "reversed ai", dates: []string{"2023-03-15", "2023-01-01"}, question: "Best LLM?", want: []string{"GPT-4 (OpenAI, March 2023) not yet released"}},
		{name: "ai no release", dates: []string{"2023-01-01", "2023-01-02"}, question: "Best LLM?", want: []string{"No notable model releases"}},
		{name: "one date", dates: []string{"2023-01-01"}, question: "Best LLM?"},
		{name: "no date", question: "Best LLM?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			for _, d := range tt.dates {
				fmt.Fprintf(&b, "Snapshot %s: (text)\n", d)
			}
			p := prompt{model: "sim-extract", jsonMode: true, messages: []message{
				{role: "system", text: `Answer with JSON {"transitions":[...]}.`},
				{role: "user", text: "Question: " + tt.question + "\n" + b.String()},
			}}
			text := generate(p)
			if again := generate(p); again != text {
				t.Errorf("not deterministic:\n%s\n%s", text, again)
			}
			var got struct {
				Transitions []transition `json:"transitions"`
			}
			dec := json.NewDecoder(strings.NewReader(text))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil || got.Transitions == nil {
				t.Fatalf("not the transitions object (%v): %s", err, text)
			}
			if want := max(len(tt.dates)-1, 0); len(got.Transitions) != want {
				t.Fatalf("%d transitions, want %d: %s", len(got.Transitions), want, text)
			}
			for i, tr := range got.Transitions {
				if tr.From != tt.dates[i] || tr.To != tt.dates[i+1] || len(tr.Changes) < 1 || len(tr.Changes) > 3 {
					t.Errorf("transition %d: %+v", i, tr)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(strings.Join(got.Transitions[0].Changes, "|"), w) {
					t.Errorf("first transition lacks %q: %s", w, text)
				}
			}
		})
	}
}

func TestNarrative(t *testing.T) {
	var twelve []string
	for m := 1; m <= 12; m++ {
		twelve = append(twelve, fmt.Sprintf("2024-%02d-15", m))
	}
	tests := []struct {
		name     string
		dates    []string
		question string
	}{
		{name: "ai", dates: []string{"2023-01-01", "2023-03-15", "2024-05-01", "2025-06-30"}, question: "What are the best AI models?"},
		{name: "generic", dates: []string{"2020-01-01", "2022-06-30", "2024-12-31"}, question: "Where should I travel?"},
		{name: "twelve ai", dates: twelve, question: "What are the best AI models?"},
		{name: "twelve generic", dates: twelve, question: "Where should I travel?"},
		{name: "no date", question: "Where should I travel?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := prompt{model: "sim-narrative", messages: []message{
				{role: "system", text: "Write how the answer evolved."},
				{role: "user", text: "Question: " + tt.question + "\nDates: " + strings.Join(tt.dates, ", ")},
			}}
			text := generate(p)
			if again := generate(p); again != text {
				t.Errorf("not deterministic")
			}
			if n := wordCount(text); n < minWords || n > maxWords {
				t.Errorf("%d words, want %d..%d: %s", n, minWords, maxWords, text)
			}
			if !strings.HasPrefix(text, simLabel) {
				t.Errorf("no label: %s", text)
			}
			for _, d := range tt.dates {
				if !strings.Contains(text, d) {
					t.Errorf("%s not mentioned: %s", d, text)
				}
			}
		})
	}
}

func TestExactWords(t *testing.T) {
	for _, n := range []int{1, 2, 59, 151, 5000} {
		for _, p := range []prompt{
			snapshotPrompt("m", "2023-03-15", "What are the best AI models?"),
			snapshotPrompt("m", "2016-03-15", "What are the best AI models?"),
			snapshotPrompt("m", "2023-03-15", "Which car?"),
			{model: "m", messages: []message{{role: "user", text: "no dates"}}},
		} {
			p.words = n
			text := generate(p)
			if got := wordCount(text); got != n || len(tokenize(text)) != n {
				t.Errorf("asked %d words, got %d words and %d tokens", n, got, len(tokenize(text)))
			}
		}
	}
}

func TestTokenize(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: nil},
		{in: "one", want: []string{"one"}},
		{in: "one two  three", want: []string{"one ", "two ", " ", "three"}},
		{in: "end ", want: []string{"end "}},
	}
	for _, tt := range tests {
		got := tokenize(tt.in)
		if !slices.Equal(got, tt.want) || strings.Join(got, "") != tt.in {
			t.Errorf("tokenize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
