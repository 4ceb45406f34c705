package contract

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
)

// shape is the form of a JSON value as one side of the contract states
// it: its JSON type and, for an object, its members (for an array, its
// elements' shape). An empty Type is any value (or one the side does not
// state: docs/api.md names members, not types).
type shape struct {
	Type string // object, array, string, integer, number, boolean, or ""
	// Fields are an object's members; nil means any members (a map).
	Fields map[string]*field
	Elem   *shape
}

// field is an object's member: its shape, and whether it may be absent.
type field struct {
	*shape
	Optional bool
}

// eventShapes maps event names to the shapes of their data.
type eventShapes map[string]*shape

// catalogShapes returns the shapes of the events of a kind's catalog;
// internal events only with internal.
func catalogShapes(specs []events.Spec, internal bool) eventShapes {
	out := eventShapes{}
	for _, s := range specs {
		if s.Internal && !internal {
			continue
		}
		out[s.Name] = goShape(s.Payload)
	}
	return out
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	timeType       = reflect.TypeFor[time.Time]()
)

// goShape is the shape encoding/json gives values of t.
func goShape(t reflect.Type) *shape {
	switch t {
	case rawMessageType:
		return &shape{}
	case timeType:
		return &shape{Type: "string"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return goShape(t.Elem())
	case reflect.Struct:
		s := &shape{Type: "object", Fields: map[string]*field{}}
		addGoFields(s, t)
		return s
	case reflect.Map:
		return &shape{Type: "object"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return &shape{Type: "string"}
		}
		return &shape{Type: "array", Elem: goShape(t.Elem())}
	case reflect.String:
		return &shape{Type: "string"}
	case reflect.Bool:
		return &shape{Type: "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &shape{Type: "integer"}
	case reflect.Float32, reflect.Float64:
		return &shape{Type: "number"}
	}
	return &shape{}
}

// addGoFields adds the members encoding/json writes for struct type t
// (embedded structs' in place) to s.
func addGoFields(s *shape, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			addGoFields(s, f.Type)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.Fields[name] = &field{shape: goShape(f.Type), Optional: slices.Contains(strings.Split(opts, ","), "omitempty")}
	}
}

// only returns s with only the members named in keep.
func (s *shape) only(keep map[string]bool) *shape {
	c := *s
	c.Fields = map[string]*field{}
	for k, f := range s.Fields {
		if keep[k] {
			c.Fields[k] = f
		}
	}
	return &c
}

// compareOpts say what a comparison checks beside the members' names.
type compareOpts struct {
	// types: the JSON types; optional: which members may be absent.
	types, optional bool
}

// compareEvents reports how source's events (got) differ from the
// catalog's (want): events missing or not in the catalog, and members
// that differ (diffShape).
func compareEvents(source string, want, got eventShapes, o compareOpts) []string {
	var out []string
	for _, name := range sortedKeys(want) {
		g, ok := got[name]
		if !ok {
			out = append(out, fmt.Sprintf("%s: event %s is missing", source, name))
			continue
		}
		out = append(out, diffShape(source+": "+name, want[name], g, o)...)
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			out = append(out, fmt.Sprintf("%s: event %s is not in the catalog", source, name))
		}
	}
	return out
}

// diffShape reports how got differs from want at path.
func diffShape(path string, want, got *shape, o compareOpts) []string {
	if want == nil || got == nil || want.Type == "" || got.Type == "" {
		return nil
	}
	if want.Type != got.Type {
		// docs/api.md states no scalar types, but which members are
		// objects and lists.
		if o.types || (structured(want) && structured(got)) {
			return []string{fmt.Sprintf("%s is %s, the catalog's is %s", path, got.Type, want.Type)}
		}
		return nil
	}
	var out []string
	switch want.Type {
	case "array":
		out = append(out, diffShape(path+"[]", want.Elem, got.Elem, o)...)
	case "object":
		if want.Fields == nil || got.Fields == nil {
			return nil
		}
		for _, k := range sortedKeys(want.Fields) {
			g, ok := got.Fields[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s: member %q is missing", path, k))
				continue
			}
			w := want.Fields[k]
			if o.optional && w.Optional != g.Optional {
				out = append(out, fmt.Sprintf("%s: member %q is %s, in the catalog %s", path, k, presence(g.Optional), presence(w.Optional)))
			}
			out = append(out, diffShape(path+"."+k, w.shape, g.shape, o)...)
		}
		for _, k := range sortedKeys(got.Fields) {
			if _, ok := want.Fields[k]; !ok {
				out = append(out, fmt.Sprintf("%s: member %q is not in the catalog", path, k))
			}
		}
	}
	return out
}

func structured(s *shape) bool { return s.Type == "object" || s.Type == "array" }

func presence(optional bool) string {
	if optional {
		return "optional"
	}
	return "always present"
}

// checkValue reports how the JSON value v (as encoding/json decodes into
// any) differs from s at path: members s lacks, members s always has
// that v lacks, values of another JSON type.
func checkValue(path string, s *shape, v any) []string {
	if s == nil || s.Type == "" {
		return nil
	}
	bad := func() []string {
		return []string{fmt.Sprintf("%s is %s, the catalog's is %s", path, jsonType(v), s.Type)}
	}
	switch s.Type {
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return bad()
		}
		if s.Fields == nil {
			return nil
		}
		var out []string
		for _, k := range sortedKeys(s.Fields) {
			x, ok := o[k]
			switch {
			case ok:
				out = append(out, checkValue(path+"."+k, s.Fields[k].shape, x)...)
			case !s.Fields[k].Optional:
				out = append(out, fmt.Sprintf("%s: member %q is missing", path, k))
			}
		}
		for _, k := range sortedKeys(o) {
			if _, ok := s.Fields[k]; !ok {
				out = append(out, fmt.Sprintf("%s: member %q is not in the catalog", path, k))
			}
		}
		return out
	case "array":
		a, ok := v.([]any)
		if !ok {
			return bad()
		}
		var out []string
		for i, x := range a {
			out = append(out, checkValue(fmt.Sprintf("%s[%d]", path, i), s.Elem, x)...)
		}
		return out
	}
	if t := jsonType(v); t != s.Type && (t != "integer" || s.Type != "number") {
		return bad()
	}
	return nil
}

// jsonType is the JSON type of v; a number without a fraction is an
// integer.
func jsonType(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
