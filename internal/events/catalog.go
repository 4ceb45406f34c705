package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// The wire contract. Catalog lists every event a job of a kind may have on
// its stream, each with the Go type of its payload: a struct whose fields'
// json tags are the payload's members (a member tagged omitempty may be
// absent; the others are always there). The store writes the payloads
// with the types below (its Lua scripts build those of member events,
// aggregate.started, holder.detached and the webhook outcome in the same
// shapes); the client, docs/api.md and the OpenAPI document are tested
// against the catalog (internal/tooling/contract).

// Payloads of the events that every kind shares in shape; job.accepted
// (AcceptedData), aggregate.started (AggregateStartedData), job.completed
// (CompletedData) and holder.detached (HolderData) are in events.go.

// MemberIdentity is the identity every member event but <noun>.delta
// starts with (job.Member.RefData): the member's index and label; the
// fields of its kind's Ref (Contract.Ref) sit beside them.
type MemberIdentity struct {
	Index int    `json:"index"`
	Label string `json:"label"`
}

// MemberStartedData is what <noun>.started adds to the member's identity:
// the attempt (0, with Cached, for an answer served from the member cache
// when the job was created).
type MemberStartedData struct {
	Attempt int  `json:"attempt"`
	Cached  bool `json:"cached,omitempty"`
}

// MemberDeltaData is the payload of <noun>.delta: text to append to the
// member's answer.
type MemberDeltaData struct {
	Index int    `json:"index"`
	Text  string `json:"text"`
}

// MemberCompletedData is what <noun>.completed adds to the member's
// identity: the model that answered, the whole text, how long the answer
// took, and Cached when it came from the member cache.
type MemberCompletedData struct {
	Model      string `json:"model,omitempty"`
	Text       string `json:"text"`
	DurationMS int64  `json:"duration_ms"`
	Cached     bool   `json:"cached,omitempty"`
}

// <noun>.failed adds ErrorData to the member's identity; <part>.failed is
// ErrorData alone.

// PartDeltaData is the payload of a streamed part's <part>.delta: text to
// append.
type PartDeltaData struct {
	Text string `json:"text"`
}

// PartTextData is the payload of a streamed part's <part>.completed: the
// whole text, and Cached when it came from the result cache.
type PartTextData struct {
	Text   string `json:"text"`
	Cached bool   `json:"cached,omitempty"`
}

// PartValueData returns the payload of a structured part's
// <part>.completed: {<part>: value}, with cached:true when the value came
// from the result cache.
func PartValueData(part string, value json.RawMessage, cached bool) map[string]any {
	d := map[string]any{part: value}
	if cached {
		d["cached"] = true
	}
	return d
}

// WebhookDeliveredData is the payload of webhook.delivered.
type WebhookDeliveredData struct {
	// WebhookID is the webhook-id header of every attempt: msg_<job id>.
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
}

// WebhookFailedData is the payload of webhook.failed: as
// WebhookDeliveredData, with why the last attempt failed.
type WebhookFailedData struct {
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error"`
}

// MemberPayload returns the payload of an event of member m: its identity
// (job.Member.RefData) and the members of data (a value that encodes to a
// JSON object, e.g. a MemberCompletedData).
func MemberPayload(m job.Member, data any) ([]byte, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("member event data is not a JSON object: %w", err)
	}
	out := make(map[string]any, len(fields)+len(m.Ref)+2)
	for k, v := range m.RefData() {
		out[k] = v
	}
	for k, v := range fields {
		out[k] = v
	}
	return json.Marshal(out)
}

// Contract is what a kind declares of its events beside its noun: the Go
// types of the payload members that differ between kinds.
type Contract struct {
	// Ref is the type of the member's Ref fields (job.Member.Ref) as its
	// events carry them beside index and label: a struct of string fields
	// (time travel: {date}). Nil: none.
	Ref reflect.Type
	// Accepted is the type of the fields the kind adds to job.accepted
	// (jobkind.Kind.Accepted): a struct. Nil: none.
	Accepted reflect.Type
	// Parts are the parts of the kind's aggregation (jobkind.Kind.Parts),
	// in order.
	Parts []PartContract
}

