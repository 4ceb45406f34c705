package timetravel

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// testNow is the request time of every test: "today" is 2026-11-26.
var testNow = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

const testToday = "2026-11-26"

func strp(s string) *string { return &s }

// params reads spec's time-travel params strictly (every field known, none
// defaulted) and checks that ParamsOf reads the same.
func params(t testing.TB, spec job.Spec) Params {
	t.Helper()
	if spec.Kind != Name {
		t.Fatalf("spec Kind = %q, want %q", spec.Kind, Name)
	}
	var p Params
	dec := json.NewDecoder(bytes.NewReader(spec.Params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("spec Params %s: %v", spec.Params, err)
	}
	if got := ParamsOf(spec); !reflect.DeepEqual(got, p) {
		t.Fatalf("ParamsOf = %+v, want %+v", got, p)
	}
	return p
}

// withoutParams is spec with its Params cleared, for comparing the common
// fields.
func withoutParams(spec job.Spec) job.Spec {
	spec.Params = nil
	return spec
}

// tps builds explicit time points as a client would send them.
func tps(dates ...string) []TimePointInput {
	out := make([]TimePointInput, len(dates))
	for i, d := range dates {
		out[i] = TimePointInput{Date: d, set: true}
	}
	return out
}

// nDates returns n distinct past dates, one per month from January 2020.
func nDates(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = time.Date(2020, time.Month(1+i), 1, 0, 0, 0, 0, time.UTC).Format(DateLayout)
	}
	return out
}

func TestValidateQuestion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		question *string
		want     string // the question in the spec; empty when refused
		wantErr  bool
	}{
		{name: "missing", question: nil, wantErr: true},
		{name: "empty", question: strp(""), wantErr: true},
		{name: "only white space", question: strp(" \t\n\r  "), wantErr: true},
		{name: "valid", question: strp("What are the best AI models?"), want: "What are the best AI models?"},
		{name: "trimmed", question: strp("  What changed?\n"), want: "What changed?"},
		{name: "inner newline and tab allowed", question: strp("line one\n\tline two"), want: "line one\n\tline two"},
		{name: "4000 runes exactly", question: strp(strings.Repeat("é", job.MaxQuestionRunes)), want: strings.Repeat("é", job.MaxQuestionRunes)},
		{name: "4000 runes after trimming", question: strp("  " + strings.Repeat("a", job.MaxQuestionRunes) + "  "), want: strings.Repeat("a", job.MaxQuestionRunes)},
		{name: "4001 runes", question: strp(strings.Repeat("é", job.MaxQuestionRunes+1)), wantErr: true},
		{name: "NUL", question: strp("what\x00now"), wantErr: true},
		{name: "escape", question: strp("what \x1b[31m now"), wantErr: true},
		{name: "DEL", question: strp("what\x7f"), wantErr: true},
		{name: "C1 control", question: strp("what\u0085now"), wantErr: true},
		{name: "invalid UTF-8", question: strp("what\xffnow"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, ferr := Submission{Question: tt.question}.Validate(testNow)
			if tt.wantErr {
				if ferr == nil {
					t.Fatalf("Validate accepted question %q", clipForLog(tt.question))
				}
				if ferr.Field != "question" {
					t.Errorf("Field = %q, want %q", ferr.Field, "question")
				}
				if ferr.Message == "" {
					t.Error("empty Message")
				}
				return
			}
			if ferr != nil {
				t.Fatalf("Validate: %v", ferr)
			}
			if spec.Question != tt.want {
				t.Errorf("Question = %q, want %q", clipForLog(&spec.Question), clipForLog(&tt.want))
			}
		})
	}
}

func clipForLog(s *string) string {
	if s == nil {
		return "<nil>"
	}
	if len(*s) > 60 {
		return (*s)[:60] + "..."
	}
	return *s
}

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	spec, ferr := Submission{Question: strp("q")}.Validate(testNow)
	if ferr != nil {
		t.Fatalf("Validate: %v", ferr)
	}
	want := job.Spec{Kind: Name, Question: "q", Cache: job.CacheUse}
	if got := withoutParams(spec); !reflect.DeepEqual(got, want) {
		t.Errorf("spec =\n%+v\nwant\n%+v", got, want)
	}
	wantParams := Params{
		TimePoints: []TimePoint{
			{Date: "2023-01-01", Label: "January 2023"},
			{Date: "2023-03-01", Label: "March 2023"},
			{Date: "2024-05-01", Label: "May 2024"},
			{Date: testToday, Label: "Today"},
		},
		Complexity: ComplexityStandard,
	}
	if got := params(t, spec); !reflect.DeepEqual(got, wantParams) {
		t.Errorf("params =\n%+v\nwant\n%+v", got, wantParams)
	}
}

