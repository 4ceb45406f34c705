package timetravel

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

// testKind is the kind on testNow's date.
var testKind = Kind{Now: func() time.Time { return testNow }}

// testEnv serves every model at one provider, except "local-*" models.
var testEnv = jobkind.Env{
	Model:      "gpt-4o-mini",
	Extraction: "extractor",
	Narrative:  "",
	ProviderOf: func(model string) string {
		if strings.HasPrefix(model, "local-") {
			return "local http://llm.example/v1"
		}
		return "openai https://api.openai.com/v1"
	},
}

// threeTimePoints are the time points of threeSnaps.
var threeTimePoints = []TimePoint{
	{Date: "2023-01-01", Label: "January 2023"},
	{Date: "2024-05-01", Label: "May 2024"},
	{Date: "2026-11-26", Label: "today (November 26, 2026)"},
}

func TestKindNames(t *testing.T) {
	t.Parallel()
	k := Kind{}
	if k.Name() != "timetravel" || k.Path() != "/time-travel" || k.Noun() != "snapshot" {
		t.Errorf("Name, Path, Noun = %q, %q, %q", k.Name(), k.Path(), k.Noun())
	}
	// Event names follow the generic rules: <noun>.<verb>, <part>.<verb>.
	events := map[string]string{
		EventSnapshotStarted:     string(Noun) + ".started",
		EventSnapshotDelta:       string(Noun) + ".delta",
		EventSnapshotCompleted:   string(Noun) + ".completed",
		EventSnapshotFailed:      string(Noun) + ".failed",
		EventKeyChangesCompleted: PartKeyChanges + ".completed",
		EventKeyChangesFailed:    PartKeyChanges + ".failed",
		EventNarrativeDelta:      PartNarrative + ".delta",
		EventNarrativeCompleted:  PartNarrative + ".completed",
		EventNarrativeFailed:     PartNarrative + ".failed",
	}
	for got, want := range events {
		if got != want {
			t.Errorf("event %q, want %q", got, want)
		}
	}
	if EventSnapshotStarted != "snapshot.started" || EventKeyChangesCompleted != "key_changes.completed" || EventNarrativeDelta != "narrative.delta" {
		t.Error("time travel's event names changed on the wire")
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		// want is the spec without its Params, and wantParams its params,
		// when the body is accepted.
		want       job.Spec
		wantParams Params
		// fieldErr: Decode fails with a *job.FieldError naming this field.
		fieldErr string
		// jsonErr: Decode fails with an error of encoding/json (not a
		// *job.FieldError) whose message contains this.
		jsonErr string
	}{
		{
			name:       "defaults",
			body:       `{"question":"q"}`,
			want:       job.Spec{Kind: Name, Question: "q", Cache: job.CacheUse},
			wantParams: Params{TimePoints: defaultsOnTestNow(), Complexity: ComplexityStandard},
		},
		{
			name: "every field",
			body: `{"question":"  What are the best AI models?  ","time_points":["2024-05-01",{"date":"2023-01-01","label":"New Year"}],
				"model":"gpt-4o","complexity":"brief","force_time_travel":true,"cache":"use","callback_url":" https://example.com/hook "}`,
			want: job.Spec{Kind: Name, Question: "What are the best AI models?", Model: "gpt-4o", Cache: job.CacheBypass, CallbackURL: "https://example.com/hook"},
			wantParams: Params{
				TimePoints:      []TimePoint{{Date: "2023-01-01", Label: "New Year"}, {Date: "2024-05-01", Label: "May 2024"}},
				Complexity:      ComplexityBrief,
				ForceTimeTravel: true,
			},
		},
		{
			name:       "cache bypass without force_time_travel",
			body:       `{"question":"q","time_points":["today"],"cache":"bypass"}`,
			want:       job.Spec{Kind: Name, Question: "q", Cache: job.CacheBypass},
			wantParams: Params{TimePoints: []TimePoint{{Date: testToday, Label: "Today"}}, Complexity: ComplexityStandard},
		},
		{name: "no question", body: `{}`, fieldErr: "question"},
		{name: "blank question", body: `{"question":" "}`, fieldErr: "question"},
		{name: "bad time point", body: `{"question":"q","time_points":[7]}`, fieldErr: "time_points"},
		{name: "time point object with unknown field", body: `{"question":"q","time_points":[{"date":"2023-01-01","when":"x"}]}`, fieldErr: "time_points"},
		{name: "future time point", body: `{"question":"q","time_points":["2023-01-01","2026-11-27"]}`, fieldErr: "time_points[1]"},
		{name: "bad label", body: `{"question":"q","time_points":[{"date":"2023-01-01","label":"a\u0000b"}]}`, fieldErr: "time_points[0].label"},
		{name: "bad model", body: `{"question":"q","model":"gpt 4o"}`, fieldErr: "model"},
		{name: "bad complexity", body: `{"question":"q","complexity":"huge"}`, fieldErr: "complexity"},
		{name: "bad cache", body: `{"question":"q","cache":"never"}`, fieldErr: "cache"},
		{name: "unknown field", body: `{"question":"q","when":"now"}`, jsonErr: `unknown field "when"`},
		{name: "question of the wrong type", body: `{"question":5}`, jsonErr: "question"},
		{name: "force_time_travel of the wrong type", body: `{"question":"q","force_time_travel":"yes"}`, jsonErr: "force_time_travel"},
		{name: "data after the object", body: `{"question":"q"} {}`, jsonErr: "after the JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := Kind{}.Decode([]byte(tt.body), testNow)
			var fe *job.FieldError
			switch {
			case tt.fieldErr != "":
				if !errors.As(err, &fe) {
					t.Fatalf("error = %v (%T), want a *job.FieldError", err, err)
				}
				if fe.Field != tt.fieldErr || fe.Message == "" {
					t.Errorf("FieldError = %+v, want one naming %q", fe, tt.fieldErr)
				}
				if !reflect.DeepEqual(spec, job.Spec{}) {
					t.Errorf("spec %+v returned with the error", spec)
				}
				return
			case tt.jsonErr != "":
				if err == nil {
					t.Fatalf("Decode accepted %s: %+v", tt.body, spec)
				}
				if errors.As(err, &fe) {
					t.Errorf("error = %v, a *job.FieldError; want encoding/json's", err)
				}
				if !strings.Contains(err.Error(), tt.jsonErr) {
					t.Errorf("error = %q, want it to contain %q", err, tt.jsonErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v (%T)", err, err)
			}
			if got := withoutParams(spec); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("spec =\n%+v\nwant\n%+v", got, tt.want)
			}
			if got := params(t, spec); !reflect.DeepEqual(got, tt.wantParams) {
				t.Errorf("params =\n%+v\nwant\n%+v", got, tt.wantParams)
			}
		})
	}
}

