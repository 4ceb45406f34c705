package cache

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalizeQuestionSameKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
	}{
		{"runs of spaces", "What are the best AI models?", "What are the best  AI models?"},
		{"surrounding white space", "What are the best AI models?", "  What are the best AI models?  "},
		{"surrounding line breaks", "What are the best AI models?", "\n\r\n What are the best AI models?\n\n"},
		{"tab between words", "What are the best AI models?", "What\tare the best AI models?"},
		{"no-break space", "What are the best AI models?", "What\u00a0are the best AI models?"},
		{"ideographic space", "What are the best AI models?", "What\u3000are the best AI models?"},
		{"combining diaeresis (NFC)", "Where is Zu\u0308rich?", "Where is Zürich?"},
		{"CRLF", "Compare:\r\na\r\nb", "Compare:\na\nb"},
		{"CR", "Compare:\ra\rb", "Compare:\na\nb"},
		{"trailing white space of lines", "Compare:  \na\t\nb", "Compare:\na\nb"},
		{"white space only line", "Compare:\n   \nb", "Compare:\n\nb"},
		{"runs of spaces in an indented line", "Fix:\n    x  =  1", "Fix:\n    x = 1"},
		{"trailing white space of a fence line", "Fix:\n```go  \nx  =  1\n```", "Fix:\n```go\nx  =  1\n```"},
		{"NFC inside code", "Fix:\n```\ns := \"Zu\u0308rich\"\n```", "Fix:\n```\ns := \"Zürich\"\n```"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if a, b := NormalizeQuestion(tt.a), NormalizeQuestion(tt.b); a != b {
				t.Errorf("%q → %q and %q → %q: want one key", tt.a, a, tt.b, b)
			}
		})
	}
}

func TestNormalizeQuestionDifferentKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
	}{
		{"superscript (NFKC)", "Is 2⁵ greater than 30?", "Is 25 greater than 30?"},
		{"subscript (NFKC)", "What is H₂O?", "What is H2O?"},
		{"full-width letters (NFKC)", "What are the best ＡＩ models?", "What are the best AI models?"},
		{"ligature (NFKC)", "Is ﬁne-tuning worth it?", "Is fine-tuning worth it?"},
		{"acronym case", "What does IT stand for?", "What does it stand for?"},
		{"name case", "Where is Zürich?", "where is zürich?"},
		{"indentation in code", "Why does this print 2?\nfor x in xs:\n    print(x)\nprint(x)", "Why does this print 2?\nfor x in xs:\nprint(x)\nprint(x)"},
		{"indentation with tabs or spaces", "Fix:\n\tx", "Fix:\n    x"},
		{"spaces inside fenced code", "Why?\n```\nx  =  'a  b'\n```", "Why?\n```\nx = 'a b'\n```"},
		{"trailing spaces inside fenced code", "Why?\n```\nx = 1  \n```", "Why?\n```\nx = 1\n```"},
		{"statement or question", "Pluto is a planet.", "Pluto is a planet?"},
		{"question marks", "Why?", "Why???"},
		{"no final mark", "Why?", "Why"},
		{"line break or space", "What are the best\nAI models?", "What are the best AI models?"},
		{"blank line or none", "a\n\nb", "a\nb"},
		{"inner punctuation", "Is C++ better than C#?", "Is C better than C?"},
		{"decimal point", "What changed in Python 3.5?", "What changed in Python 35?"},
		{"digits", "Who won in 2020?", "Who won in 2021?"},
		{"a word", "Is it safe?", "Is it not safe?"},
		{"word order", "dog bites man", "man bites dog"},
		{"operator", "What is 2+2?", "What is 2-2?"},
		{"abbreviation", "What is U.S. policy?", "What is US policy?"},
		{"quotes", "Is 'yes' the answer?", "Is yes the answer?"},
		{"leading dot", "What is .NET?", "What is NET?"},
		{"space between words or none", "What is a cat fish?", "What is a catfish?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if a, b := NormalizeQuestion(tt.a), NormalizeQuestion(tt.b); a == b {
				t.Errorf("%q and %q share the key %q", tt.a, tt.b, a)
			}
		})
	}
}

func TestNormalizeQuestionExamples(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"unchanged", "What are the best AI models?", "What are the best AI models?"},
		{"white space folded, punctuation kept", "  Hello,   World!  ", "Hello, World!"},
		{"only punctuation", "???", "???"},
		{"only white space", " \t\r\n\u00a0 ", ""},
		{"empty", "", ""},
		{"final marks kept", "Why?!…", "Why?!…"},
		{"case kept", "WHAT does IT mean?", "WHAT does IT mean?"},
		{"compatibility forms kept", "ＡＩ ﬁ 2⁵ H₂O", "ＡＩ ﬁ 2⁵ H₂O"},
		{"composed (NFC)", "Zu\u0308rich", "Zürich"},
		{"line endings", "a\r\nb\rc\n", "a\nb\nc"},
		{"prose lines", "Compare:\t this  \n and\u00a0\u00a0that\t", "Compare: this\n and that"},
		{"leading indentation of the question trimmed", "    x = 1\n    y = 2", "x = 1\n    y = 2"},
		{"indentation kept, runs after it folded", "Fix:\n  \t if  x:\n\treturn", "Fix:\n  \t if x:\n\treturn"},
		{"fenced block byte for byte", "Fix:\n```py \nx  =  1  \n\n\ty\t\n```  \nthanks  !", "Fix:\n```py\nx  =  1  \n\n\ty\t\n```\nthanks !"},
		{"indented fence", "Fix:\n  ```\n a  b \n  ```", "Fix:\n  ```\n a  b \n  ```"},
		{"unclosed fence runs to the end", "Fix:\n```\na  b  \nc  d", "Fix:\n```\na  b  \nc  d"},
		{"two blocks", "```\na  b\n```\nc  d\n```\ne  f\n```", "```\na  b\n```\nc d\n```\ne  f\n```"},
		{"invalid UTF-8", "a\xffb?", "a\uFFFDb?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := NormalizeQuestion(tt.in); got != tt.want {
				t.Errorf("NormalizeQuestion(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzNormalizeQuestion checks that the normalisation never panics, is a
// fixed point, keeps valid UTF-8 valid, and leaves no white space around
// the question and no carriage return.
func FuzzNormalizeQuestion(f *testing.F) {
	for _, s := range []string{
		"What are the best AI models?", "ＡＩ？", "ﬁ", "Zu\u0308rich", " a\u00a0b ", "\xff?", "İstanbul?",
		"Is 2⁵ greater than 30?", "a\r\nb\rc", "Fix:\n```\n  x  =  1  \n```\n  y  ", "\u2028```\n```\n  a  b  \n```",
		" \u0301a", "e \u0301", "```\n\n", "x\n\u00a0```\n a  b", "\t\v\f\u3000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		n := NormalizeQuestion(q)
		if again := NormalizeQuestion(n); again != n {
			t.Fatalf("not idempotent: %q → %q → %q", q, n, again)
		}
		if !utf8.ValidString(n) {
			t.Fatalf("%q became invalid UTF-8 %q", q, n)
		}
		if strings.ContainsRune(n, '\r') {
			t.Fatalf("%q → %q keeps a carriage return", q, n)
		}
		if strings.TrimSpace(n) != n {
			t.Fatalf("%q → %q has surrounding white space", q, n)
		}
	})
}
