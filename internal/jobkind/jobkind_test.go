package jobkind

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// fakeKind is a kind with the given names whose view is its Fields (or
// its error).
type fakeKind struct {
	name, path string
	noun       job.Noun
	fields     any
	viewErr    error
}

func (k fakeKind) Name() string   { return k.name }
func (k fakeKind) Path() string   { return k.path }
func (k fakeKind) Noun() job.Noun { return k.noun }
func (fakeKind) Decode([]byte, time.Time) (job.Spec, error) {
	return job.Spec{}, nil
}
func (fakeKind) Models(job.Spec) []NamedModel                            { return nil }
func (fakeKind) Plan(job.Spec, Env) ([]Member, error)                    { return nil, nil }
func (fakeKind) Parts(job.Spec, Env, []job.Member) ([]Part, error)       { return nil, nil }
func (fakeKind) ResultKey(job.Spec, Env, []job.Member) string            { return "" }
func (fakeKind) Accepted(job.Spec, []job.Member) (map[string]any, error) { return nil, nil }
func (k fakeKind) View(*job.Job) (any, error)                            { return k.fields, k.viewErr }

var (
	timeTravel = fakeKind{name: "timetravel", path: "/time-travel", noun: "snapshot", fields: map[string]any{"narrative": "It changed."}}
	ensemble   = fakeKind{name: "ensemble", path: "/ensemble", noun: "answer", fields: map[string]any{"answers": []string{}}}
)

func TestRegistryAdd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		kinds []Kind
		panic string // empty: no panic
	}{
		{name: "one", kinds: []Kind{timeTravel}},
		{name: "two", kinds: []Kind{timeTravel, ensemble}},
		{name: "the same kind twice", kinds: []Kind{timeTravel, ensemble, timeTravel}, panic: `kind "timetravel" registered twice`},
		{name: "a name taken", kinds: []Kind{timeTravel, fakeKind{name: "timetravel", path: "/other", noun: "x"}}, panic: `kind "timetravel" registered twice`},
		{name: "a path taken", kinds: []Kind{ensemble, fakeKind{name: "other", path: "/ensemble", noun: "x"}}, panic: `path "/ensemble" registered twice`},
		{name: "no name", kinds: []Kind{fakeKind{path: "/x", noun: "x"}}, panic: "needs a name"},
		{name: "no path", kinds: []Kind{fakeKind{name: "x", noun: "x"}}, panic: "needs a name, a path"},
		{name: "no noun", kinds: []Kind{fakeKind{name: "x", path: "/x"}}, panic: "a noun"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := NewRegistry()
			defer func() {
				p := recover()
				switch {
				case tt.panic == "" && p != nil:
					t.Fatalf("Add panicked: %v", p)
				case tt.panic != "" && p == nil:
					t.Fatalf("Add did not panic, want %q", tt.panic)
				case tt.panic != "" && !strings.Contains(p.(string), tt.panic):
					t.Fatalf("Add panicked with %q, want %q", p, tt.panic)
				}
			}()
			for _, k := range tt.kinds {
				r.Add(k)
			}
		})
	}
}