// A type error names the field, as the api reports it.
func TestDecodeTypeError(t *testing.T) {
	t.Parallel()
	_, err := Kind{}.Decode([]byte(`{"question":"q","model":["gpt-4o"]}`), testNow)
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field != "model" {
		t.Fatalf("error = %v (%T), want a *json.UnmarshalTypeError naming model", err, err)
	}
}

func defaultsOnTestNow() []TimePoint {
	return []TimePoint{
		{Date: "2023-01-01", Label: "January 2023"},
		{Date: "2023-03-01", Label: "March 2023"},
		{Date: "2024-05-01", Label: "May 2024"},
		{Date: testToday, Label: "Today"},
	}
}

func TestSpecAndParamsOf(t *testing.T) {
	t.Parallel()
	spec := Spec("q", Params{TimePoints: threeTimePoints})
	if spec.Kind != Name || spec.Question != "q" || spec.Cache != job.CacheUse || spec.Model != "" {
		t.Errorf("Spec = %+v", spec)
	}
	want := Params{TimePoints: threeTimePoints, Complexity: ComplexityStandard}
	if got := params(t, spec); !reflect.DeepEqual(got, want) {
		t.Errorf("params = %+v, want %+v (complexity defaults to standard)", got, want)
	}
	p := Params{TimePoints: threeTimePoints[:1], Complexity: ComplexityDetailed, ForceTimeTravel: true}
	if got := ParamsOf(Spec("q", p)); !reflect.DeepEqual(got, p) {
		t.Errorf("ParamsOf(Spec(p)) = %+v, want %+v", got, p)
	}
	// A spec without params (or with params ParamsOf cannot read) has
	// none but the default complexity.
	for _, raw := range []string{"", `{}`, `{"time_points":7}`} {
		got := ParamsOf(job.Spec{Kind: Name, Params: json.RawMessage(raw)})
		if !reflect.DeepEqual(got, Params{Complexity: ComplexityStandard}) {
			t.Errorf("ParamsOf(%q) = %+v", raw, got)
		}
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	if got := (Kind{}).Models(Spec("q", Params{})); got != nil {
		t.Errorf("Models of a spec naming no model = %+v, want none", got)
	}
	spec := Spec("q", Params{})
	spec.Model = "gpt-4o"
	if got, want := (Kind{}).Models(spec), []jobkind.NamedModel{{Field: "model", Model: "gpt-4o"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Models = %+v, want %+v", got, want)
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		model      string // the spec's
		complexity Complexity
		env        jobkind.Env
		wantModel  string
	}{
		{name: "the default model", env: testEnv, wantModel: "gpt-4o-mini"},
		{name: "the request's model", model: "gpt-4o", env: testEnv, wantModel: "gpt-4o"},
		{name: "brief", complexity: ComplexityBrief, env: testEnv, wantModel: "gpt-4o-mini"},
		{name: "detailed, no provider known", complexity: ComplexityDetailed, env: jobkind.Env{Model: "m"}, wantModel: "m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const question = "What are the best AI models?"
			spec := Spec(question, Params{TimePoints: threeTimePoints, Complexity: tt.complexity})
			spec.Model = tt.model
			members, err := testKind.Plan(spec, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if len(members) != len(threeTimePoints) {
				t.Fatalf("%d members for %d time points", len(members), len(threeTimePoints))
			}
			c := ParamsOf(spec).Complexity
			keys := map[string]int{}
			for i, m := range members {
				tp := threeTimePoints[i]
				if m.Label != tp.Label || !reflect.DeepEqual(m.Ref, map[string]string{"date": tp.Date}) {
					t.Errorf("member %d is %q %v, want %q on %s", i, m.Label, m.Ref, tp.Label, tp.Date)
				}
				for name := range m.Ref {
					if job.ReservedField(name) {
						t.Errorf("member %d has a Ref field %q named like a field of job.Member", i, name)
					}
				}
				pr := Snapshot(question, tp, c)
				want := llm.Request{Model: tt.wantModel, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, Temperature: 0.3}
				if m.Request.Validate != nil {
					t.Errorf("member %d has a Validate func", i)
				}
				if !reflect.DeepEqual(m.Request, want) {
					t.Errorf("member %d request =\n%+v\nwant the snapshot prompt\n%+v", i, m.Request, want)
				}
				if m.CacheKey == "" {
					t.Errorf("member %d has no cache key", i)
				}
				if j, dup := keys[m.CacheKey]; dup {
					t.Errorf("members %d and %d share the cache key %s", j, i, m.CacheKey)
				}
				keys[m.CacheKey] = i
				// Only the answer as of today may still change.
				if want := tp.Date == testToday; m.Volatile != want {
					t.Errorf("member %d (%s) Volatile = %v, want %v", i, tp.Date, m.Volatile, want)
				}
			}
		})
	}
}

func TestPlanVolatile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		now  time.Time
		date string
		want bool
	}{
		{"long ago", testNow, "2023-01-01", false},
		{"yesterday", testNow, "2026-11-25", false},
		{"today", testNow, testToday, true},
		// 23:30 in New York on November 25 is November 26 in UTC.
		{"today in UTC, yesterday in New York", time.Date(2026, 11, 25, 23, 30, 0, 0, time.FixedZone("EST", -5*3600)), testToday, true},
		{"yesterday in UTC, today in Paris", time.Date(2026, 11, 27, 0, 30, 0, 0, time.FixedZone("CET", 3600)), testToday, true},
		{"today in Paris is tomorrow in UTC", time.Date(2026, 11, 26, 0, 30, 0, 0, time.FixedZone("CET", 3600)), testToday, true},
		{"yesterday in UTC", time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC), testToday, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k := Kind{Now: func() time.Time { return tt.now }}
			members, err := k.Plan(Spec("q", Params{TimePoints: []TimePoint{{Date: tt.date, Label: "x"}}}), testEnv)
			if err != nil {
				t.Fatal(err)
			}
			if members[0].Volatile != tt.want {
				t.Errorf("Volatile = %v on %s for %s, want %v", members[0].Volatile, tt.now, tt.date, tt.want)
			}
		})
	}
}