// PartContract is one part of a kind's aggregation.
type PartContract struct {
	Name string
	// Stream: the part's text is streamed (<part>.delta PartDeltaData,
	// <part>.completed PartTextData); otherwise it is a structured value
	// (<part>.completed {<part>: Value}).
	Stream bool
	// Value is the type of a structured part's value.
	Value reflect.Type
}

// Declarer is a job kind (a jobkind.Kind) that declares the contract of
// its events. Every kind the service registers is one.
type Declarer interface {
	Name() string
	Noun() job.Noun
	EventContract() Contract
}

// Spec is one event of the catalog.
type Spec struct {
	// Name is the event's name (the SSE "event:" field).
	Name string
	// Payload is a struct type whose fields' json tags are the members of
	// the event's data: a member tagged omitempty may be absent, the
	// others are always present.
	Payload reflect.Type
	// Internal marks an event that is on the job's stream but never sent
	// to clients as it is (holder.detached: the api ends one caller's
	// stream there with job.completed).
	Internal bool
}

// Catalog returns every event of jobs of kind k, in the order a job's
// stream has them: job.accepted, the member events, aggregate.started,
// each part's events, job.completed, the webhook's outcome, then the
// internal holder.detached. An error says why k's contract is not one:
// k declares none (it is not a Declarer), a name is not an event name's
// part, or two fields of one payload share a JSON name.
func Catalog(k interface {
	Name() string
	Noun() job.Noun
}) ([]Spec, error) {
	d, ok := k.(Declarer)
	if !ok {
		return nil, fmt.Errorf("kind %s declares no event contract (events.Declarer)", k.Name())
	}
	c := d.EventContract()
	noun := d.Noun()
	if !namePattern.MatchString(string(noun)) {
		return nil, fmt.Errorf("kind %s: noun %q is not lower case words joined by _", k.Name(), noun)
	}
	if err := checkRef(c.Ref); err != nil {
		return nil, fmt.Errorf("kind %s: %w", k.Name(), err)
	}
	var (
		out  []Spec
		errs []error
	)
	add := func(name string, internal bool, parts ...reflect.Type) {
		t, err := compose(parts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("kind %s: event %s: %w", k.Name(), name, err))
			return
		}
		out = append(out, Spec{Name: name, Payload: t, Internal: internal})
	}
	identity := []reflect.Type{reflect.TypeFor[MemberIdentity]()}
	if c.Ref != nil {
		identity = append(identity, c.Ref)
	}
	accepted := []reflect.Type{reflect.TypeFor[AcceptedData]()}
	if c.Accepted != nil {
		accepted = append(accepted, c.Accepted)
	}
	add(JobAccepted, false, accepted...)
	add(MemberEvent(noun, VerbStarted), false, append(identity, reflect.TypeFor[MemberStartedData]())...)
	add(MemberEvent(noun, VerbDelta), false, reflect.TypeFor[MemberDeltaData]())
	add(MemberEvent(noun, VerbCompleted), false, append(identity, reflect.TypeFor[MemberCompletedData]())...)
	add(MemberEvent(noun, VerbFailed), false, append(identity, reflect.TypeFor[ErrorData]())...)
	add(AggregateStarted, false, reflect.TypeFor[AggregateStartedData]())
	seen := map[string]bool{string(noun): true}
	for _, p := range c.Parts {
		switch {
		case !namePattern.MatchString(p.Name) || reserved[p.Name]:
			errs = append(errs, fmt.Errorf("kind %s: part name %q is not lower case words joined by _, or is taken", k.Name(), p.Name))
			continue
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("kind %s: part name %q is its noun's or another part's", k.Name(), p.Name))
			continue
		case p.Stream == (p.Value != nil):
			errs = append(errs, fmt.Errorf("kind %s: part %s must be streamed or have a value type, not both", k.Name(), p.Name))
			continue
		}
		seen[p.Name] = true
		if p.Stream {
			add(PartEvent(p.Name, VerbDelta), false, reflect.TypeFor[PartDeltaData]())
			add(PartEvent(p.Name, VerbCompleted), false, reflect.TypeFor[PartTextData]())
		} else {
			add(PartEvent(p.Name, VerbCompleted), false, valueData(p.Name, p.Value))
		}
		add(PartEvent(p.Name, VerbFailed), false, reflect.TypeFor[ErrorData]())
	}
	add(JobCompleted, false, reflect.TypeFor[CompletedData]())
	add(WebhookDelivered, false, reflect.TypeFor[WebhookDeliveredData]())
	add(WebhookFailed, false, reflect.TypeFor[WebhookFailedData]())
	add(HolderDetached, true, reflect.TypeFor[HolderData]())
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// namePattern is the form of nouns and part names: they become event and
// stage names.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// reserved are the first words of the events every kind has: no part may
// take them.
var reserved = map[string]bool{"job": true, "aggregate": true, "webhook": true, "holder": true}

