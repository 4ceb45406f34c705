package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api/openapi"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
)

// Where the other sides of the contract are, from this package's folder.
const (
	apiDoc    = "../../../docs/api.md"
	clientDir = "../../../client"
)

// forKind returns the events of got that concern a job of a kind whose
// events are mine, among those of every kind (all): those of other kinds
// are left out, those of no kind kept (so that they are reported).
func forKind(got eventShapes, mine, all eventShapes) eventShapes {
	out := eventShapes{}
	for name, s := range got {
		if _, other := all[name]; other {
			if _, ok := mine[name]; !ok {
				continue
			}
		}
		out[name] = s
	}
	return out
}

// --- The client ---

// clientPayloads maps each event the client names to the type its
// documentation says the event's data decodes into.
var clientPayloads = map[string]any{
	client.EventJobAccepted:         client.JobAcceptedData{},
	client.EventSnapshotStarted:     client.SnapshotStartedData{},
	client.EventSnapshotDelta:       client.SnapshotDeltaData{},
	client.EventSnapshotCompleted:   client.SnapshotCompletedData{},
	client.EventSnapshotFailed:      client.SnapshotFailedData{},
	client.EventAggregateStarted:    client.AggregateStartedData{},
	client.EventKeyChangesCompleted: client.KeyChangesData{},
	client.EventKeyChangesFailed:    client.FailedData{},
	client.EventNarrativeDelta:      client.TextDeltaData{},
	client.EventNarrativeCompleted:  client.TextData{},
	client.EventNarrativeFailed:     client.FailedData{},
	client.EventJobCompleted:        client.JobCompletedData{},
	client.EventWebhookDelivered:    client.WebhookDeliveredData{},
	client.EventWebhookFailed:       client.WebhookFailedData{},
	client.EventAnswerStarted:       client.AnswerStartedData{},
	client.EventAnswerDelta:         client.SnapshotDeltaData{},
	client.EventAnswerCompleted:     client.AnswerCompletedData{},
	client.EventAnswerFailed:        client.AnswerFailedData{},
	client.EventSynthesisDelta:      client.TextDeltaData{},
	client.EventSynthesisCompleted:  client.TextData{},
	client.EventSynthesisFailed:     client.FailedData{},
	client.EventAnalysisCompleted:   client.AnalysisData{},
	client.EventAnalysisFailed:      client.FailedData{},
}

// clientConstants returns the values of the client's exported constants
// named Event*, read from its source: every event name the client has.
func clientConstants() (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(clientDir, "*.go"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, id := range vs.Names {
				if !strings.HasPrefix(id.Name, "Event") || !id.IsExported() || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out[v] = id.Name
				}
			}
			return true
		})
	}
	if len(out) == 0 {
		return nil, errors.New("no Event* constants found in the client's source")
	}
	return out, nil
}

// clientEvents returns the shapes of payloads (event name → a value of
// its client type) as the client encodes them for a job of kind: a type
// with its own encoding (JobAcceptedData writes the fields of the job's
// kind only) has the members it writes when every field is set.
func clientEvents(payloads map[string]any, kind string) (eventShapes, error) {
	out := eventShapes{}
	for name, v := range payloads {
		t := reflect.TypeOf(v)
		s := goShape(t)
		if t.Implements(reflect.TypeFor[json.Marshaler]()) {
			p := reflect.New(t)
			fill(p.Elem(), new(int))
			if f := p.Elem().FieldByName("Kind"); f.IsValid() {
				f.SetString(kind)
			}
			b, err := json.Marshal(p.Interface())
			if err != nil {
				return nil, fmt.Errorf("client type of %s: %w", name, err)
			}
			var written map[string]json.RawMessage
			if err := json.Unmarshal(b, &written); err != nil {
				return nil, fmt.Errorf("client type of %s: %w", name, err)
			}
			keep := map[string]bool{}
			for k := range written {
				keep[k] = true
			}
			s = s.only(keep)
		}
		out[name] = s
	}
	return out, nil
}

// fill sets every field reachable from v to a value that is not empty.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(time.Unix(int64(*n), 0)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.String:
		v.SetString("s" + strconv.Itoa(*n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	}
}

// --- docs/api.md ---