// Without Now, the kind reads the clock.
func TestPlanVolatileByTheClock(t *testing.T) {
	t.Parallel()
	before := time.Now().UTC().Format(DateLayout)
	members, err := Kind{}.Plan(Spec("q", Params{TimePoints: []TimePoint{{Date: "2023-01-01", Label: "a"}, {Date: before, Label: "b"}}}), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if after := time.Now().UTC().Format(DateLayout); after != before {
		t.Skip("the date changed during the test")
	}
	if members[0].Volatile || !members[1].Volatile {
		t.Errorf("Volatile = %v, %v; want false for the past, true for today", members[0].Volatile, members[1].Volatile)
	}
}

// memberKey is the cache key of spec's first member.
func memberKey(t *testing.T, spec job.Spec, env jobkind.Env) string {
	t.Helper()
	members, err := testKind.Plan(spec, env)
	if err != nil || len(members) == 0 {
		t.Fatalf("Plan: %v, %d members", err, len(members))
	}
	return members[0].CacheKey
}

func TestPlanCacheKeys(t *testing.T) {
	t.Parallel()
	const question = "What are the best AI models?"
	tp := TimePoint{Date: "2024-05-01", Label: "May 2024"}
	base := func() (job.Spec, jobkind.Env) {
		return Spec(question, Params{TimePoints: []TimePoint{tp}, Complexity: ComplexityStandard}), testEnv
	}
	tests := []struct {
		name   string
		change func(spec *job.Spec, env *jobkind.Env)
		same   bool
	}{
		// The answer depends on these.
		{"another question", func(s *job.Spec, _ *jobkind.Env) { s.Question = "What are the worst AI models?" }, false},
		{"the question in another case", func(s *job.Spec, _ *jobkind.Env) { s.Question = strings.ToLower(question) }, false},
		{"the question with another mark", func(s *job.Spec, _ *jobkind.Env) { s.Question = strings.TrimSuffix(question, "?") + "." }, false},
		{"the request's model", func(s *job.Spec, _ *jobkind.Env) { s.Model = "gpt-4o" }, false},
		{"the default model", func(_ *job.Spec, e *jobkind.Env) { e.Model = "gpt-4o" }, false},
		{"the provider", func(_ *job.Spec, e *jobkind.Env) { e.ProviderOf = func(string) string { return "other" } }, false},
		{"no provider known", func(_ *job.Spec, e *jobkind.Env) { e.ProviderOf = nil }, false},
		{"the date", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{{Date: "2024-05-02", Label: tp.Label}}})
		}, false},
		{"the label", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{{Date: tp.Date, Label: "Spring 2024"}}})
		}, false},
		{"brief", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{tp}, Complexity: ComplexityBrief})
		}, false},
		{"detailed", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{tp}, Complexity: ComplexityDetailed})
		}, false},
		// Not on these.
		{"nothing", func(*job.Spec, *jobkind.Env) {}, true},
		{"a question that normalises alike", func(s *job.Spec, _ *jobkind.Env) { s.Question = "  What are  the best\tAI models?\r\n" }, true},
		{"the request's model when it is the default", func(s *job.Spec, e *jobkind.Env) { s.Model = e.Model }, true},
		{"the default model when the request names one", func(s *job.Spec, e *jobkind.Env) { s.Model, e.Model = testEnv.Model, "other" }, true},
		{"the other time points", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{tp, {Date: "2025-01-01", Label: "January 2025"}}})
		}, true},
		{"force_time_travel", func(s *job.Spec, _ *jobkind.Env) {
			*s = Spec(s.Question, Params{TimePoints: []TimePoint{tp}, ForceTimeTravel: true})
			s.Cache = job.CacheBypass
		}, true},
		{"the cache mode, callback, owner and warming", func(s *job.Spec, _ *jobkind.Env) {
			s.Cache, s.CallbackURL, s.Owner, s.Warm = job.CacheBypass, "https://example.com/hook", "key-1", true
		}, true},
		{"the aggregation's models", func(_ *job.Spec, e *jobkind.Env) { e.Extraction, e.Narrative = "x", "y" }, true},
	}
	spec, env := base()
	baseKey := memberKey(t, spec, env)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, env := base()
			tt.change(&spec, &env)
			key := memberKey(t, spec, env)
			if (key == baseKey) != tt.same {
				t.Errorf("key %s, base %s: same = %v, want %v", key, baseKey, key == baseKey, tt.same)
			}
		})
	}
}

