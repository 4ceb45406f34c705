package events_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// declarer is a kind with the given noun and contract.
type declarer struct {
	noun     job.Noun
	contract events.Contract
}

func (declarer) Name() string                     { return "toy" }
func (d declarer) Noun() job.Noun                 { return d.noun }
func (d declarer) EventContract() events.Contract { return d.contract }

// undeclared is a kind that declares no contract.
type undeclared struct{}

func (undeclared) Name() string   { return "undeclared" }
func (undeclared) Noun() job.Noun { return "thing" }

// fieldsOf returns the JSON names of t's fields, and those tagged
// omitempty.
func fieldsOf(t reflect.Type) (names, omitted []string) {
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
		if opts == "omitempty" {
			omitted = append(omitted, name)
		}
	}
	return names, omitted
}

type toyRef struct {
	Shelf string `json:"shelf"`
}

type toyAccepted struct {
	Colours []string `json:"colours"`
	Size    int      `json:"size,omitempty"`
}

type toyValue struct {
	Score float64 `json:"score"`
}

var toy = declarer{noun: "guess", contract: events.Contract{
	Ref:      reflect.TypeFor[toyRef](),
	Accepted: reflect.TypeFor[toyAccepted](),
	Parts: []events.PartContract{
		{Name: "verdict", Value: reflect.TypeFor[toyValue]()},
		{Name: "story", Stream: true},
	},
}}

func TestCatalog(t *testing.T) {
	t.Parallel()
	specs, err := events.Catalog(toy)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]events.Spec{}
	for _, s := range specs {
		names = append(names, s.Name)
		byName[s.Name] = s
	}
	want := []string{"job.accepted", "guess.started", "guess.delta", "guess.completed", "guess.failed", "aggregate.started",
		"verdict.completed", "verdict.failed", "story.delta", "story.completed", "story.failed",
		"job.completed", "webhook.delivered", "webhook.failed", "holder.detached"}
	if !slices.Equal(names, want) {
		t.Fatalf("catalog %v, want %v", names, want)
	}
	for _, c := range []struct {
		event            string
		fields, optional []string
	}{
		{"job.accepted", []string{"job_id", "kind", "question", "model", "deadline", "expected_wait_ms", "cached", "colours", "size"}, []string{"model", "expected_wait_ms", "cached", "size"}},
		{"guess.started", []string{"index", "label", "shelf", "attempt", "cached"}, []string{"cached"}},
		{"guess.delta", []string{"index", "text"}, nil},
		{"guess.completed", []string{"index", "label", "shelf", "model", "text", "duration_ms", "cached"}, []string{"model", "cached"}},
		{"guess.failed", []string{"index", "label", "shelf", "error"}, nil},
		{"verdict.completed", []string{"verdict", "cached"}, []string{"cached"}},
		{"story.delta", []string{"text"}, nil},
		{"story.completed", []string{"text", "cached"}, []string{"cached"}},
		{"story.failed", []string{"error"}, nil},
		{"webhook.delivered", []string{"webhook_id", "attempts", "status_code"}, []string{"status_code"}},
		{"webhook.failed", []string{"webhook_id", "attempts", "status_code", "error"}, []string{"status_code"}},
	} {
		fields, optional := fieldsOf(byName[c.event].Payload)
		if !slices.Equal(fields, c.fields) || !slices.Equal(optional, c.optional) {
			t.Errorf("%s: fields %v (optional %v), want %v (optional %v)", c.event, fields, optional, c.fields, c.optional)
		}
	}
	if !byName["holder.detached"].Internal || byName["job.completed"].Internal {
		t.Error("only holder.detached is internal")
	}
	// The composed types encode as the payloads they describe.
	v := reflect.New(byName["verdict.completed"].Payload).Elem()
	v.Field(0).Set(reflect.ValueOf(toyValue{Score: 0.5}))
	b, err := json.Marshal(v.Interface())
	if err != nil || string(b) != `{"verdict":{"score":0.5}}` {
		t.Errorf("verdict.completed encodes as %s (%v)", b, err)
	}
}