// docsEvents parses the event tables of the events section of
// docs/api.md (md), "| event | data |" rows whose data starts with the
// payload's members in code (`{"index","text"}`; `...` stands for members
// stated elsewhere). A table after a paragraph that names a kind's route
// (`POST /api<path>`) is that kind's, the others every kind's. It returns,
// by kind name, the events of a job of each kind: every kind's and its
// own, job.accepted (in both) with the members of both.
func docsEvents(md string, kinds []jobkind.Kind) (map[string]eventShapes, error) {
	start := strings.Index(md, "\n## GET /api/jobs/{id}/events")
	if start < 0 {
		return nil, errors.New("docs: no section ## GET /api/jobs/{id}/events")
	}
	section := md[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	common := eventShapes{}
	own := map[string]eventShapes{}
	var (
		para   []string // the last paragraph
		ended  bool     // para is followed by a blank line
		target eventShapes
		row    int
	)
	for i, line := range strings.Split(section, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			row = 0
			switch {
			case line == "":
				ended = true
			case ended:
				para, ended = []string{line}, false
			default:
				para = append(para, line)
			}
			continue
		}
		if row++; row == 1 {
			var err error
			if target, err = tableOf(strings.Join(para, " "), kinds, common, own); err != nil {
				return nil, err
			}
			continue // the header
		}
		if row == 2 {
			continue // | --- | --- |
		}
		name, data, err := docsRow(line)
		if err != nil {
			return nil, fmt.Errorf("docs: events section line %d: %w", i+1, err)
		}
		merge(target, name, data)
	}
	out := map[string]eventShapes{}
	for _, k := range kinds {
		evs := eventShapes{}
		for name, s := range common {
			merge(evs, name, s)
		}
		for name, s := range own[k.Name()] {
			merge(evs, name, s)
		}
		out[k.Name()] = evs
	}
	return out, nil
}

// tableOf returns the events a table after the paragraph para fills.
func tableOf(para string, kinds []jobkind.Kind, common eventShapes, own map[string]eventShapes) (eventShapes, error) {
	var of jobkind.Kind
	for _, k := range kinds {
		if strings.Contains(para, "`POST /api"+k.Path()+"`") {
			if of != nil {
				return nil, fmt.Errorf("docs: the paragraph before a table names two kinds' routes: %q", para)
			}
			of = k
		}
	}
	if of == nil {
		return common, nil
	}
	if own[of.Name()] == nil {
		own[of.Name()] = eventShapes{}
	}
	return own[of.Name()], nil
}

// merge adds the event name of shape s to evs; an event there already
// gets the members of both.
func merge(evs eventShapes, name string, s *shape) {
	prev, ok := evs[name]
	if !ok {
		c := *s
		c.Fields = map[string]*field{}
		for k, f := range s.Fields {
			c.Fields[k] = f
		}
		evs[name] = &c
		return
	}
	for k, f := range s.Fields {
		prev.Fields[k] = f
	}
}

// docsRow parses one row of an event table.
func docsRow(line string) (string, *shape, error) {
	cells := strings.Split(strings.Trim(line, "|"), "|")
	if len(cells) < 2 {
		return "", nil, fmt.Errorf("%q is not an | event | data | row", line)
	}
	name := strings.Trim(strings.TrimSpace(cells[0]), "`")
	data := strings.TrimSpace(strings.Join(cells[1:], "|"))
	if !strings.HasPrefix(data, "`{") {
		return "", nil, fmt.Errorf("event %s: its data does not start with its members in code (`{...}`)", name)
	}
	end := strings.Index(data[1:], "`")
	if end < 0 {
		return "", nil, fmt.Errorf("event %s: unterminated code", name)
	}
	p := &docParser{s: data[1 : end+1]}
	s, err := p.value()
	if err == nil {
		if p.skip(); p.i != len(p.s) {
			err = fmt.Errorf("text after the object at %d", p.i)
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("event %s: %s: %w", name, p.s, err)
	}
	return name, s, nil
}

// docParser reads the members docs/api.md gives a payload: JSON with
// members whose values are left out ({"index","text"}), or given when
// they are objects or lists ("time_points":[{"index","date"}]), and
// "..." for members stated elsewhere.
type docParser struct {
	s string
	i int
}

func (p *docParser) skip() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *docParser) value() (*shape, error) {
	p.skip()
	switch {
	case strings.HasPrefix(p.s[p.i:], "..."):
		p.i += 3
		return &shape{}, nil
	case p.i >= len(p.s):
		return nil, errors.New("unexpected end")
	case p.s[p.i] == '{':
		return p.object()
	case p.s[p.i] == '[':
		p.i++
		p.skip()
		s := &shape{Type: "array", Elem: &shape{}}
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			return s, nil
		}
		e, err := p.value()
		if err != nil {
			return nil, err
		}
		if p.skip(); p.i >= len(p.s) || p.s[p.i] != ']' {
			return nil, fmt.Errorf("want ] at %d", p.i)
		}
		p.i++
		s.Elem = e
		return s, nil
	case p.s[p.i] == '"':
		_, err := p.str()
		return &shape{}, err
	}
	return nil, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
}

