package contract

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// catalogs returns the registered kinds and each one's catalog.
func catalogs(t *testing.T) ([]jobkind.Kind, map[string][]events.Spec) {
	t.Helper()
	all := kinds.Registry().All()
	out := map[string][]events.Spec{}
	for _, k := range all {
		specs, err := events.Catalog(k)
		if err != nil {
			t.Fatalf("the catalog of kind %s: %v", k.Name(), err)
		}
		out[k.Name()] = specs
	}
	return all, out
}

// every returns the events of every kind, internal ones only with
// internal.
func every(cats map[string][]events.Spec, internal bool) eventShapes {
	out := eventShapes{}
	for _, specs := range cats {
		for name, s := range catalogShapes(specs, internal) {
			out[name] = s
		}
	}
	return out
}

// report fails t with the problems found, if any.
func report(t *testing.T, what string, problems []string) {
	t.Helper()
	if len(problems) > 0 {
		t.Errorf("%s differs from the catalog (package events, Catalog; fix the side that is wrong):\n  %s", what, strings.Join(problems, "\n  "))
	}
}

// checkStream checks events read from a job's stream against a kind's
// catalog (internal events included), and counts in seen each event
// and each member observed (by "event" and "event.member").
func checkStream(cat eventShapes, evs []events.Event, seen map[string]int) []string {
	var out []string
	for _, e := range evs {
		s, ok := cat[e.Type]
		if !ok {
			out = append(out, fmt.Sprintf("event %s is not in the catalog", e.Type))
			continue
		}
		var v any
		if err := json.Unmarshal(e.Data, &v); err != nil {
			out = append(out, fmt.Sprintf("%s: data is not JSON: %v", e.Type, err))
			continue
		}
		out = append(out, checkValue(e.Type, s, v)...)
		seen[e.Type]++
		if o, ok := v.(map[string]any); ok {
			for k := range o {
				seen[e.Type+"."+k]++
			}
		}
	}
	return out
}

// TestContractStore runs jobs of every registered kind through the store
// (its Lua scripts on a real Redis) along every path that writes events,
// and checks every event of their streams against the catalog: its name
// is the catalog's, its data has the members of the catalog's type, of
// its JSON types, each always-present one present. Every event and every
// member of the catalog must show at least once.
func TestContractStore(t *testing.T) {
	all, cats := catalogs(t)
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	sim := simulator(t)
	seen := map[string]int{}     // events and "event.member"s observed, over every kind
	members := map[string]bool{} // the catalogs' "event.member"s
	for _, k := range all {
		t.Run(k.Name(), func(t *testing.T) {
			body, ok := requests[k.Name()]
			if !ok {
				t.Fatalf("no request of kind %s: add one to requests", k.Name())
			}
			spec, err := k.Decode([]byte(body), time.Now())
			if err != nil {
				t.Fatalf("the request of kind %s: %v", k.Name(), err)
			}
			env := jobkind.Env{Model: "sim-model", Extraction: "sim-extract"}
			plan, err := k.Plan(spec, env)
			if err != nil || len(plan) < 3 {
				t.Fatalf("the request of kind %s plans %d members (%v); the runs need 3", k.Name(), len(plan), err)
			}
			r := &runner{t: t, ctx: t.Context(), st: st, llm: sim, kind: k, env: env, spec: spec, plan: plan}
			cat := catalogShapes(cats[k.Name()], true)
			kindSeen := map[string]int{}
			problems := map[string]int{}
			for _, id := range r.runs() {
				evs, err := st.Events(t.Context(), id, "")
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range checkStream(cat, evs, kindSeen) {
					problems[p]++
				}
			}
			var list []string
			for _, p := range sortedKeys(problems) {
				list = append(list, fmt.Sprintf("%s (%d times)", p, problems[p]))
			}
			report(t, "what the store writes for kind "+k.Name(), list)
			for name := range cat {
				if kindSeen[name] == 0 {
					t.Errorf("kind %s: event %s of the catalog never showed: no run covers it, or the store never writes it", k.Name(), name)
				}
			}
			for name, n := range kindSeen {
				seen[name] += n
			}
			for name, s := range cat {
				for m := range s.Fields {
					members[name+"."+m] = true
				}
			}
		})
	}
	// A member may be absent from one kind's events (an ensemble names
	// no model in job.accepted), not from every kind's.
	var never []string
	for name := range members {
		if seen[name] == 0 {
			never = append(never, name)
		}
	}
	sort.Strings(never)
	if len(never) > 0 {
		t.Errorf("members of the catalog that no event of any run had: %s", strings.Join(never, ", "))
	}
}