// members makes completed time-travel members of the time points, with
// the texts given.
func members(tps []TimePoint, texts ...string) []job.Member {
	out := make([]job.Member, len(tps))
	for i, tp := range tps {
		out[i] = job.Member{Index: i, Label: tp.Label, Ref: map[string]string{"date": tp.Date}, Status: job.MemberCompleted, Text: texts[i], Model: "gpt-4o"}
	}
	return out
}

func TestParts(t *testing.T) {
	t.Parallel()
	const question = "Which AI model is best?"
	wellFormed := `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["GPT-4o"]},{"from":"2024-05-01","to":"2026-11-26","changes":["more"]}]}`
	tests := []struct {
		name          string
		done          []job.Member
		model         string // the spec's
		env           jobkind.Env
		wantNarrModel string
	}{
		{name: "one snapshot", done: threeSnaps[2:], env: testEnv, wantNarrModel: "gpt-4o-mini"},
		{name: "three snapshots", done: threeSnaps, env: testEnv, wantNarrModel: "gpt-4o-mini"},
		{name: "the request's model writes the narrative", done: threeSnaps, model: "gpt-4o", env: testEnv, wantNarrModel: "gpt-4o"},
		{
			name: "the narrative model when configured", done: threeSnaps[:2], model: "gpt-4o",
			env: jobkind.Env{Model: "m", Extraction: "x", Narrative: "writer"}, wantNarrModel: "writer",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := Spec(question, Params{TimePoints: threeTimePoints, Complexity: ComplexityDetailed})
			spec.Model = tt.model
			parts, err := Kind{}.Parts(spec, tt.env, tt.done)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) != 2 || parts[0].Name != "key_changes" || parts[1].Name != "narrative" {
				t.Fatalf("parts = %+v, want key_changes and narrative", parts)
			}
			kc, narr := parts[0], parts[1]
			if kc.Stream {
				t.Error("key_changes is streamed, want a structured part")
			}
			if len(tt.done) == 1 {
				// A single snapshot has no transition: no call.
				if fixed, ok := kc.Fixed.([]KeyChange); !ok || fixed == nil || len(fixed) != 0 {
					t.Errorf("Fixed = %#v, want an empty non-nil []KeyChange", kc.Fixed)
				}
				if kc.Parse != nil || !reflect.DeepEqual(kc.Request, llm.Request{}) {
					t.Errorf("a fixed part has a call: %+v", kc)
				}
				b, _ := json.Marshal(kc.Fixed)
				if string(b) != "[]" {
					t.Errorf("Fixed encodes as %s, want []", b)
				}
			} else {
				if kc.Fixed != nil {
					t.Errorf("Fixed = %#v with %d snapshots", kc.Fixed, len(tt.done))
				}
				pr := KeyChanges(question, tt.done)
				want := llm.Request{Model: tt.env.Extraction, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, JSON: true}
				if !reflect.DeepEqual(kc.Request, want) {
					t.Errorf("key_changes request =\n%+v\nwant\n%+v", kc.Request, want)
				}
				if kc.Parse == nil {
					t.Fatal("no Parse")
				}
				answer := wellFormed
				if len(tt.done) == 2 {
					answer = `{"transitions":[{"from":"2023-01-01","to":"2024-05-01","changes":["GPT-4o"]}]}`
				}
				got, err := kc.Parse(answer)
				wantKC, _ := ParseKeyChanges(answer, tt.done)
				if err != nil || !reflect.DeepEqual(got, wantKC) {
					t.Errorf("Parse = %#v, %v; want %#v", got, err, wantKC)
				}
				if _, err := kc.Parse("no JSON here"); !errors.Is(err, ErrMalformed) {
					t.Errorf("Parse of a malformed answer: %v, want ErrMalformed", err)
				}
			}
			if !narr.Stream || narr.Parse != nil || narr.Fixed != nil {
				t.Errorf("narrative = %+v, want a streamed call", narr)
			}
			pr := Narrative(question, tt.done, ComplexityDetailed)
			want := llm.Request{Model: tt.wantNarrModel, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, Temperature: 0.3}
			if !reflect.DeepEqual(narr.Request, want) {
				t.Errorf("narrative request =\n%+v\nwant\n%+v", narr.Request, want)
			}
		})
	}
}

