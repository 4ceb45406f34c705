// Package jobkind is the seam between the service and its job kinds. A
// kind declares its request (decoding, validation, the identities its
// answers are cached and deduplicated by), its plan (the member calls that
// fan out), its aggregation (the parts computed over the members'
// answers) and the fields it adds to the job's events and view. Kinds are
// added to a Registry in one place per process (package kinds); the store,
// the events and SSE, cancel, the deadline, retries, the caches, dedup,
// Idempotency-Key, webhooks, metrics, monitoring and crash recovery work
// for every kind from these declarations alone.
package jobkind

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

// Kind is one kind of job. Its methods are pure: no I/O, safe for
// concurrent use.
type Kind interface {
	// Name identifies the kind in job specs and views ("timetravel").
	Name() string
	// Path is the route, under /api, that submits jobs of the kind
	// ("/time-travel").
	Path() string
	// Noun is what the kind calls its members; their events are
	// <noun>.started, <noun>.delta, <noun>.completed, <noun>.failed.
	Noun() job.Noun
	// Decode validates a request body (a JSON object, already checked to
	// be well-formed UTF-8) and returns the Spec it asks for, with Kind,
	// the common fields and Params set; its error is a *job.FieldError
	// naming the first problem. now is the request's time.
	Decode(body []byte, now time.Time) (job.Spec, error)
	// Models lists the models spec asks for by name (checked against the
	// server's allow-list), with the request field that names each.
	Models(spec job.Spec) []NamedModel
	// Plan returns the member calls of a job of spec, in order.
	Plan(spec job.Spec, env Env) ([]Member, error)
	// Parts returns the parts of the aggregation over done, the members
	// that completed (in order; at least one).
	Parts(spec job.Spec, env Env, done []job.Member) ([]Part, error)
	// ResultKey is the identity of the aggregation of spec over done in
	// the result cache: equal keys mean equal results. Empty: not cached.
	ResultKey(spec job.Spec, env Env, done []job.Member) string
	// Accepted returns the fields the kind adds to job.accepted (a JSON
	// object's fields), e.g. the time points.
	Accepted(spec job.Spec, members []job.Member) (map[string]any, error)
	// View returns the kind's fields of the job's view (a value that
	// encodes to a JSON object), e.g. the snapshots and narrative.
	View(j *job.Job) (any, error)
}

// NamedModel is a model a request names and the field that names it.
type NamedModel struct {
	Field string
	Model string
}

// Env is what a kind's plan may depend on besides the request: the
// configured models and where each is served.
type Env struct {
	// Model answers the members of requests that name no model.
	Model string
	// Extraction makes structured aggregation parts (JSON answers).
	Extraction string
	// Narrative writes streamed aggregation parts; empty: the members'
	// model.
	Narrative string
	// ProviderOf names the provider that serves a model (cache keys
	// include it); nil names none.
	ProviderOf func(model string) string
}

// Provider is ProviderOf(model), or "" when unset.
func (e Env) Provider(model string) string {
	if e.ProviderOf == nil {
		return ""
	}
	return e.ProviderOf(model)
}

// MemberModel is the model that answers the members of spec.
func (e Env) MemberModel(spec job.Spec) string {
	if spec.Model != "" {
		return spec.Model
	}
	return e.Model
}

// NarrativeModel is the model that writes streamed parts for spec.
func (e Env) NarrativeModel(spec job.Spec) string {
	if e.Narrative != "" {
		return e.Narrative
	}
	return e.MemberModel(spec)
}

// Member is one member call of a job's plan.
type Member struct {
	// Label and Ref name the member (job.Member).
	Label string
	Ref   map[string]string
	// Request is the call; its Model is the model asked.
	Request llm.Request
	// CacheKey is the member's identity in the member cache: equal keys
	// mean interchangeable answers, whichever job asks. Empty: not cached.
	CacheKey string
	// Volatile says the answer may change soon (e.g. it is about today):
	// it is cached for the short TTL (CACHE_TODAY_TTL), and so is any
	// result made from it.
	Volatile bool
}

// Part is one part of a job's aggregation.
type Part struct {
	// Name names the part; its events are <name>.delta (streamed parts),
	// <name>.completed and <name>.failed.
	Name string
	// Stream says the answer is text streamed to clients as it is
	// written (<name>.completed {text}); otherwise it is a structured
	// value (<name>.completed {<name>: value}) made by Parse.
	Stream bool
	// Request is the call.
	Request llm.Request
	// Parse turns a structured part's answer into its value, or says why
	// it is not acceptable (the call is then retried once).
	Parse func(text string) (any, error)
	// Fixed, when set, is the value of a structured part that needs no
	// call (e.g. key changes of a single snapshot).
	Fixed any
}

// Registry holds the kinds a process serves. Build it once, at start,
// then only read it.
type Registry struct {
	kinds map[string]Kind
	paths map[string]Kind
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{kinds: map[string]Kind{}, paths: map[string]Kind{}}
}

// Add registers k. It panics when k's name or path is taken, or its name
// is empty: registration is a programming step, at start.
func (r *Registry) Add(k Kind) {
	name, path := k.Name(), k.Path()
	if name == "" || path == "" || k.Noun() == "" {
		panic("jobkind: a kind needs a name, a path and a noun")
	}
	if _, dup := r.kinds[name]; dup {
		panic(fmt.Sprintf("jobkind: kind %q registered twice", name))
	}
	if _, dup := r.paths[path]; dup {
		panic(fmt.Sprintf("jobkind: path %q registered twice", path))
	}
	r.kinds[name], r.paths[path] = k, k
}

// Kind returns the kind named name.
func (r *Registry) Kind(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Of returns the kind of spec; a spec without a kind (stored before kinds
// existed) is time travel's.
func (r *Registry) Of(spec job.Spec) (Kind, error) {
	name := spec.Kind
	if name == "" {
		name = "timetravel"
	}
	k, ok := r.kinds[name]
	if !ok {
		return nil, fmt.Errorf("unknown job kind %q", name)
	}
	return k, nil
}

// All returns the kinds, by name.
func (r *Registry) All() []Kind {
	out := make([]Kind, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name() < out[b].Name() })
	return out
}

// View returns j's client-facing form: the common fields and its kind's.
func (r *Registry) View(j *job.Job) (job.View, error) {
	v := j.View()
	k, err := r.Of(j.Spec)
	if err != nil {
		return v, err
	}
	v.Kind = k.Name()
	f, err := k.View(j)
	if err != nil {
		return v, fmt.Errorf("view of job %s: %w", j.ID, err)
	}
	v.Fields = f
	return v, nil
}

// EncodeParams encodes a kind's params for job.Spec.Params.
func EncodeParams(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("jobkind: params do not encode: %v", err))
	}
	return b
}

// DecodeParams decodes spec's params into v.
func DecodeParams(spec job.Spec, v any) error {
	if len(spec.Params) == 0 {
		return nil
	}
	if err := json.Unmarshal(spec.Params, v); err != nil {
		return fmt.Errorf("decode %s params: %w", spec.Kind, err)
	}
	return nil
}

// DecodeStrict decodes a request body into v as every kind's Decode
// should: unknown fields and data after the object are refused. Its
// errors are encoding/json's (the api names the field they concern).
func DecodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("request body has data after the JSON object")
	}
	return nil
}