// checkRef checks a kind's Ref type: a struct of string fields (Ref is a
// map of strings) whose names are not a member's own (job.ReservedField).
func checkRef(t reflect.Type) error {
	if t == nil {
		return nil
	}
	fields, err := jsonFields(t)
	if err != nil {
		return fmt.Errorf("ref: %w", err)
	}
	for _, f := range fields {
		if f.Type.Kind() != reflect.String {
			return fmt.Errorf("ref field %s is %s, not a string", f.name, f.Type)
		}
		if job.ReservedField(f.name) {
			return fmt.Errorf("ref field %s takes the name of a member's own field", f.name)
		}
	}
	return nil
}

// valueData is the payload type of a structured part's <part>.completed
// (PartValueData): {<part>: value, cached}.
func valueData(part string, value reflect.Type) reflect.Type {
	return reflect.StructOf([]reflect.StructField{
		{Name: "Value", Type: value, Tag: reflect.StructTag(`json:"` + part + `"`)},
		{Name: "Cached", Type: reflect.TypeFor[bool](), Tag: `json:"cached,omitempty"`},
	})
}

// jsonField is a field as encoding/json sees it.
type jsonField struct {
	reflect.StructField
	name      string
	omitEmpty bool
}

// jsonFields returns the fields encoding/json writes for the struct type t
// (the fields of embedded structs in place), in order.
func jsonFields(t reflect.Type) ([]jsonField, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%s is not a struct", t)
	}
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			inner, err := jsonFields(f.Type)
			if err != nil {
				return nil, err
			}
			out = append(out, inner...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{StructField: f, name: name, omitEmpty: strings.Contains(","+opts+",", ",omitempty,")})
	}
	return out, nil
}

// compose returns a struct type with the JSON fields of each of parts (in
// order), as the payload made of them encodes. Two fields of one JSON
// name are an error: the payload could not hold both.
func compose(parts ...reflect.Type) (reflect.Type, error) {
	if len(parts) == 1 {
		return parts[0], nil
	}
	var fields []reflect.StructField
	from := map[string]reflect.Type{}
	for _, p := range parts {
		fs, err := jsonFields(p)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if prev, taken := from[f.name]; taken {
				return nil, fmt.Errorf("field %s of %s is %s's already", f.name, p, prev)
			}
			from[f.name] = p
			tag := f.name
			if f.omitEmpty {
				tag += ",omitempty"
			}
			fields = append(fields, reflect.StructField{
				Name: "F" + strconv.Itoa(len(fields)), Type: f.Type, Tag: reflect.StructTag(`json:"` + tag + `"`),
			})
		}
	}
	return reflect.StructOf(fields), nil
}