func (p *docParser) object() (*shape, error) {
	p.i++ // {
	s := &shape{Type: "object", Fields: map[string]*field{}}
	for {
		p.skip()
		switch {
		case p.i >= len(p.s):
			return nil, errors.New("unterminated object")
		case p.s[p.i] == '}':
			p.i++
			return s, nil
		case strings.HasPrefix(p.s[p.i:], "..."):
			p.i += 3
		default:
			name, err := p.str()
			if err != nil {
				return nil, err
			}
			f := &field{shape: &shape{}}
			if p.skip(); p.i < len(p.s) && p.s[p.i] == ':' {
				p.i++
				if f.shape, err = p.value(); err != nil {
					return nil, err
				}
			}
			if _, dup := s.Fields[name]; dup {
				return nil, fmt.Errorf("member %q twice", name)
			}
			s.Fields[name] = f
		}
		p.skip()
		switch {
		case p.i < len(p.s) && p.s[p.i] == ',':
			p.i++
		case p.i < len(p.s) && p.s[p.i] == '}':
		default:
			return nil, fmt.Errorf("want , or } at %d", p.i)
		}
	}
}

func (p *docParser) str() (string, error) {
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", fmt.Errorf("want a quoted name at %d", p.i)
	}
	end := strings.IndexByte(p.s[p.i+1:], '"')
	if end < 0 {
		return "", errors.New("unterminated name")
	}
	name := p.s[p.i+1 : p.i+1+end]
	p.i += end + 2
	return name, nil
}

// --- The OpenAPI document ---

// openapiDocument returns the OpenAPI document, decoded.
func openapiDocument() (map[string]any, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// openapiEvents returns the shapes of the events the document doc names
// in x-sse-events, for a job of kind: of a schema that is oneOf one
// schema per kind, the one whose member kind is const kind.
func openapiEvents(doc map[string]any, kind string) (eventShapes, error) {
	evs, ok := dig(doc, "paths", "/api/jobs/{id}/events", "get", "responses", "200", "content", "text/event-stream",
		openapi.EventsExtension).(map[string]any)
	if !ok {
		return nil, fmt.Errorf("openapi: no %s on the events operation", openapi.EventsExtension)
	}
	out := eventShapes{}
	var errs []error
	for name, v := range evs {
		m, _ := v.(map[string]any)
		s, err := schemaShape(doc, m, kind)
		if err != nil {
			errs = append(errs, fmt.Errorf("openapi: %s: %w", name, err))
			continue
		}
		out[name] = s
	}
	return out, errors.Join(errs...)
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// resolve follows s's $ref in doc.
func resolve(doc, s map[string]any) (map[string]any, error) {
	for range 10 {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s, nil
		}
		loc, ok := strings.CutPrefix(ref, "#/")
		if !ok {
			return nil, fmt.Errorf("$ref %q is not into the document", ref)
		}
		next, ok := dig(doc, strings.Split(loc, "/")...).(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q names nothing", ref)
		}
		s = next
	}
	return nil, errors.New("$ref chain too long")
}

// schemaShape is the shape of the schema s of doc for a job of kind.
func schemaShape(doc, s map[string]any, kind string) (*shape, error) {
	s, err := resolve(doc, s)
	if err != nil {
		return nil, err
	}
	if branches, ok := s["oneOf"].([]any); ok {
		for _, b := range branches {
			bm, _ := b.(map[string]any)
			if bm, err = resolve(doc, bm); err != nil {
				return nil, err
			}
			k, _ := dig(bm, "properties", "kind").(map[string]any)
			if k, err = resolve(doc, k); err != nil {
				return nil, err
			}
			if k["const"] == kind {
				return schemaShape(doc, bm, kind)
			}
		}
		return nil, fmt.Errorf("none of its oneOf is for kind %s (properties.kind.const)", kind)
	}
	typ, _ := s["type"].(string)
	if typ == "" {
		if c, ok := s["const"]; ok {
			typ = jsonType(c)
		} else if e, ok := s["enum"].([]any); ok && len(e) > 0 {
			typ = jsonType(e[0])
		}
	}
	switch typ {
	case "object":
		if s["additionalProperties"] != false {
			return nil, errors.New("an object schema without additionalProperties: false allows members it does not name")
		}
		props, _ := s["properties"].(map[string]any)
		required := map[string]bool{}
		req, _ := s["required"].([]any)
		for _, r := range req {
			name, _ := r.(string)
			if _, ok := props[name]; !ok {
				return nil, fmt.Errorf("required member %q is not a property", name)
			}
			required[name] = true
		}
		out := &shape{Type: "object", Fields: map[string]*field{}}
		for name, p := range props {
			pm, _ := p.(map[string]any)
			ps, err := schemaShape(doc, pm, kind)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out.Fields[name] = &field{shape: ps, Optional: !required[name]}
		}
		return out, nil
	case "array":
		items, _ := s["items"].(map[string]any)
		e, err := schemaShape(doc, items, kind)
		if err != nil {
			return nil, fmt.Errorf("items: %w", err)
		}
		return &shape{Type: "array", Elem: e}, nil
	}
	return &shape{Type: typ}, nil
}