func TestRegistryLookups(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	r.Add(timeTravel)
	r.Add(ensemble)
	tests := []struct {
		name    string
		specOf  string // the spec's Kind
		want    string // the kind Of finds; empty: an error
		byName  bool   // Kind(specOf) finds it
		errText string
	}{
		{name: "time travel", specOf: "timetravel", want: "timetravel", byName: true},
		{name: "ensemble", specOf: "ensemble", want: "ensemble", byName: true},
		{name: "a spec stored before kinds is time travel's", specOf: "", want: "timetravel"},
		{name: "unknown", specOf: "poll", errText: `unknown job kind "poll"`},
		{name: "names are exact", specOf: "TimeTravel", errText: `unknown job kind "TimeTravel"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := r.Of(job.Spec{Kind: tt.specOf})
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) || k != nil {
					t.Fatalf("Of = %v, %v; want the error %q", k, err, tt.errText)
				}
			} else if err != nil || k.Name() != tt.want {
				t.Fatalf("Of = %v, %v; want %q", k, err, tt.want)
			}
			k, ok := r.Kind(tt.specOf)
			if ok != tt.byName || (ok && k.Name() != tt.specOf) {
				t.Errorf("Kind(%q) = %v, %v", tt.specOf, k, ok)
			}
		})
	}
	var names []string
	for _, k := range r.All() {
		names = append(names, k.Name())
	}
	if want := []string{"ensemble", "timetravel"}; !reflect.DeepEqual(names, want) {
		t.Errorf("All = %v, want %v (by name)", names, want)
	}
	if got := NewRegistry().All(); got == nil || len(got) != 0 {
		t.Errorf("All of an empty registry = %#v, want an empty list", got)
	}
	// Without time travel registered, a spec without kind has none.
	only := NewRegistry()
	only.Add(ensemble)
	if k, err := only.Of(job.Spec{}); err == nil {
		t.Errorf("Of(no kind) = %v without time travel registered", k.Name())
	}
}

func TestRegistryView(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	r.Add(timeTravel)
	r.Add(ensemble)
	r.Add(fakeKind{name: "broken", path: "/broken", noun: "x", viewErr: errors.New("bad part")})
	tests := []struct {
		name     string
		kind     string
		wantKind string
		want     map[string]string // the kind's fields in the JSON
		errText  string
	}{
		{name: "time travel", kind: "timetravel", wantKind: "timetravel", want: map[string]string{"narrative": `"It changed."`}},
		{name: "no kind is time travel", kind: "", wantKind: "timetravel", want: map[string]string{"narrative": `"It changed."`}},
		{name: "ensemble", kind: "ensemble", wantKind: "ensemble", want: map[string]string{"answers": `[]`}},
		{name: "unknown kind", kind: "poll", errText: `unknown job kind "poll"`},
		{name: "the kind's view fails", kind: "broken", errText: "view of job 0190: bad part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j := &job.Job{ID: "0190", Spec: job.Spec{Kind: tt.kind, Question: "q"}, Status: job.StatusQueued}
			v, err := r.View(j)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("View error = %v, want %q", err, tt.errText)
				}
				// The common view comes with the error, without the
				// kind's fields.
				if v.ID != "0190" || v.Question != "q" || v.Fields != nil {
					t.Errorf("view with the error = %+v", v)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Kind != tt.wantKind {
				t.Errorf("Kind = %q, want %q", v.Kind, tt.wantKind)
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if got := string(m["kind"]); got != `"`+tt.wantKind+`"` {
				t.Errorf("kind = %s, want %q", got, tt.wantKind)
			}
			if got := string(m["job_id"]); got != `"0190"` {
				t.Errorf("job_id = %s", got)
			}
			for k, w := range tt.want {
				if got := string(m[k]); got != w {
					t.Errorf("%s = %s, want %s: the kind's fields sit beside the common ones", k, got, w)
				}
			}
		})
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	provider := func(m string) string { return "p:" + m }
	tests := []struct {
		name            string
		env             Env
		spec            job.Spec
		member, narr    string
		providerOfModel string
	}{
		{name: "defaults", env: Env{Model: "m"}, member: "m", narr: "m", providerOfModel: ""},
		{name: "the request's model", env: Env{Model: "m", ProviderOf: provider}, spec: job.Spec{Model: "r"}, member: "r", narr: "r", providerOfModel: "p:m"},
		{name: "a narrative model", env: Env{Model: "m", Narrative: "n"}, spec: job.Spec{Model: "r"}, member: "r", narr: "n"},
	}
	for _, tt := range tests {
		if got := tt.env.MemberModel(tt.spec); got != tt.member {
			t.Errorf("%s: MemberModel = %q, want %q", tt.name, got, tt.member)
		}
		if got := tt.env.NarrativeModel(tt.spec); got != tt.narr {
			t.Errorf("%s: NarrativeModel = %q, want %q", tt.name, got, tt.narr)
		}
		if got := tt.env.Provider("m"); got != tt.providerOfModel {
			t.Errorf("%s: Provider = %q, want %q", tt.name, got, tt.providerOfModel)
		}
	}
}

func TestParams(t *testing.T) {
	t.Parallel()
	type params struct {
		Dates []string `json:"dates"`
		N     int      `json:"n,omitempty"`
	}
	raw := EncodeParams(params{Dates: []string{"2023-01-01"}})
	if string(raw) != `{"dates":["2023-01-01"]}` {
		t.Errorf("EncodeParams = %s", raw)
	}
	var p params
	if err := DecodeParams(job.Spec{Kind: "k", Params: raw}, &p); err != nil || !reflect.DeepEqual(p, params{Dates: []string{"2023-01-01"}}) {
		t.Errorf("DecodeParams = %+v, %v", p, err)
	}
	p = params{N: 7}
	if err := DecodeParams(job.Spec{}, &p); err != nil || p.N != 7 {
		t.Errorf("DecodeParams of no params = %+v, %v; want v untouched", p, err)
	}
	err := DecodeParams(job.Spec{Kind: "k", Params: json.RawMessage(`{"n":"x"}`)}, &p)
	if err == nil || !strings.Contains(err.Error(), "decode k params") {
		t.Errorf("DecodeParams of bad params: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("EncodeParams of a value that does not encode did not panic")
		}
	}()
	EncodeParams(func() {})
}

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	type body struct {
		Question string `json:"question"`
	}
	tests := []struct {
		body    string
		want    string
		errText string
	}{
		{body: `{"question":"q"}`, want: "q"},
		{body: ` {"question":"q"} `, want: "q"},
		{body: `{"question":"q","other":1}`, errText: `unknown field "other"`},
		{body: `{"question":"q"} {}`, errText: "data after the JSON object"},
		{body: `{"question":"q"} x`, errText: "data after the JSON object"},
		{body: `{"question":7}`, errText: "cannot unmarshal"},
		{body: `{"question":`, errText: "unexpected EOF"},
		{body: ``, errText: "EOF"},
	}
	for _, tt := range tests {
		var b body
		err := DecodeStrict([]byte(tt.body), &b)
		if tt.errText != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("DecodeStrict(%s) error = %v, want %q", tt.body, err, tt.errText)
			}
			continue
		}
		if err != nil || b.Question != tt.want {
			t.Errorf("DecodeStrict(%s) = %+v, %v", tt.body, b, err)
		}
	}
}
