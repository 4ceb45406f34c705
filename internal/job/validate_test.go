package job

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// The time-travel request (time points, complexity, force_time_travel)
// is tested with its kind, in package timetravel; these are the helpers
// every kind's request uses.

func strp(s string) *string { return &s }

func clipForLog(s *string) string {
	if s == nil {
		return "<nil>"
	}
	if len(*s) > 60 {
		return (*s)[:60] + "..."
	}
	return *s
}

func TestValidQuestion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		question *string
		want     string // the question returned; empty when refused
		wantErr  bool
	}{
		{name: "missing", question: nil, wantErr: true},
		{name: "empty", question: strp(""), wantErr: true},
		{name: "only white space", question: strp(" \t\n\r  "), wantErr: true},
		{name: "valid", question: strp("What are the best AI models?"), want: "What are the best AI models?"},
		{name: "trimmed", question: strp("  What changed?\n"), want: "What changed?"},
		{name: "inner newline and tab allowed", question: strp("line one\n\tline two"), want: "line one\n\tline two"},
		{name: "4000 runes exactly", question: strp(strings.Repeat("é", MaxQuestionRunes)), want: strings.Repeat("é", MaxQuestionRunes)},
		{name: "4000 runes after trimming", question: strp("  " + strings.Repeat("a", MaxQuestionRunes) + "  "), want: strings.Repeat("a", MaxQuestionRunes)},
		{name: "4001 runes", question: strp(strings.Repeat("é", MaxQuestionRunes+1)), wantErr: true},
		{name: "NUL", question: strp("what\x00now"), wantErr: true},
		{name: "escape", question: strp("what \x1b[31m now"), wantErr: true},
		{name: "DEL", question: strp("what\x7f"), wantErr: true},
		{name: "C1 control", question: strp("what\u0085now"), wantErr: true},
		{name: "invalid UTF-8", question: strp("what\xffnow"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, ferr := ValidQuestion(tt.question)
			if tt.wantErr {
				if ferr == nil {
					t.Fatalf("ValidQuestion accepted %q", clipForLog(tt.question))
				}
				if ferr.Field != "question" {
					t.Errorf("Field = %q, want %q", ferr.Field, "question")
				}
				if ferr.Message == "" {
					t.Error("empty Message")
				}
				if q != "" {
					t.Errorf("question %q returned with the error", clipForLog(&q))
				}
				return
			}
			if ferr != nil {
				t.Fatalf("ValidQuestion: %v", ferr)
			}
			if q != tt.want {
				t.Errorf("question = %q, want %q", clipForLog(&q), clipForLog(&tt.want))
			}
		})
	}
}

func TestValidModel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		model string
		ok    bool
	}{
		{"", true},
		{"gpt-4o", true},
		{"gpt-4o-mini", true},
		{"llama3.1:8b", true},
		{"meta-llama/Llama-3.1-8B-Instruct", true},
		{"org@model+v2_final", true},
		{"a", true},
		{"a" + strings.Repeat("b", 127), true},
		{"a" + strings.Repeat("b", 128), false},
		{"gpt 4o", false},
		{"-leading-dash", false},
		{".hidden", false},
		{"/abs", false},
		{"model\n", false},
		{"modèle", false},
		{"model;rm -rf", false},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			t.Parallel()
			for _, field := range []string{"model", "models[1]"} {
				ferr := ValidModel(field, tt.model)
				if !tt.ok {
					if ferr == nil {
						t.Fatalf("model %q accepted", tt.model)
					}
					if ferr.Field != field {
						t.Errorf("Field = %q, want %q", ferr.Field, field)
					}
					if !strings.HasPrefix(ferr.Message, field+" ") {
						t.Errorf("Message = %q, want it to name %s", ferr.Message, field)
					}
					continue
				}
				if ferr != nil {
					t.Fatalf("model %q refused: %v", tt.model, ferr)
				}
			}
		})
	}
}

func TestCommonValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		common    Common
		want      Spec
		readsFrom bool
		wantField string // non-empty: Validate must fail naming this field
	}{
		{name: "default cache", common: Common{Question: strp("q")}, want: Spec{Question: "q", Cache: CacheUse}, readsFrom: true},
		{name: "use", common: Common{Question: strp("q"), Cache: "use"}, want: Spec{Question: "q", Cache: CacheUse}, readsFrom: true},
		{name: "bypass", common: Common{Question: strp("q"), Cache: "bypass"}, want: Spec{Question: "q", Cache: CacheBypass}},
		{name: "case matters", common: Common{Question: strp("q"), Cache: "Bypass"}, wantField: "cache"},
		{name: "unknown", common: Common{Question: strp("q"), Cache: "only"}, wantField: "cache"},
		{name: "question trimmed", common: Common{Question: strp("  What changed?\n")}, want: Spec{Question: "What changed?", Cache: CacheUse}, readsFrom: true},
		{name: "question missing", common: Common{}, wantField: "question"},
		{name: "question before cache", common: Common{Question: strp(" "), Cache: "only"}, wantField: "question"},
		{
			name:      "callback URL carried over, trimmed",
			common:    Common{Question: strp("q"), CallbackURL: "  https://example.com/hook?x=1 "},
			want:      Spec{Question: "q", Cache: CacheUse, CallbackURL: "https://example.com/hook?x=1"},
			readsFrom: true,
		},
		{
			// Validate does not check the URL: the api does, with its
			// webhook policy.
			name:      "callback URL not checked",
			common:    Common{Question: strp("q"), CallbackURL: "not a URL"},
			want:      Spec{Question: "q", Cache: CacheUse, CallbackURL: "not a URL"},
			readsFrom: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, ferr := tt.common.Validate()
			if tt.wantField != "" {
				if ferr == nil || ferr.Field != tt.wantField {
					t.Fatalf("error = %v, want one naming %q", ferr, tt.wantField)
				}
				if ferr.Message == "" {
					t.Error("empty Message")
				}
				return
			}
			if ferr != nil {
				t.Fatalf("Validate: %v", ferr)
			}
			// Kind, model and params are the kind's to set.
			if !reflect.DeepEqual(spec, tt.want) {
				t.Errorf("spec =\n%+v\nwant\n%+v", spec, tt.want)
			}
			if spec.ReadsCache() != tt.readsFrom {
				t.Errorf("ReadsCache = %v, want %v", spec.ReadsCache(), tt.readsFrom)
			}
		})
	}
}

func TestCommonValidateTruncatesBadCache(t *testing.T) {
	t.Parallel()
	_, ferr := Common{Question: strp("q"), Cache: strings.Repeat("x", 1000)}.Validate()
	if ferr == nil || ferr.Field != "cache" {
		t.Fatalf("error = %v, want one naming cache", ferr)
	}
	if utf8.RuneCountInString(ferr.Message) > 200 {
		t.Errorf("message not truncated: %d runes", utf8.RuneCountInString(ferr.Message))
	}
}

func TestFieldErrorError(t *testing.T) {
	t.Parallel()
	e := &FieldError{Field: "time_points[2].date", Message: "bad date"}
	if got, want := e.Error(), "time_points[2].date: bad date"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = e
	if err.Error() != e.Error() {
		t.Errorf("as an error: %q", err.Error())
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"héllo wörld", 5, "héllo…"},
		{"ééé", 3, "ééé"},
		{"éééé", 2, "éé…"},
		{"abc", 0, "…"},
	}
	for _, tt := range tests {
		if got := Truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