// checkClient compares the client's event constants (value → name) and
// payload types (payloads) with the catalogs.
func checkClient(cats map[string][]events.Spec, constants map[string]string, payloads map[string]any) []string {
	var out []string
	allEvents := every(cats, false)
	for _, name := range sortedKeys(allEvents) {
		if constants[name] == "" {
			out = append(out, fmt.Sprintf("client: no Event* constant names event %s", name))
		}
	}
	for _, v := range sortedKeys(constants) {
		if _, ok := allEvents[v]; !ok {
			out = append(out, fmt.Sprintf("client: constant %s (%q) is not an event of the catalog", constants[v], v))
		}
	}
	for _, kind := range sortedKeys(cats) {
		got, err := clientEvents(payloads, kind)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		want := catalogShapes(cats[kind], false)
		out = append(out, compareEvents("client ("+kind+")", want, forKind(got, want, allEvents), compareOpts{types: true, optional: true})...)
	}
	return out
}

// TestContractClient checks that the client names every event of the
// catalog (and no other), and that the type each event's data decodes
// into has the members of the catalog's, of the same JSON types, with the
// same omission of empty values.
func TestContractClient(t *testing.T) {
	_, cats := catalogs(t)
	constants, err := clientConstants()
	if err != nil {
		t.Fatal(err)
	}
	report(t, "the client (client/types.go)", checkClient(cats, constants, clientPayloads))
}

// checkDocs compares the event tables of docs/api.md (md) with the
// catalogs: event names, and member names at every depth the tables give.
func checkDocs(all []jobkind.Kind, cats map[string][]events.Spec, md string) []string {
	docs, err := docsEvents(md, all)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, k := range all {
		out = append(out, compareEvents("docs/api.md ("+k.Name()+")", catalogShapes(cats[k.Name()], false), docs[k.Name()], compareOpts{})...)
	}
	return out
}

// TestContractDocs checks docs/api.md's event tables against the catalog.
func TestContractDocs(t *testing.T) {
	all, cats := catalogs(t)
	md, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	report(t, "docs/api.md", checkDocs(all, cats, string(md)))
}

// checkOpenAPI compares the event schemas of the OpenAPI document (doc,
// decoded) with the catalogs: names, members, JSON types and required
// members.
func checkOpenAPI(cats map[string][]events.Spec, doc map[string]any) []string {
	var out []string
	allEvents := every(cats, false)
	for _, kind := range sortedKeys(cats) {
		got, err := openapiEvents(doc, kind)
		if err != nil {
			out = append(out, err.Error())
		}
		want := catalogShapes(cats[kind], false)
		out = append(out, compareEvents("openapi ("+kind+")", want, forKind(got, want, allEvents), compareOpts{types: true, optional: true})...)
	}
	return out
}

// TestContractOpenAPI checks the OpenAPI document's event schemas (named
// by x-sse-events) against the catalog.
func TestContractOpenAPI(t *testing.T) {
	_, cats := catalogs(t)
	doc, err := openapiDocument()
	if err != nil {
		t.Fatal(err)
	}
	report(t, "the OpenAPI document (internal/api/openapi/openapi.yaml)", checkOpenAPI(cats, doc))
}