func TestValidateDefaultsDoNotAlias(t *testing.T) {
	t.Parallel()
	a := DefaultTimePoints()
	a[0].Date = "1999-01-01"
	if b := DefaultTimePoints(); b[0].Date != "2023-01-01" {
		t.Fatalf("DefaultTimePoints shares its slice: got %q after a caller's change", b[0].Date)
	}
}

func TestValidateTimePoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        []TimePointInput
		now       time.Time // zero means testNow
		want      []TimePoint
		wantField string // non-empty: Validate must fail naming this field
	}{
		{
			name:      "explicit empty list",
			in:        []TimePointInput{},
			wantField: "time_points",
		},
		{
			name: "one point",
			in:   tps("2023-01-01"),
			want: []TimePoint{{Date: "2023-01-01", Label: "January 2023"}},
		},
		{
			name: "12 points allowed",
			in:   tps(nDates(12)...),
			want: func() []TimePoint {
				var out []TimePoint
				for _, d := range nDates(12) {
					p, _ := time.Parse(DateLayout, d)
					out = append(out, TimePoint{Date: d, Label: p.Format("January 2006")})
				}
				return out
			}(),
		},
		{
			name:      "13 points refused",
			in:        tps(nDates(13)...),
			wantField: "time_points",
		},
		{
			name:      "duplicate dates",
			in:        tps("2023-01-01", "2024-01-01", "2023-01-01"),
			wantField: "time_points[2]",
		},
		{
			name:      "duplicate after trimming",
			in:        tps("2023-01-01", " 2023-01-01 "),
			wantField: "time_points[1]",
		},
		{
			name:      "today twice",
			in:        tps("today", "TODAY"),
			wantField: "time_points[1]",
		},
		{
			name:      "today and today's explicit date",
			in:        tps("2023-01-01", "today", testToday),
			wantField: "time_points[2]",
		},
		{
			name:      "today's explicit date then today",
			in:        tps(testToday, "today"),
			wantField: "time_points[1]",
		},
		{
			name:      "future date",
			in:        tps("2023-01-01", "2026-11-27"),
			wantField: "time_points[1]",
		},
		{
			name:      "far future date",
			in:        tps("9999-12-31"),
			wantField: "time_points[0]",
		},
		{
			name: "today's explicit date is not in the future",
			in:   tps(testToday),
			want: []TimePoint{{Date: testToday, Label: "November 26, 2026"}},
		},
		{
			name:      "February 30",
			in:        tps("2023-01-01", "2024-01-01", "2023-02-30"),
			wantField: "time_points[2]",
		},
		{
			name:      "single-digit month and day",
			in:        tps("2023-1-1"),
			wantField: "time_points[0]",
		},
		{
			name:      "yesterday",
			in:        tps("2023-01-01", "yesterday"),
			wantField: "time_points[1]",
		},
		{
			name:      "empty date",
			in:        tps(""),
			wantField: "time_points[0]",
		},
		{
			name:      "date with time",
			in:        tps("2023-01-01T00:00:00Z"),
			wantField: "time_points[0]",
		},
		{
			name:      "before 1900",
			in:        tps("2023-01-01", "1899-12-31"),
			wantField: "time_points[1]",
		},
		{
			name: "1900-01-01 allowed",
			in:   tps("1900-01-01"),
			want: []TimePoint{{Date: "1900-01-01", Label: "January 1900"}},
		},
		{
			name:      "null element",
			in:        []TimePointInput{{Date: "2023-01-01", set: true}, {}},
			wantField: "time_points[1]",
		},
		{
			name: "default labels: first of month and other days",
			in:   tps("2023-03-01", "2023-03-14"),
			want: []TimePoint{
				{Date: "2023-03-01", Label: "March 2023"},
				{Date: "2023-03-14", Label: "March 14, 2023"},
			},
		},
		{
			name: "explicit labels kept and trimmed, blank label defaulted",
			in: []TimePointInput{
				{Date: "2023-01-01", Label: "  New Year 2023 ", set: true},
				{Date: "2024-02-29", Label: "   ", set: true},
				{Date: "today", Label: "now", set: true},
			},
			want: []TimePoint{
				{Date: "2023-01-01", Label: "New Year 2023"},
				{Date: "2024-02-29", Label: "February 29, 2024"},
				{Date: testToday, Label: "now"},
			},
		},
		{
			name: "label of 80 runes allowed",
			in:   []TimePointInput{{Date: "2023-01-01", Label: strings.Repeat("ü", MaxLabelRunes), set: true}},
			want: []TimePoint{{Date: "2023-01-01", Label: strings.Repeat("ü", MaxLabelRunes)}},
		},
		{
			name: "label of 81 runes refused",
			in: []TimePointInput{
				{Date: "2023-01-01", set: true},
				{Date: "2024-01-01", Label: strings.Repeat("ü", MaxLabelRunes+1), set: true},
			},
			wantField: "time_points[1].label",
		},
		{
			name:      "label with control character",
			in:        []TimePointInput{{Date: "2023-01-01", Label: "bad\nlabel", set: true}},
			wantField: "time_points[0].label",
		},
		{
			name: "sorted chronologically",
			in:   tps("today", "2024-05-01", "2023-01-01", "2023-03-01"),
			want: []TimePoint{
				{Date: "2023-01-01", Label: "January 2023"},
				{Date: "2023-03-01", Label: "March 2023"},
				{Date: "2024-05-01", Label: "May 2024"},
				{Date: testToday, Label: "Today"},
			},
		},
		{
			name: "sorting keeps labels with their dates",
			in: []TimePointInput{
				{Date: "2024-01-01", Label: "later", set: true},
				{Date: "1999-12-31", Label: "earlier", set: true},
			},
			want: []TimePoint{
				{Date: "1999-12-31", Label: "earlier"},
				{Date: "2024-01-01", Label: "later"},
			},
		},
		{
			name: "today is case-insensitive and trimmed",
			in:   tps(" ToDaY "),
			want: []TimePoint{{Date: testToday, Label: "Today"}},
		},
		{
			name: "today is the UTC date of the request",
			in:   tps("today"),
			// 23:30 in New York on November 25 is November 26 in UTC.
			now:  time.Date(2026, 11, 25, 23, 30, 0, 0, time.FixedZone("EST", -5*3600)),
			want: []TimePoint{{Date: testToday, Label: "Today"}},
		},
		{
			name: "future relative to the UTC date",
			in:   tps("2026-11-27"),
			// 00:30 in Paris on November 27 is still November 26 in UTC.
			now:       time.Date(2026, 11, 27, 0, 30, 0, 0, time.FixedZone("CET", 3600)),
			wantField: "time_points[0]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := tt.now
			if now.IsZero() {
				now = testNow
			}
			spec, ferr := Submission{Question: strp("q"), TimePoints: tt.in}.Validate(now)
			if tt.wantField != "" {
				if ferr == nil {
					t.Fatalf("Validate accepted %+v: %s", tt.in, spec.Params)
				}
				if ferr.Field != tt.wantField {
					t.Errorf("Field = %q (%s), want %q", ferr.Field, ferr.Message, tt.wantField)
				}
				if ferr.Message == "" {
					t.Error("empty Message")
				}
				return
			}
			if ferr != nil {
				t.Fatalf("Validate: %v", ferr)
			}
			if got := params(t, spec).TimePoints; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("TimePoints =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestValidateFirstProblemWins(t *testing.T) {
	t.Parallel()
	// The question is checked before the time points, the time points before
	// the model, the model before the complexity.
	tests := []struct {
		name string
		sub  Submission
		want string
	}{
		{"question before time points", Submission{Question: strp(""), TimePoints: []TimePointInput{}}, "question"},
		{"time points before model", Submission{Question: strp("q"), TimePoints: tps("bad"), Model: "bad model"}, "time_points[0]"},
		{"model before complexity", Submission{Question: strp("q"), Model: "bad model", Complexity: "huge"}, "model"},
		{"first bad time point", Submission{Question: strp("q"), TimePoints: tps("2023-01-01", "bad", "also bad")}, "time_points[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, ferr := tt.sub.Validate(testNow)
			if ferr == nil || ferr.Field != tt.want {
				t.Fatalf("error = %v, want one naming %q", ferr, tt.want)
			}
		})
	}
}

func TestValidateModel(t *testing.T) {
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
			spec, ferr := Submission{Question: strp("q"), Model: tt.model}.Validate(testNow)
			if !tt.ok {
				if ferr == nil {
					t.Fatalf("model %q accepted", tt.model)
				}
				if ferr.Field != "model" {
					t.Errorf("Field = %q, want model", ferr.Field)
				}
				return
			}
			if ferr != nil {
				t.Fatalf("model %q refused: %v", tt.model, ferr)
			}
			if spec.Model != tt.model {
				t.Errorf("Model = %q, want %q", spec.Model, tt.model)
			}
		})
	}
}