func TestCatalogRefusesBadContracts(t *testing.T) {
	t.Parallel()
	type reservedRef struct {
		Status string `json:"status"`
	}
	type intRef struct {
		Shelf int `json:"shelf"`
	}
	type clash struct {
		Kind string `json:"kind"`
	}
	type attemptRef struct {
		Attempt string `json:"attempt"`
	}
	for _, c := range []struct {
		name string
		kind interface {
			Name() string
			Noun() job.Noun
		}
		want string
	}{
		{"no contract", undeclared{}, "declares no event contract"},
		{"bad noun", declarer{noun: "Guess"}, "noun"},
		{"reserved ref field", declarer{noun: "g", contract: events.Contract{Ref: reflect.TypeFor[reservedRef]()}}, "member's own field"},
		{"ref field not a string", declarer{noun: "g", contract: events.Contract{Ref: reflect.TypeFor[intRef]()}}, "not a string"},
		{"ref field of a verb's", declarer{noun: "g", contract: events.Contract{Ref: reflect.TypeFor[attemptRef]()}}, "field attempt"},
		{"accepted field of the common ones", declarer{noun: "g", contract: events.Contract{Accepted: reflect.TypeFor[clash]()}}, "field kind"},
		{"part named like a fixed event", declarer{noun: "g", contract: events.Contract{Parts: []events.PartContract{{Name: "job", Stream: true}}}}, "part name"},
		{"part named like the noun", declarer{noun: "g", contract: events.Contract{Parts: []events.PartContract{{Name: "g", Stream: true}}}}, "part name"},
		{"part twice", declarer{noun: "g", contract: events.Contract{Parts: []events.PartContract{{Name: "p", Stream: true}, {Name: "p", Stream: true}}}}, "part name"},
		{"part neither streamed nor valued", declarer{noun: "g", contract: events.Contract{Parts: []events.PartContract{{Name: "p"}}}}, "streamed or have a value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := events.Catalog(c.kind)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestPayloads(t *testing.T) {
	t.Parallel()
	m := job.Member{Index: 2, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}}
	for _, c := range []struct {
		name string
		got  func() ([]byte, error)
		want string
	}{
		{"member completed", func() ([]byte, error) {
			return events.MemberPayload(m, events.MemberCompletedData{Model: "m", Text: "t", DurationMS: 3, Cached: true})
		}, `{"cached":true,"date":"2024-05-01","duration_ms":3,"index":2,"label":"May 2024","model":"m","text":"t"}`},
		{"member started", func() ([]byte, error) { return events.MemberPayload(m, events.MemberStartedData{Attempt: 1}) },
			`{"attempt":1,"date":"2024-05-01","index":2,"label":"May 2024"}`},
		{"member failed", func() ([]byte, error) {
			return events.MemberPayload(job.Member{Label: "x"}, events.ErrorData{Error: "e"})
		},
			`{"error":"e","index":0,"label":"x"}`},
		{"not an object", func() ([]byte, error) { return events.MemberPayload(m, 3) }, ""},
		{"structured part", func() ([]byte, error) {
			return json.Marshal(events.PartValueData("verdict", json.RawMessage(`{"score":1}`), true))
		}, `{"cached":true,"verdict":{"score":1}}`},
		{"structured part, computed", func() ([]byte, error) {
			return json.Marshal(events.PartValueData("verdict", json.RawMessage(`[]`), false))
		}, `{"verdict":[]}`},
	} {
		b, err := c.got()
		if c.want == "" {
			if err == nil {
				t.Errorf("%s: no error", c.name)
			}
			continue
		}
		if err != nil || string(b) != c.want {
			t.Errorf("%s: %s (%v), want %s", c.name, b, err, c.want)
		}
	}
}