// TestContractDrift feeds each check a deliberately altered copy of its
// side of the contract (an event renamed, a member missing, a member
// added, a member of another type or presence) and checks that it
// reports the difference, and only for the altered copy.
func TestContractDrift(t *testing.T) {
	all, cats := catalogs(t)
	constants, err := clientConstants()
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	// The store's side: events of a time-travel job's stream.
	stream := func(typ, data string) func() []string {
		return func() []string {
			return checkStream(catalogShapes(cats["timetravel"], true), []events.Event{{Type: typ, Data: json.RawMessage(data)}}, map[string]int{})
		}
	}
	// The client's side, with payloads[event] altered (a nil type
	// removes the event, a rename moves it).
	client := func(event string, with any, rename string) func() []string {
		return func() []string {
			p, c := map[string]any{}, map[string]string{}
			for k, v := range clientPayloads {
				p[k] = v
			}
			for k, v := range constants {
				c[k] = v
			}
			if with != nil {
				p[event] = with
			}
			if rename != "" {
				p[rename], c[rename] = p[event], c[event]
				delete(p, event)
				delete(c, event)
			}
			return checkClient(cats, c, p)
		}
	}
	type startedDate struct {
		Index   int    `json:"index"`
		Label   string `json:"label"`
		Attempt int    `json:"attempt"`
		Cached  bool   `json:"cached,omitempty"`
	}
	type startedExtra struct {
		Index   int    `json:"index"`
		Date    string `json:"date"`
		Label   string `json:"label"`
		Attempt int    `json:"attempt"`
		Cached  bool   `json:"cached,omitempty"`
		Extra   string `json:"extra"`
	}
	type startedType struct {
		Index   string `json:"index"`
		Date    string `json:"date"`
		Label   string `json:"label"`
		Attempt int    `json:"attempt"`
		Cached  bool   `json:"cached,omitempty"`
	}
	type startedOptional struct {
		Index   int    `json:"index"`
		Date    string `json:"date"`
		Label   string `json:"label"`
		Attempt int    `json:"attempt,omitempty"`
		Cached  bool   `json:"cached,omitempty"`
	}
	// docs/api.md, with the row of event edited (old → new).
	docs := func(event, old, new string) func() []string {
		return func() []string {
			lines := strings.Split(string(md), "\n")
			edited := false
			for i, l := range lines {
				if strings.HasPrefix(l, "| `"+event+"` |") && strings.Contains(l, old) {
					lines[i], edited = strings.Replace(l, old, new, 1), true
				}
			}
			if !edited {
				return []string{"the test's edit of docs/api.md found no row of " + event}
			}
			return checkDocs(all, cats, strings.Join(lines, "\n"))
		}
	}
	// The OpenAPI document, altered by edit.
	spec := func(edit func(doc map[string]any)) func() []string {
		return func() []string {
			doc, err := openapiDocument()
			if err != nil {
				return []string{err.Error()}
			}
			edit(doc)
			return checkOpenAPI(cats, doc)
		}
	}
	schema := func(doc map[string]any, name string) map[string]any {
		s, _ := dig(doc, "components", "schemas", name).(map[string]any)
		if s == nil {
			s = map[string]any{}
		}
		return s
	}
	props := func(doc map[string]any, name string) map[string]any {
		p, _ := schema(doc, name)["properties"].(map[string]any)
		if p == nil {
			p = map[string]any{}
		}
		return p
	}
	sse := func(doc map[string]any) map[string]any {
		m, _ := dig(doc, "paths", "/api/jobs/{id}/events", "get", "responses", "200", "content", "text/event-stream", "x-sse-events").(map[string]any)
		return m
	}

	tests := []struct {
		name string
		// check runs the check on the altered copy; base on the real one.
		check, base func() []string
		want        string
	}{
		{"store: renamed event", stream("snapshot.begun", `{"index":0,"text":"t"}`), stream("snapshot.delta", `{"index":0,"text":"t"}`),
			"event snapshot.begun is not in the catalog"},
		{"store: missing member", stream("snapshot.failed", `{"index":0,"label":"x","error":"e"}`),
			stream("snapshot.failed", `{"index":0,"label":"x","date":"2023-01-01","error":"e"}`), `snapshot.failed: member "date" is missing`},
		{"store: extra member", stream("narrative.delta", `{"text":"t","index":0}`), stream("narrative.delta", `{"text":"t"}`),
			`narrative.delta: member "index" is not in the catalog`},
		{"store: other type", stream("aggregate.started", `{"attempt":"2"}`), stream("aggregate.started", `{"attempt":2}`),
			"aggregate.started.attempt is string, the catalog's is integer"},
		{"client: renamed event", client("snapshot.started", nil, "snapshot.begun"), client("", nil, ""),
			"client (timetravel): event snapshot.started is missing"},
		{"client: renamed event, the new name", client("snapshot.started", nil, "snapshot.begun"), client("", nil, ""),
			`client: constant EventSnapshotStarted ("snapshot.begun") is not an event of the catalog`},
		{"client: missing member", client("snapshot.started", startedDate{}, ""), client("", nil, ""),
			`client (timetravel): snapshot.started: member "date" is missing`},
		{"client: extra member", client("snapshot.started", startedExtra{}, ""), client("", nil, ""),
			`client (timetravel): snapshot.started: member "extra" is not in the catalog`},
		{"client: other type", client("snapshot.started", startedType{}, ""), client("", nil, ""),
			"client (timetravel): snapshot.started.index is string, the catalog's is integer"},
		{"client: other presence", client("snapshot.started", startedOptional{}, ""), client("", nil, ""),
			`client (timetravel): snapshot.started: member "attempt" is optional, in the catalog always present`},
		{"docs: renamed event", docs("snapshot.started", "`snapshot.started`", "`snapshot.begun`"), docs("snapshot.started", "", ""),
			"docs/api.md (timetravel): event snapshot.started is missing"},
		{"docs: missing member", docs("answer.failed", `"label",`, ""), docs("answer.failed", "", ""),
			`docs/api.md (ensemble): answer.failed: member "label" is missing`},
		{"docs: extra member", docs("snapshot.delta", `"index",`, `"index","extra",`), docs("snapshot.delta", "", ""),
			`docs/api.md (timetravel): snapshot.delta: member "extra" is not in the catalog`},
		{"docs: missing nested member", docs("key_changes.completed", `"from_label",`, ""), docs("key_changes.completed", "", ""),
			`docs/api.md (timetravel): key_changes.completed.key_changes[]: member "from_label" is missing`},
		{"openapi: renamed event", spec(func(doc map[string]any) {
			m := sse(doc)
			m["snapshot.begun"] = m["snapshot.started"]
			delete(m, "snapshot.started")
		}), spec(func(map[string]any) {}), "openapi (timetravel): event snapshot.started is missing"},
		{"openapi: missing member", spec(func(doc map[string]any) {
			delete(props(doc, "SnapshotFailedData"), "label")
			schema(doc, "SnapshotFailedData")["required"] = []any{"index", "date", "error"}
		}), spec(func(map[string]any) {}), `openapi (timetravel): snapshot.failed: member "label" is missing`},
		{"openapi: extra member", spec(func(doc map[string]any) {
			props(doc, "NarrativeDeltaData")["extra"] = map[string]any{"type": "string"}
		}), spec(func(map[string]any) {}), `openapi (timetravel): narrative.delta: member "extra" is not in the catalog`},
		{"openapi: other type", spec(func(doc map[string]any) {
			props(doc, "AggregateStartedData")["attempt"] = map[string]any{"type": "string"}
		}), spec(func(map[string]any) {}), "openapi (ensemble): aggregate.started.attempt is string, the catalog's is integer"},
		{"openapi: other presence", spec(func(doc map[string]any) {
			schema(doc, "NarrativeCompletedData")["required"] = []any{}
		}), spec(func(map[string]any) {}), `openapi (timetravel): narrative.completed: member "text" is optional, in the catalog always present`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.check()
			if !containsReport(got, tt.want) {
				t.Errorf("the altered copy was not reported as %q; the reports were:\n  %s", tt.want, strings.Join(got, "\n  "))
			}
			if containsReport(tt.base(), tt.want) {
				t.Errorf("the unaltered side is reported as %q too: the check does not tell them apart", tt.want)
			}
			if testing.Verbose() {
				t.Logf("reported: %s", tt.want)
			}
		})
	}
}

func containsReport(reports []string, want string) bool {
	for _, r := range reports {
		if strings.Contains(r, want) {
			return true
		}
	}
	return false
}
