package ensemble

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name, body, field string
	}{
		{"ok", `{"question":"q?","models":["a","b"]}`, ""},
		{"no question", `{"models":["a","b"]}`, "question"},
		{"no models", `{"question":"q?"}`, "models"},
		{"one model", `{"question":"q?","models":["a"]}`, "models"},
		{"nine models", `{"question":"q?","models":["a","b","c","d","e","f","g","h","i"]}`, "models"},
		{"duplicate", `{"question":"q?","models":["a","b","a"]}`, "models[2]"},
		{"empty model", `{"question":"q?","models":["a"," "]}`, "models[1]"},
		{"bad model", `{"question":"q?","models":["a","b c"]}`, "models[1]"},
		{"bad synthesis model", `{"question":"q?","models":["a","b"],"synthesis_model":"x y"}`, "synthesis_model"},
		{"bad cache", `{"question":"q?","models":["a","b"],"cache":"sometimes"}`, "cache"},
		{"unknown field", `{"question":"q?","models":["a","b"],"time_points":[]}`, "-"},
		{"models not a list", `{"question":"q?","models":"a,b"}`, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Kind{}.Decode([]byte(tt.body), time.Now())
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if spec.Kind != Name || len(ParamsOf(spec).Models) != 2 {
					t.Fatalf("spec = %+v", spec)
				}
				return
			}
			if tt.field == "-" { // refused by the decoding, which the api names
				if err == nil {
					t.Fatal("Decode accepted it")
				}
				return
			}
			var fe *job.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Decode error = %v, want a field error on %s", err, tt.field)
			}
		})
	}
}

func TestPlanSharesAnswersPerModelAndQuestion(t *testing.T) {
	env := jobkind.Env{Model: "d", Extraction: "x", ProviderOf: func(m string) string { return "p-" + m }}
	plan := func(q string, models ...string) []jobkind.Member {
		t.Helper()
		m, err := Kind{}.Plan(Spec(q, Params{Models: models}), env)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a := plan("What is Go?", "m1", "m2", "m3")
	b := plan("What is Go?", "m3", "m1")
	if len(a) != 3 || a[0].Label != "m1" || a[0].Request.Model != "m1" {
		t.Fatalf("plan = %+v", a)
	}
	if a[0].CacheKey != b[1].CacheKey || a[2].CacheKey != b[0].CacheKey {
		t.Fatal("the same model asked the same question in another ensemble has another cache key")
	}
	if a[0].CacheKey == a[1].CacheKey {
		t.Fatal("two models share a cache key")
	}
	if c := plan("What is Rust?", "m1", "m2"); c[0].CacheKey == a[0].CacheKey {
		t.Fatal("two questions share a cache key")
	}
}

func TestPartsAndResultKey(t *testing.T) {
	env := jobkind.Env{Model: "d", Extraction: "x"}
	spec := Spec("q?", Params{Models: []string{"a", "b"}, SynthesisModel: "s"})
	done := []job.Member{{Index: 0, Label: "a", Text: "A says"}, {Index: 1, Label: "b", Text: "B says"}}
	parts, err := Kind{}.Parts(spec, env, done)
	if err != nil || len(parts) != 2 {
		t.Fatalf("Parts = %v, %v", parts, err)
	}
	if parts[0].Name != PartSynthesis || !parts[0].Stream || parts[0].Request.Model != "s" {
		t.Fatalf("synthesis part = %+v", parts[0])
	}
	if parts[1].Name != PartAnalysis || parts[1].Stream || !parts[1].Request.JSON || parts[1].Parse == nil {
		t.Fatalf("analysis part = %+v", parts[1])
	}
	one, _ := Kind{}.Parts(spec, env, done[:1])
	if one[1].Fixed == nil {
		t.Fatal("the analysis of one answer asks a model")
	}
	k1 := Kind{}.ResultKey(spec, env, done)
	other := append([]job.Member(nil), done...)
	other[1].Text = "B says otherwise"
	if k1 == (Kind{}).ResultKey(spec, env, other) {
		t.Fatal("results over different answers share a key")
	}
}

func TestParseAnalysis(t *testing.T) {
	done := []job.Member{{Index: 0, Label: "gpt-4o"}, {Index: 1, Label: "claude-3"}}
	tests := []struct {
		name, answer string
		want         Analysis
		err          bool
	}{
		{
			name:   "as asked",
			answer: `{"consensus":["x"],"disagreements":[{"topic":"t","positions":[{"model":"gpt-4o","position":"p1"},{"model":"claude-3","position":"p2"}]}],"unique_claims":[{"model":"claude-3","claim":"c"}]}`,
			want: Analysis{Consensus: []string{"x"}, Disagreements: []Disagreement{{Topic: "t", Positions: []Position{{"gpt-4o", "p1"}, {"claude-3", "p2"}}}},
				UniqueClaims: []Claim{{"claude-3", "c"}}},
		},
		{
			name:   "fenced, other names, models by letter and number, positions as an object",
			answer: "Here it is:\n```json\n{\"Agreements\":[{\"point\":\"x\"}],\"conflicts\":[{\"issue\":\"t\",\"positions\":{\"Model A\":\"p1\",\"2\":\"p2\"}}],\"Unique Claims\":[{\"model\":\"GPT-4O\",\"claim\":\"c\"}]}\n```",
			want: Analysis{Consensus: []string{"x"}, Disagreements: []Disagreement{{Topic: "t", Positions: []Position{{"gpt-4o", "p1"}, {"claude-3", "p2"}}}},
				UniqueClaims: []Claim{{"gpt-4o", "c"}}},
		},
		{
			name:   "unknown model kept as written",
			answer: `{"consensus":[],"unique_claims":[{"model":"llama","claim":"c"}]}`,
			want:   Analysis{Consensus: []string{}, Disagreements: []Disagreement{}, UniqueClaims: []Claim{{"llama", "c"}}},
		},
		{name: "no object", answer: "they mostly agree", err: true},
		{name: "no lists", answer: `{"summary":"x"}`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnalysis(tt.answer, done)
			if tt.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tt.want)
			if string(g) != string(w) {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestView(t *testing.T) {
	j := &job.Job{ID: "j1", Spec: Spec("q?", Params{Models: []string{"a", "b"}}), Noun: Noun,
		Members: []job.Member{{Index: 0, Label: "a", Status: job.MemberCompleted, Text: "A"}, {Index: 1, Label: "b", Status: job.MemberFailed, Error: "boom"}},
		Result:  &job.Result{Parts: []job.Part{{Name: PartSynthesis, Text: "S"}, {Name: PartAnalysis, Value: json.RawMessage(`{"consensus":["x"],"disagreements":[],"unique_claims":[]}`)}}},
	}
	r := jobkind.NewRegistry()
	r.Add(Kind{})
	v, err := r.View(j)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	for _, want := range []string{`"kind":"ensemble"`, `"answers":[`, `"label":"a"`, `"synthesis":"S"`, `"consensus":["x"]`, `"models":["a","b"]`, `"answer b: boom"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("view %s lacks %s", b, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"question":"q?","models":["a","b"]}`)
	f.Add(`{"question":"q?","models":[1,2]}`)
	f.Add(`{"models":null}`)
	f.Fuzz(func(t *testing.T, body string) {
		spec, err := Kind{}.Decode([]byte(body), time.Now())
		if err != nil {
			return
		}
		p := ParamsOf(spec)
		if len(p.Models) < MinModels || len(p.Models) > MaxModels {
			t.Fatalf("accepted %d models", len(p.Models))
		}
	})
}