func TestValidateComplexity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Complexity
		ok   bool
	}{
		{"", ComplexityStandard, true},
		{"brief", ComplexityBrief, true},
		{"standard", ComplexityStandard, true},
		{"detailed", ComplexityDetailed, true},
		{"Brief", "", false},
		{"long", "", false},
		{" brief", "", false},
		{strings.Repeat("x", 1000), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			spec, ferr := Submission{Question: strp("q"), Complexity: tt.in}.Validate(testNow)
			if !tt.ok {
				if ferr == nil {
					t.Fatalf("complexity %q accepted", tt.in)
				}
				if ferr.Field != "complexity" {
					t.Errorf("Field = %q, want complexity", ferr.Field)
				}
				if utf8.RuneCountInString(ferr.Message) > 200 {
					t.Errorf("message not truncated: %d runes", utf8.RuneCountInString(ferr.Message))
				}
				return
			}
			if ferr != nil {
				t.Fatalf("complexity %q refused: %v", tt.in, ferr)
			}
			if got := params(t, spec).Complexity; got != tt.want {
				t.Errorf("Complexity = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateForceTimeTravel(t *testing.T) {
	t.Parallel()
	for _, force := range []bool{false, true} {
		spec, ferr := Submission{Question: strp("q"), ForceTimeTravel: force}.Validate(testNow)
		if ferr != nil {
			t.Fatalf("Validate: %v", ferr)
		}
		if got := params(t, spec).ForceTimeTravel; got != force {
			t.Errorf("ForceTimeTravel = %v, want %v", got, force)
		}
		// Forcing time travel reads no cached answer.
		if want := !force; spec.ReadsCache() != want {
			t.Errorf("force %v: Cache = %q, ReadsCache = %v, want %v", force, spec.Cache, spec.ReadsCache(), want)
		}
	}
}

// decodeSubmission decodes body as the API does: one object, unknown fields
// refused.
func decodeSubmission(body string) (Submission, error) {
	var s Submission
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	return s, err
}

func TestDecodeTimePoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		// decodeErr: decoding must fail with a *job.FieldError naming
		// "time_points" whose message contains this.
		decodeErr string
		// validField: decoding succeeds and Validate fails naming this field.
		validField string
		want       []TimePoint
	}{
		{
			name: "strings",
			body: `{"question":"q","time_points":["2023-01-01","today"]}`,
			want: []TimePoint{{Date: "2023-01-01", Label: "January 2023"}, {Date: testToday, Label: "Today"}},
		},
		{
			name: "string with escapes",
			body: `{"question":"q","time_points":["2023\u002d01-01"]}`,
			want: []TimePoint{{Date: "2023-01-01", Label: "January 2023"}},
		},
		{
			name: "objects, with and without label",
			body: `{"question":"q","time_points":[{"date":"2024-05-01","label":"May 2024 (GPT-4o)"}, {"date": "2023-03-14"}]}`,
			want: []TimePoint{{Date: "2023-03-14", Label: "March 14, 2023"}, {Date: "2024-05-01", Label: "May 2024 (GPT-4o)"}},
		},
		{
			name: "mixed",
			body: `{"question":"q","time_points":["2023-01-01", {"date":"2024-05-01","label":"May 2024"}, "today"]}`,
			want: []TimePoint{{Date: "2023-01-01", Label: "January 2023"}, {Date: "2024-05-01", Label: "May 2024"}, {Date: testToday, Label: "Today"}},
		},
		{
			name:      "object with unknown field",
			body:      `{"question":"q","time_points":[{"date":"2023-01-01","when":"x"}]}`,
			decodeErr: `"when"`,
		},
		{
			name:      "object missing date",
			body:      `{"question":"q","time_points":[{"label":"January"}]}`,
			decodeErr: `"date"`,
		},
		{
			name:      "object with null date",
			body:      `{"question":"q","time_points":[{"date":null}]}`,
			decodeErr: `"date"`,
		},
		{
			name:      "object with a number date",
			body:      `{"question":"q","time_points":[{"date":20230101}]}`,
			decodeErr: "string values",
		},
		{
			name:      "object with a number label",
			body:      `{"question":"q","time_points":[{"date":"2023-01-01","label":7}]}`,
			decodeErr: "string values",
		},
		{
			name:      "number",
			body:      `{"question":"q","time_points":[20230101]}`,
			decodeErr: "YYYY-MM-DD",
		},
		{
			name:      "boolean",
			body:      `{"question":"q","time_points":["2023-01-01", true]}`,
			decodeErr: "YYYY-MM-DD",
		},
		{
			name:      "nested list",
			body:      `{"question":"q","time_points":[["2023-01-01"]]}`,
			decodeErr: "YYYY-MM-DD",
		},
		{
			name:       "null element",
			body:       `{"question":"q","time_points":["2023-01-01", null]}`,
			validField: "time_points[1]",
		},
		{
			name:       "empty list",
			body:       `{"question":"q","time_points":[]}`,
			validField: "time_points",
		},
		{
			name: "null list means the defaults",
			body: `{"question":"q","time_points":null}`,
			want: []TimePoint{
				{Date: "2023-01-01", Label: "January 2023"},
				{Date: "2023-03-01", Label: "March 2023"},
				{Date: "2024-05-01", Label: "May 2024"},
				{Date: testToday, Label: "Today"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub, err := decodeSubmission(tt.body)
			if tt.decodeErr != "" {
				var fe *job.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("decode error = %v (%T), want a *job.FieldError", err, err)
				}
				if fe.Field != "time_points" {
					t.Errorf("Field = %q, want time_points", fe.Field)
				}
				if !strings.Contains(fe.Message, tt.decodeErr) {
					t.Errorf("Message = %q, want it to contain %q", fe.Message, tt.decodeErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			spec, ferr := sub.Validate(testNow)
			if tt.validField != "" {
				if ferr == nil || ferr.Field != tt.validField {
					t.Fatalf("Validate error = %v, want one naming %q", ferr, tt.validField)
				}
				return
			}
			if ferr != nil {
				t.Fatalf("Validate: %v", ferr)
			}
			if got := params(t, spec).TimePoints; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("TimePoints =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestDecodeWholeSubmission(t *testing.T) {
	t.Parallel()
	body := `{"question":"  What are the best AI models?  ","time_points":["2024-05-01","2023-01-01"],"model":"gpt-4o","complexity":"brief","force_time_travel":true}`
	sub, err := decodeSubmission(body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	spec, ferr := sub.Validate(testNow)
	if ferr != nil {
		t.Fatalf("Validate: %v", ferr)
	}
	want := job.Spec{
		Kind:     Name,
		Question: "What are the best AI models?",
		Model:    "gpt-4o",
		Cache:    job.CacheBypass,
	}
	if got := withoutParams(spec); !reflect.DeepEqual(got, want) {
		t.Errorf("spec =\n%+v\nwant\n%+v", got, want)
	}
	wantParams := Params{
		TimePoints:      []TimePoint{{Date: "2023-01-01", Label: "January 2023"}, {Date: "2024-05-01", Label: "May 2024"}},
		Complexity:      ComplexityBrief,
		ForceTimeTravel: true,
	}
	if got := params(t, spec); !reflect.DeepEqual(got, wantParams) {
		t.Errorf("params =\n%+v\nwant\n%+v", got, wantParams)
	}
}

// FuzzSubmission decodes arbitrary bytes as a submission and validates it:
// nothing may panic, and an accepted submission must give a spec that keeps
// every promise of the API.
func FuzzSubmission(f *testing.F) {
	for _, s := range []string{
		`{"question":"What are the best AI models?"}`,
		`{"question":"q","time_points":["2023-01-01",{"date":"2024-05-01","label":"May 2024"},"today"]}`,
		`{"question":"q","time_points":["today","TODAY"]}`,
		`{"question":"q","time_points":["2026-11-26","today"]}`,
		`{"question":"q","time_points":["2023-02-30"]}`,
		`{"question":"q","time_points":[null,1,true,{"date":null}]}`,
		`{"question":" ","model":"gpt-4o","complexity":"detailed","force_time_travel":true}`,
		`{"question":"q","time_points":[{"date":"1900-01-01","label":"` + strings.Repeat("x", 81) + `"}]}`,
		`{"question":"q","time_points":[]}`,
		`[]`, `null`, `"x"`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	today := testNow.Format(DateLayout)
	f.Fuzz(func(t *testing.T, body []byte) {
		var sub Submission
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sub); err != nil {
			var fe *job.FieldError
			if errors.As(err, &fe) && fe.Field != "time_points" {
				t.Fatalf("decoding error names %q, want time_points", fe.Field)
			}
			return
		}
		spec, ferr := sub.Validate(testNow)
		if ferr != nil {
			if ferr.Field == "" || ferr.Message == "" {
				t.Fatalf("incomplete FieldError %+v", ferr)
			}
			return
		}
		p := params(t, spec)
		q := spec.Question
		if q == "" || strings.TrimSpace(q) != q {
			t.Fatalf("question %q is empty or not trimmed", q)
		}
		if n := utf8.RuneCountInString(q); n > job.MaxQuestionRunes {
			t.Fatalf("question has %d runes", n)
		}
		if !utf8.ValidString(q) {
			t.Fatalf("question is not valid UTF-8")
		}
		if n := len(p.TimePoints); n < 1 || n > MaxTimePoints {
			t.Fatalf("%d time points", n)
		}
		seen := map[string]bool{}
		for i, tp := range p.TimePoints {
			d, err := time.Parse(DateLayout, tp.Date)
			if err != nil || d.Format(DateLayout) != tp.Date {
				t.Fatalf("time point %d has date %q, not YYYY-MM-DD", i, tp.Date)
			}
			if tp.Date > today {
				t.Fatalf("time point %d is in the future: %s", i, tp.Date)
			}
			if d.Before(earliestDate) {
				t.Fatalf("time point %d is before 1900: %s", i, tp.Date)
			}
			if seen[tp.Date] {
				t.Fatalf("date %s appears twice", tp.Date)
			}
			seen[tp.Date] = true
			if i > 0 && p.TimePoints[i-1].Date >= tp.Date {
				t.Fatalf("time points not sorted: %s then %s", p.TimePoints[i-1].Date, tp.Date)
			}
			if tp.Label == "" || strings.TrimSpace(tp.Label) != tp.Label || utf8.RuneCountInString(tp.Label) > MaxLabelRunes {
				t.Fatalf("time point %d has label %q", i, tp.Label)
			}
			for _, r := range tp.Label {
				if unicode.IsControl(r) {
					t.Fatalf("time point %d has a control character in label %q", i, tp.Label)
				}
			}
		}
		switch p.Complexity {
		case ComplexityBrief, ComplexityStandard, ComplexityDetailed:
		default:
			t.Fatalf("complexity %q", p.Complexity)
		}
		if job.ValidModel("model", spec.Model) != nil {
			t.Fatalf("model %q", spec.Model)
		}
		if p.ForceTimeTravel && spec.ReadsCache() {
			t.Fatalf("force_time_travel with cache %q", spec.Cache)
		}
	})
}

func TestValidateCarriesCallbackURL(t *testing.T) {
	t.Parallel()
	q := "q"
	spec, ferr := Submission{Question: &q, CallbackURL: "  https://example.com/hook?x=1 "}.Validate(time.Now())
	if ferr != nil || spec.CallbackURL != "https://example.com/hook?x=1" {
		t.Fatalf("spec %+v, %v; want the callback URL trimmed", spec, ferr)
	}
	spec, _ = Submission{Question: &q}.Validate(time.Now())
	if spec.CallbackURL != "" {
		t.Fatalf("callback URL %q without one submitted", spec.CallbackURL)
	}
}

func TestValidateCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cache     string
		force     bool
		want      job.CacheMode
		readsFrom bool
		ok        bool
	}{
		{"default", "", false, job.CacheUse, true, true},
		{"use", "use", false, job.CacheUse, true, true},
		{"bypass", "bypass", false, job.CacheBypass, false, true},
		{"force_time_travel bypasses", "", true, job.CacheBypass, false, true},
		{"force_time_travel wins over use", "use", true, job.CacheBypass, false, true},
		{"case matters", "Bypass", false, "", false, false},
		{"unknown", "only", false, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, ferr := Submission{Question: strp("q"), Cache: tt.cache, ForceTimeTravel: tt.force}.Validate(testNow)
			if !tt.ok {
				if ferr == nil || ferr.Field != "cache" {
					t.Fatalf("cache %q: error %v, want one naming cache", tt.cache, ferr)
				}
				return
			}
			if ferr != nil {
				t.Fatalf("cache %q refused: %v", tt.cache, ferr)
			}
			if spec.Cache != tt.want || spec.ReadsCache() != tt.readsFrom {
				t.Errorf("Cache = %q, ReadsCache = %v; want %q, %v", spec.Cache, spec.ReadsCache(), tt.want, tt.readsFrom)
			}
		})
	}
}
