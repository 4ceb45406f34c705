package cache

import (
	"testing"
	"unicode/utf8"
)

func TestNormalizeQuestionSameKey(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{
		{"What are the best AI models?", "what are the best  AI models"},
		{"What are the best AI models?", "  WHAT ARE THE BEST AI MODELS???  "},
		{"What are the best AI models?", "What are the best AI models!"},
		{"What are the best AI models?", "What are the best AI models."},
		{"What are the best AI models?", "What\tare the\nbest AI models?"},
		{"What are the best AI models?", "What are the best ＡＩ models？"},      // full-width
		{"What are the best AI models?", "What\u00a0are the best AI models?"}, // no-break space
		{"Is ﬁne-tuning worth it?", "Is fine-tuning worth it?"},               // ligature
		{"Where is Zürich?", "where is zürich"},
		{"Where is Zu\u0308rich?", "Where is Zürich?"}, // combining diaeresis
	}
	for _, p := range pairs {
		if a, b := NormalizeQuestion(p[0]), NormalizeQuestion(p[1]); a != b {
			t.Errorf("%q → %q and %q → %q: want one key", p[0], a, p[1], b)
		}
	}
}

func TestNormalizeQuestionDifferentKeys(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{
		{"Is C++ better than C#?", "Is C better than C?"},
		{"What changed in Python 3.5?", "What changed in Python 35?"},
		{"Who won in 2020?", "Who won in 2021?"},
		{"Is it safe?", "Is it not safe?"},
		{"dog bites man", "man bites dog"},
		{"What is 2+2?", "What is 2-2?"},
		{"What is U.S. policy?", "What is US policy?"},
		{"Is 'yes' the answer?", "Is yes the answer?"},
		{"What is .NET?", "What is NET?"},
	}
	for _, p := range pairs {
		if a, b := NormalizeQuestion(p[0]), NormalizeQuestion(p[1]); a == b {
			t.Errorf("%q and %q share the key %q", p[0], p[1], a)
		}
	}
}

func TestNormalizeQuestionExamples(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"What are the best AI models?": "what are the best ai models",
		"  Hello,   World!  ":          "hello, world",
		"???":                          "",
		"Why?!…":                       "why",
	}
	for in, want := range cases {
		if got := NormalizeQuestion(in); got != want {
			t.Errorf("NormalizeQuestion(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzNormalizeQuestion(f *testing.F) {
	for _, s := range []string{"What are the best AI models?", "ＡＩ？", "ﬁ", "Zu\u0308rich", " a\u00a0b ", "\xff?", "İstanbul?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		n := NormalizeQuestion(q)
		if again := NormalizeQuestion(n); again != n {
			t.Fatalf("not idempotent: %q → %q → %q", q, n, again)
		}
		if utf8.ValidString(q) && !utf8.ValidString(n) {
			t.Fatalf("valid %q became invalid %q", q, n)
		}
	})
}
