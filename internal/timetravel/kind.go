package timetravel

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

// Name is the kind's name in specs and views.
const Name = "timetravel"

// Noun is what time travel calls its members.
const Noun job.Noun = "snapshot"

// Its aggregation's parts.
const (
	PartKeyChanges = "key_changes"
	PartNarrative  = "narrative"
)

// Event names of time travel's members and parts, made by package events'
// rules (events.Catalog lists every event of the kind, with its payload).
var (
	EventSnapshotStarted     = events.MemberEvent(Noun, events.VerbStarted)
	EventSnapshotDelta       = events.MemberEvent(Noun, events.VerbDelta)
	EventSnapshotCompleted   = events.MemberEvent(Noun, events.VerbCompleted)
	EventSnapshotFailed      = events.MemberEvent(Noun, events.VerbFailed)
	EventKeyChangesCompleted = events.PartEvent(PartKeyChanges, events.VerbCompleted)
	EventKeyChangesFailed    = events.PartEvent(PartKeyChanges, events.VerbFailed)
	EventNarrativeDelta      = events.PartEvent(PartNarrative, events.VerbDelta)
	EventNarrativeCompleted  = events.PartEvent(PartNarrative, events.VerbCompleted)
	EventNarrativeFailed     = events.PartEvent(PartNarrative, events.VerbFailed)
)

// Complexity sets how long and detailed the answers are.
type Complexity string

// Complexities.
const (
	ComplexityBrief    Complexity = "brief"
	ComplexityStandard Complexity = "standard"
	ComplexityDetailed Complexity = "detailed"
)

// TimePoint is one date at which the question is answered.
type TimePoint struct {
	// Date is the day, formatted YYYY-MM-DD.
	Date string `json:"date"`
	// Label is how the date is shown, e.g. "March 2023".
	Label string `json:"label"`
}

// Params is time travel's part of a job's spec. Time points are in
// chronological order.
type Params struct {
	TimePoints []TimePoint `json:"time_points"`
	Complexity Complexity  `json:"complexity"`
	// ForceTimeTravel asked to compute every answer afresh (the spec's
	// cache mode is then bypass); shown in the view.
	ForceTimeTravel bool `json:"force_time_travel,omitempty"`
}

// KeyChange lists what changed between two consecutive snapshots.
type KeyChange struct {
	From      string   `json:"from"`
	To        string   `json:"to"`
	FromLabel string   `json:"from_label"`
	ToLabel   string   `json:"to_label"`
	Changes   []string `json:"changes"`
}

// Spec returns the spec of a time-travel request for question with p (for
// callers that make jobs without a request body: tests, warming).
func Spec(question string, p Params) job.Spec {
	if p.Complexity == "" {
		p.Complexity = ComplexityStandard
	}
	return job.Spec{Kind: Name, Question: question, Cache: job.CacheUse, Params: jobkind.EncodeParams(p)}
}

// ParamsOf returns spec's time-travel params (zero when it has none).
func ParamsOf(spec job.Spec) Params {
	var p Params
	_ = jobkind.DecodeParams(spec, &p)
	if p.Complexity == "" {
		p.Complexity = ComplexityStandard
	}
	return p
}

// DateOf is the date of a time-travel member (its Ref "date").
func DateOf(m job.Member) string { return m.Ref["date"] }

// Kind is the time-travel kind: how an LLM would have answered a question
// at several dates (one member per time point), the key changes between
// neighbouring dates in one batched call and a narrative of the evolution.
type Kind struct {
	// Now tells today's date, before which answers no longer change
	// (answers as of today are volatile); nil: the clock.
	Now func() time.Time
}

var _ jobkind.Kind = Kind{}

// Name implements jobkind.Kind.
func (Kind) Name() string { return Name }

// Path implements jobkind.Kind.
func (Kind) Path() string { return "/time-travel" }

// Noun implements jobkind.Kind.
func (Kind) Noun() job.Noun { return Noun }

// Decode implements jobkind.Kind: the body is a Submission.
func (Kind) Decode(body []byte, now time.Time) (job.Spec, error) {
	var sub Submission
	if err := jobkind.DecodeStrict(body, &sub); err != nil {
		return job.Spec{}, err
	}
	spec, ferr := sub.Validate(now)
	if ferr != nil {
		return job.Spec{}, ferr
	}
	return spec, nil
}

// Models implements jobkind.Kind.
func (Kind) Models(spec job.Spec) []jobkind.NamedModel {
	if spec.Model == "" {
		return nil
	}
	return []jobkind.NamedModel{{Field: "model", Model: spec.Model}}
}