func TestResultKey(t *testing.T) {
	t.Parallel()
	const question = "Which AI model is best?"
	texts := []string{"GPT-3.5 leads.", "GPT-4o is out.", "Many strong models."}
	base := func() (job.Spec, jobkind.Env, []job.Member) {
		return Spec(question, Params{TimePoints: threeTimePoints}), testEnv, members(threeTimePoints, texts...)
	}
	type change = func(*job.Spec, *jobkind.Env, *[]job.Member)
	tests := []struct {
		name   string
		change change
		same   bool
	}{
		// The result depends on these.
		{"another question", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) { s.Question = "Which AI model is worst?" }, false},
		{"brief", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) {
			*s = Spec(question, Params{TimePoints: threeTimePoints, Complexity: ComplexityBrief})
		}, false},
		{"the extraction model", func(_ *job.Spec, e *jobkind.Env, _ *[]job.Member) { e.Extraction = "other" }, false},
		{"the extraction model's provider", func(_ *job.Spec, e *jobkind.Env, _ *[]job.Member) { e.Extraction = "local-x" }, false},
		{"the narrative model", func(_ *job.Spec, e *jobkind.Env, _ *[]job.Member) { e.Narrative = "writer" }, false},
		{"the narrative model's provider", func(_ *job.Spec, e *jobkind.Env, _ *[]job.Member) {
			e.ProviderOf = func(m string) string {
				if m == testEnv.Model {
					return "elsewhere"
				}
				return testEnv.Provider(m)
			}
		}, false},
		{"the request's model, which writes the narrative", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) { s.Model = "gpt-4o" }, false},
		{"an answer's text", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) { (*m)[1].Text = "Claude is out." }, false},
		{"an answer's date", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) {
			(*m)[1].Ref = map[string]string{"date": "2024-05-02"}
		}, false},
		{"an answer's label", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) { (*m)[1].Label = "Spring 2024" }, false},
		{"one answer fewer", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) { *m = (*m)[:2] }, false},
		{"answers in another order", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) {
			(*m)[0], (*m)[1] = (*m)[1], (*m)[0]
		}, false},
		// Not on these.
		{"nothing", func(*job.Spec, *jobkind.Env, *[]job.Member) {}, true},
		{"a question that normalises alike", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) { s.Question = " Which  AI model is best? \n" }, true},
		{"the answers' bookkeeping", func(_ *job.Spec, _ *jobkind.Env, m *[]job.Member) {
			for i := range *m {
				s := &(*m)[i]
				s.Index, s.Model, s.Attempts, s.LLMAttempts, s.StartedAt, s.CompletedAt, s.Cached = 9, "other", 3, 4, 5, 6, true
			}
		}, true},
		{"the cache mode, callback, owner, warming and forcing", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) {
			*s = Spec(question, Params{TimePoints: threeTimePoints, ForceTimeTravel: true})
			s.Cache, s.CallbackURL, s.Owner, s.Warm = job.CacheBypass, "https://example.com/hook", "key-1", true
		}, true},
		{"the time points asked but not answered", func(s *job.Spec, _ *jobkind.Env, _ *[]job.Member) {
			*s = Spec(question, Params{TimePoints: append([]TimePoint{{Date: "2020-01-01", Label: "2020"}}, threeTimePoints...)})
		}, true},
	}
	spec, env, done := base()
	baseKey := Kind{}.ResultKey(spec, env, done)
	if baseKey == "" {
		t.Fatal("empty ResultKey: results would not be cached")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, env, done := base()
			tt.change(&spec, &env, &done)
			key := Kind{}.ResultKey(spec, env, done)
			if (key == baseKey) != tt.same {
				t.Errorf("key %s, base %s: same = %v, want %v", key, baseKey, key == baseKey, tt.same)
			}
		})
	}
	// With a narrative model configured, the request's model no longer
	// matters: the answers' texts are in the key.
	spec, env, done = base()
	env.Narrative = "writer"
	a := Kind{}.ResultKey(spec, env, done)
	spec.Model = "gpt-4o"
	if b := (Kind{}).ResultKey(spec, env, done); a != b {
		t.Errorf("the request's model changed the key with a narrative model configured: %s, %s", a, b)
	}
	// ResultKey is not a member's key.
	if mk := memberKey(t, spec, env); mk == a {
		t.Error("the result key equals a member's key")
	}
}

func TestAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Params
		want string
	}{
		{
			name: "three time points",
			p:    Params{TimePoints: threeTimePoints, Complexity: ComplexityBrief, ForceTimeTravel: true},
			want: `{"complexity":"brief","time_points":[{"index":0,"date":"2023-01-01","label":"January 2023"},
				{"index":1,"date":"2024-05-01","label":"May 2024"},{"index":2,"date":"2026-11-26","label":"today (November 26, 2026)"}]}`,
		},
		{
			name: "default complexity",
			p:    Params{TimePoints: threeTimePoints[:1]},
			want: `{"complexity":"standard","time_points":[{"index":0,"date":"2023-01-01","label":"January 2023"}]}`,
		},
		{
			name: "none",
			p:    Params{},
			want: `{"complexity":"standard","time_points":[]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := Spec("q", tt.p)
			plan, err := testKind.Plan(spec, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			ms := make([]job.Member, len(plan))
			for i, m := range plan {
				ms[i] = job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberPending}
			}
			fields, err := Kind{}.Accepted(spec, ms)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(fields)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, b, []byte(tt.want)) {
				t.Errorf("Accepted = %s\nwant       %s", b, tt.want)
			}
			// job.accepted's fixed fields are not the kind's.
			for _, fixed := range []string{"job_id", "kind", "question", "model", "deadline", "cached"} {
				if _, taken := fields[fixed]; taken {
					t.Errorf("Accepted has the fixed field %q", fixed)
				}
			}
		})
	}
}

// sameJSON reports whether a and b encode the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// t0 is when the test jobs were accepted; at is t0 plus ms, in Unix ms.
var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func at(ms int64) int64 { return t0.UnixMilli() + ms }

// finishedJob has three snapshots (completed, failed, and one that
// started and never ended), an aggregation with both parts failed, and a
// job error.
func finishedJob() *job.Job {
	spec := Spec("What are the best AI models?", Params{
		TimePoints:      []TimePoint{{"2023-01-01", "January 2023"}, {"2024-05-01", "May 2024"}, {"2026-11-26", "today"}},
		Complexity:      ComplexityDetailed,
		ForceTimeTravel: true,
	})
	spec.Model, spec.Cache = "gpt-4o", job.CacheBypass
	return &job.Job{
		ID:         "0190abcd",
		Spec:       spec,
		Noun:       Noun,
		Status:     job.StatusPartial,
		CreatedAt:  t0.In(time.FixedZone("X", 3*3600)),
		Deadline:   t0.Add(2 * time.Minute).In(time.FixedZone("Y", -7*3600)),
		FinishedAt: t0.Add(3 * time.Second).In(time.FixedZone("Z", 3600)),
		Members: []job.Member{
			{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberCompleted, Text: "GPT-3.5", Model: "gpt-4o", Attempts: 1, StartedAt: at(150), CompletedAt: at(1150)},
			{Index: 1, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}, Status: job.MemberFailed, Attempts: 3, Error: "provider answered 503", StartedAt: at(100), CompletedAt: at(2100)},
			{Index: 2, Label: "today", Ref: map[string]string{"date": "2026-11-26"}, Status: job.MemberRunning, Attempts: 1, Error: "timed out", StartedAt: at(200)},
		},
		Result: &job.Result{
			Parts: []job.Part{
				{Name: PartKeyChanges, Error: "malformed key-changes answer", MS: 300},
				{Name: PartNarrative, Error: "llm call timed out", MS: 500},
			},
			StartedAt: at(2350),
		},
		Error: "deadline passed with 1 of 3 snapshots",
	}
}

// kindView is Kind.View(j) as a View.
func kindView(t *testing.T, j *job.Job) View {
	t.Helper()
	f, err := Kind{}.View(j)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := f.(View)
	if !ok {
		t.Fatalf("View returned %T, want timetravel.View", f)
	}
	return v
}

func TestView(t *testing.T) {
	t.Parallel()
	j := finishedJob()
	v := kindView(t, j)
	if v.Complexity != ComplexityDetailed || !v.ForceTimeTravel {
		t.Errorf("Complexity, ForceTimeTravel = %q, %v", v.Complexity, v.ForceTimeTravel)
	}
	if !reflect.DeepEqual(v.Snapshots, j.Members) {
		t.Errorf("Snapshots = %+v", v.Snapshots)
	}
	if v.KeyChanges == nil || len(v.KeyChanges) != 0 {
		t.Errorf("KeyChanges = %#v, want an empty non-nil list", v.KeyChanges)
	}
	if v.Narrative != "" {
		t.Errorf("Narrative = %q", v.Narrative)
	}
}

func TestViewCompleted(t *testing.T) {
	t.Parallel()
	kc := []KeyChange{{From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024", Changes: []string{"GPT-4o"}}}
	raw, _ := json.Marshal(kc)
	tests := []struct {
		name      string
		result    *job.Result
		members   []job.Member
		wantKC    []KeyChange
		wantNarr  string
		wantError bool
	}{
		{
			name:     "both parts",
			result:   &job.Result{Parts: []job.Part{{Name: PartKeyChanges, Value: raw, MS: 5}, {Name: PartNarrative, Text: "It changed.", MS: 9}}, StartedAt: at(40)},
			wantKC:   kc,
			wantNarr: "It changed.",
		},
		{
			name:     "parts in the other order",
			result:   &job.Result{Parts: []job.Part{{Name: PartNarrative, Text: "It changed."}, {Name: PartKeyChanges, Value: raw}}},
			wantKC:   kc,
			wantNarr: "It changed.",
		},
		{
			name:   "a single snapshot's key changes",
			result: &job.Result{Parts: []job.Part{{Name: PartKeyChanges, Value: json.RawMessage(`[]`)}}},
			wantKC: []KeyChange{},
		},
		{
			name:   "null key changes",
			result: &job.Result{Parts: []job.Part{{Name: PartKeyChanges, Value: json.RawMessage(`null`)}}},
			wantKC: []KeyChange{},
		},
		{
			name:     "the narrative so far, no key changes yet",
			result:   &job.Result{Parts: []job.Part{{Name: PartNarrative, Text: "It chan"}}},
			wantKC:   []KeyChange{},
			wantNarr: "It chan",
		},
		{name: "no aggregation yet", result: nil, wantKC: []KeyChange{}},
		{name: "no members", result: nil, members: []job.Member{}, wantKC: []KeyChange{}},
		{
			name:      "key changes that do not decode",
			result:    &job.Result{Parts: []job.Part{{Name: PartKeyChanges, Value: json.RawMessage(`{"from":1}`)}}},
			wantError: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j := &job.Job{ID: "x", Spec: Spec("q", Params{}), Noun: Noun, Status: job.StatusCompleted, Result: tt.result,
				Members: members(threeTimePoints[:2], "a", "b")}
			if tt.members != nil {
				j.Members = nil
			}
			f, err := Kind{}.View(j)
			if tt.wantError {
				if err == nil {
					t.Fatalf("View = %+v, want an error", f)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := f.(View)
			if !reflect.DeepEqual(v.KeyChanges, tt.wantKC) {
				t.Errorf("KeyChanges = %#v, want %#v", v.KeyChanges, tt.wantKC)
			}
			if v.Narrative != tt.wantNarr {
				t.Errorf("Narrative = %q, want %q", v.Narrative, tt.wantNarr)
			}
			if v.Snapshots == nil || len(v.Snapshots) != len(j.Members) {
				t.Errorf("Snapshots = %#v, want the job's %d members, never null", v.Snapshots, len(j.Members))
			}
		})
	}
}

// The view's JSON keeps time travel's field names on the wire.
func TestViewJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(kindView(t, finishedJob()))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"complexity":        `"detailed"`,
		"force_time_travel": `true`,
		"key_changes":       `[]`,
		"narrative":         `""`,
	}
	for k, w := range want {
		if got, ok := m[k]; !ok || string(got) != w {
			t.Errorf("%s = %s, want %s", k, got, w)
		}
	}
	var snaps []map[string]any
	if err := json.Unmarshal(m["snapshots"], &snaps); err != nil || len(snaps) != 3 {
		t.Fatalf("snapshots = %s (%v), want 3", m["snapshots"], err)
	}
	if s := snaps[1]; s["index"] != 1.0 || s["date"] != "2024-05-01" || s["label"] != "May 2024" || s["status"] != "failed" ||
		s["error"] != "provider answered 503" || s["attempts"] != 3.0 {
		t.Errorf("snapshot 1 = %v", s)
	}
	if len(m) != len(want)+1 {
		t.Errorf("JSON has %d fields, want %d: %s", len(m), len(want)+1, b)
	}

	kc := []KeyChange{{From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024", Changes: []string{"GPT-4o"}}}
	raw, _ := json.Marshal(kc)
	b, err = json.Marshal(kindView(t, &job.Job{Spec: Spec("q", Params{}), Result: &job.Result{Parts: []job.Part{{Name: PartKeyChanges, Value: raw}, {Name: PartNarrative, Text: "It changed."}}}}))
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"complexity":"standard","force_time_travel":false,"snapshots":[],
		"key_changes":[{"from":"2023-01-01","to":"2024-05-01","from_label":"January 2023","to_label":"May 2024","changes":["GPT-4o"]}],
		"narrative":"It changed."}`
	if !sameJSON(t, b, []byte(wantJSON)) {
		t.Errorf("JSON = %s\nwant   %s", b, wantJSON)
	}
}

// registry is a registry with time travel alone.
func registry() *jobkind.Registry {
	r := jobkind.NewRegistry()
	r.Add(Kind{})
	return r
}

// The whole view of a new job, common and time-travel fields, as the
// api shows it.
func TestRegistryViewJSONOfNewJob(t *testing.T) {
	t.Parallel()
	j := &job.Job{
		ID: "0190", Status: job.StatusQueued, CreatedAt: t0, Deadline: t0.Add(time.Minute), Noun: Noun,
		Spec:    Spec("q", Params{TimePoints: threeTimePoints[:1]}),
		Members: []job.Member{{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberPending}},
	}
	j.Spec.Cache = "" // as stored by jobs before the cache mode existed
	v, err := registry().View(j)
	if err != nil {
		t.Fatal(err)
	}
	if v.FinishedAt != nil {
		t.Errorf("FinishedAt = %v, want nil", v.FinishedAt)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"job_id":            `"0190"`,
		"kind":              `"timetravel"`,
		"status":            `"queued"`,
		"question":          `"q"`,
		"complexity":        `"standard"`,
		"force_time_travel": `false`,
		"created_at":        `"2026-11-26T10:00:00Z"`,
		"deadline":          `"2026-11-26T10:01:00Z"`,
		"snapshots":         `[{"index":0,"date":"2023-01-01","label":"January 2023","status":"pending","attempts":0}]`,
		"key_changes":       `[]`,
		"narrative":         `""`,
		"cache":             `""`,
		"cached":            `false`,
		"timings":           `{}`,
		"errors":            `[]`,
	}
	for k, w := range want {
		if got, ok := m[k]; !ok || !sameJSON(t, got, []byte(w)) {
			t.Errorf("%s = %s, want %s", k, got, w)
		}
	}
	for _, absent := range []string{"model", "finished_at", "callback_url", "webhook", "params", "members", "time_points"} {
		if got, ok := m[absent]; ok {
			t.Errorf("%s present (%s), want it omitted", absent, got)
		}
	}
	if len(m) != len(want) {
		t.Errorf("JSON has %d fields, want %d: %s", len(m), len(want), b)
	}
}

// Jobs stored before kinds existed have no kind: they are time travel's.
func TestRegistryViewOfAJobWithoutKind(t *testing.T) {
	t.Parallel()
	j := finishedJob()
	j.Spec.Kind = ""
	v, err := registry().View(j)
	if err != nil {
		t.Fatal(err)
	}
	if v.Kind != Name {
		t.Errorf("Kind = %q, want %q", v.Kind, Name)
	}
	f, ok := v.Fields.(View)
	if !ok || f.Complexity != ComplexityDetailed || len(f.Snapshots) != 3 {
		t.Errorf("Fields = %#v", v.Fields)
	}
	wantErrors := []string{
		"deadline passed with 1 of 3 snapshots",
		"snapshot May 2024: provider answered 503",
		"snapshot today: timed out",
		"key changes: malformed key-changes answer",
		"narrative: llm call timed out",
	}
	if !reflect.DeepEqual(v.Errors, wantErrors) {
		t.Errorf("Errors =\n%q\nwant\n%q", v.Errors, wantErrors)
	}
	b, err := json.Marshal(v.Timings)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"queue_wait_ms":100,"snapshots_ms":2000,"snapshot_ms":[1000,2000,0],"fan_in_ms":250,"key_changes_ms":300,"narrative_ms":500,"total_ms":3000}`; !sameJSON(t, b, []byte(want)) {
		t.Errorf("timings = %s, want %s", b, want)
	}
}