// Plan implements jobkind.Kind: one snapshot per time point.
func (k Kind) Plan(spec job.Spec, env jobkind.Env) ([]jobkind.Member, error) {
	p := ParamsOf(spec)
	model := env.MemberModel(spec)
	provider := env.Provider(model)
	today := k.today()
	out := make([]jobkind.Member, len(p.TimePoints))
	for i, tp := range p.TimePoints {
		pr := Snapshot(spec.Question, tp, p.Complexity)
		out[i] = jobkind.Member{
			Label:   tp.Label,
			Ref:     map[string]string{"date": tp.Date},
			Request: llm.Request{Model: model, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, Temperature: 0.3},
			CacheKey: cache.Identity(struct {
				K, V, Q, M, P, D, L, C string
			}{Name, PromptVersion, cache.NormalizeQuestion(spec.Question), model, provider, tp.Date, tp.Label, string(p.Complexity)}),
			Volatile: tp.Date >= today,
		}
	}
	return out, nil
}

func (k Kind) today() string {
	now := time.Now
	if k.Now != nil {
		now = k.Now
	}
	return now().UTC().Format(DateLayout)
}

// Parts implements jobkind.Kind: the key changes (one batched JSON call;
// none for a single snapshot) and the narrative (streamed), side by side.
func (Kind) Parts(spec job.Spec, env jobkind.Env, done []job.Member) ([]jobkind.Part, error) {
	p := ParamsOf(spec)
	kc := jobkind.Part{Name: PartKeyChanges}
	if len(done) < 2 {
		// One snapshot has no transition: nothing to ask.
		kc.Fixed = []KeyChange{}
	} else {
		pr := KeyChanges(spec.Question, done)
		kc.Request = llm.Request{Model: env.Extraction, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, JSON: true}
		kc.Parse = func(text string) (any, error) { return ParseKeyChanges(text, done) }
	}
	pr := Narrative(spec.Question, done, p.Complexity)
	narr := jobkind.Part{Name: PartNarrative, Stream: true, Request: llm.Request{
		Model: env.NarrativeModel(spec), System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, Temperature: 0.3,
	}}
	return []jobkind.Part{kc, narr}, nil
}

// ResultKey implements jobkind.Kind: the result depends on the question,
// the complexity, the two aggregation models at their providers and each
// answer's date, label and text.
func (Kind) ResultKey(spec job.Spec, env jobkind.Env, done []job.Member) string {
	p := ParamsOf(spec)
	type snap struct{ D, L, T string }
	snaps := make([]snap, len(done))
	for i, s := range done {
		snaps[i] = snap{DateOf(s), s.Label, s.Text}
	}
	narr := env.NarrativeModel(spec)
	return cache.Identity(struct {
		K, V, Q, C, E, EP, N, NP string
		S                        []snap
	}{Name, PromptVersion, cache.NormalizeQuestion(spec.Question), string(p.Complexity),
		env.Extraction, env.Provider(env.Extraction), narr, env.Provider(narr), snaps})
}

// TimePointRef names a time point in job.accepted.
type TimePointRef struct {
	Index int    `json:"index"`
	Date  string `json:"date"`
	Label string `json:"label"`
}

// Accepted implements jobkind.Kind: the complexity and the time points.
func (Kind) Accepted(spec job.Spec, _ []job.Member) (map[string]any, error) {
	p := ParamsOf(spec)
	refs := make([]TimePointRef, len(p.TimePoints))
	for i, tp := range p.TimePoints {
		refs[i] = TimePointRef{Index: i, Date: tp.Date, Label: tp.Label}
	}
	return map[string]any{"complexity": p.Complexity, "time_points": refs}, nil
}

// View is time travel's part of a job's view.
type View struct {
	Complexity      Complexity   `json:"complexity"`
	ForceTimeTravel bool         `json:"force_time_travel"`
	Snapshots       []job.Member `json:"snapshots"`
	KeyChanges      []KeyChange  `json:"key_changes"`
	Narrative       string       `json:"narrative"`
}

// View implements jobkind.Kind.
func (Kind) View(j *job.Job) (any, error) {
	p := ParamsOf(j.Spec)
	v := View{Complexity: p.Complexity, ForceTimeTravel: p.ForceTimeTravel, Snapshots: j.Members, KeyChanges: []KeyChange{}}
	if v.Snapshots == nil {
		v.Snapshots = []job.Member{}
	}
	if kc := j.Result.Part(PartKeyChanges); kc != nil && len(kc.Value) > 0 {
		if err := json.Unmarshal(kc.Value, &v.KeyChanges); err != nil {
			return nil, fmt.Errorf("decode key changes: %w", err)
		}
		if v.KeyChanges == nil {
			v.KeyChanges = []KeyChange{}
		}
	}
	if n := j.Result.Part(PartNarrative); n != nil {
		v.Narrative = n.Text
	}
	return v, nil
}
