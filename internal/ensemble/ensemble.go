// Package ensemble is the ensemble job kind: several models answer the
// same question at once (one member each, streamed as they write), then
// two aggregation calls run side by side: a synthesis that merges their
// answers into one (streamed) and an analysis (JSON) of the points they
// agree on, where they disagree and which claims only one of them made.
package ensemble

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
)

// Name is the kind's name in specs and views.
const Name = "ensemble"

// Noun is what an ensemble calls its members: the models' answers.
const Noun job.Noun = "answer"

// Its aggregation's parts.
const (
	PartSynthesis = "synthesis"
	PartAnalysis  = "analysis"
)

// PromptVersion changes whenever a prompt changes in a way that changes the
// answers (cache keys include it).
const PromptVersion = "e1"

// Limits on a request.
const (
	MinModels = 2
	MaxModels = 8
)

// Request is the JSON body of POST /api/ensemble, before validation.
type Request struct {
	Question       *string  `json:"question"`
	Models         []string `json:"models"`
	SynthesisModel string   `json:"synthesis_model"`
	Cache          string   `json:"cache"`
	CallbackURL    string   `json:"callback_url"`
}

// Params is the ensemble's part of a job's spec.
type Params struct {
	// Models answer the question, one member each, in this order.
	Models []string `json:"models"`
	// SynthesisModel merges the answers; empty: the configured default.
	SynthesisModel string `json:"synthesis_model,omitempty"`
}

// Validate checks the request and returns the Spec to run, or the first
// problem found: question, models, synthesis_model, cache.
func (r Request) Validate() (job.Spec, *job.FieldError) {
	if _, ferr := job.ValidQuestion(r.Question); ferr != nil {
		return job.Spec{}, ferr
	}
	switch {
	case r.Models == nil:
		return job.Spec{}, &job.FieldError{Field: "models", Message: fmt.Sprintf("models is required: name %d to %d models", MinModels, MaxModels)}
	case len(r.Models) < MinModels || len(r.Models) > MaxModels:
		return job.Spec{}, &job.FieldError{Field: "models", Message: fmt.Sprintf("an ensemble has %d to %d models, got %d", MinModels, MaxModels, len(r.Models))}
	}
	seen := map[string]int{}
	p := Params{Models: make([]string, len(r.Models))}
	for i, m := range r.Models {
		field := fmt.Sprintf("models[%d]", i)
		m = strings.TrimSpace(m)
		if m == "" {
			return job.Spec{}, &job.FieldError{Field: field, Message: "model must not be empty"}
		}
		if ferr := job.ValidModel(field, m); ferr != nil {
			return job.Spec{}, ferr
		}
		if j, dup := seen[m]; dup {
			return job.Spec{}, &job.FieldError{Field: field, Message: fmt.Sprintf("model %s is already models[%d]", m, j)}
		}
		seen[m] = i
		p.Models[i] = m
	}
	p.SynthesisModel = strings.TrimSpace(r.SynthesisModel)
	if ferr := job.ValidModel("synthesis_model", p.SynthesisModel); ferr != nil {
		return job.Spec{}, ferr
	}
	spec, ferr := job.Common{Question: r.Question, Cache: r.Cache, CallbackURL: r.CallbackURL}.Validate()
	if ferr != nil {
		return job.Spec{}, ferr
	}
	spec.Kind = Name
	spec.Params = jobkind.EncodeParams(p)
	return spec, nil
}

// Spec returns the spec of an ensemble of models for question (for callers
// that make jobs without a request body).
func Spec(question string, p Params) job.Spec {
	return job.Spec{Kind: Name, Question: question, Cache: job.CacheUse, Params: jobkind.EncodeParams(p)}
}

// ParamsOf returns spec's ensemble params.
func ParamsOf(spec job.Spec) Params {
	var p Params
	_ = jobkind.DecodeParams(spec, &p)
	return p
}

// Kind is the ensemble kind.
type Kind struct{}

var _ jobkind.Kind = Kind{}

// Name implements jobkind.Kind.
func (Kind) Name() string { return Name }

// Path implements jobkind.Kind.
func (Kind) Path() string { return "/ensemble" }

// Noun implements jobkind.Kind.
func (Kind) Noun() job.Noun { return Noun }

// Decode implements jobkind.Kind: the body is a Request.
func (Kind) Decode(body []byte, _ time.Time) (job.Spec, error) {
	var r Request
	if err := jobkind.DecodeStrict(body, &r); err != nil {
		return job.Spec{}, err
	}
	spec, ferr := r.Validate()
	if ferr != nil {
		return job.Spec{}, ferr
	}
	return spec, nil
}

// Models implements jobkind.Kind: every member model and the synthesis
// model.
func (Kind) Models(spec job.Spec) []jobkind.NamedModel {
	p := ParamsOf(spec)
	out := make([]jobkind.NamedModel, 0, len(p.Models)+1)
	for i, m := range p.Models {
		out = append(out, jobkind.NamedModel{Field: fmt.Sprintf("models[%d]", i), Model: m})
	}
	if p.SynthesisModel != "" {
		out = append(out, jobkind.NamedModel{Field: "synthesis_model", Model: p.SynthesisModel})
	}
	return out
}

// Plan implements jobkind.Kind: one answer per model, cached per model and
// question, so that any job asking that model that question shares it.
func (Kind) Plan(spec job.Spec, env jobkind.Env) ([]jobkind.Member, error) {
	p := ParamsOf(spec)
	if len(p.Models) == 0 {
		return nil, fmt.Errorf("ensemble job names no models")
	}
	pr := AnswerPrompt(spec.Question)
	out := make([]jobkind.Member, len(p.Models))
	for i, m := range p.Models {
		out[i] = jobkind.Member{
			Label:   m,
			Request: llm.Request{Model: m, System: pr.System, User: pr.User, MaxTokens: pr.MaxTokens, Temperature: 0.3},
			CacheKey: cache.Identity(struct {
				K, V, Q, M, P string
			}{Name, PromptVersion, cache.NormalizeQuestion(spec.Question), m, env.Provider(m)}),
		}
	}
	return out, nil
}

// synthesisModel is the model that merges the answers of spec.
func synthesisModel(spec job.Spec, env jobkind.Env) string {
	if m := ParamsOf(spec).SynthesisModel; m != "" {
		return m
	}
	if env.Narrative != "" {
		return env.Narrative
	}
	return env.Model
}

// Parts implements jobkind.Kind: the synthesis (streamed) and the analysis
// (one JSON call; for a single answer there is nothing to compare, and it
// is empty without a call).
func (Kind) Parts(spec job.Spec, env jobkind.Env, done []job.Member) ([]jobkind.Part, error) {
	sp := SynthesisPrompt(spec.Question, done)
	synth := jobkind.Part{Name: PartSynthesis, Stream: true, Request: llm.Request{
		Model: synthesisModel(spec, env), System: sp.System, User: sp.User, MaxTokens: sp.MaxTokens, Temperature: 0.3,
	}}
	an := jobkind.Part{Name: PartAnalysis}
	if len(done) < 2 {
		an.Fixed = Analysis{Consensus: []string{}, Disagreements: []Disagreement{}, UniqueClaims: []Claim{}}
	} else {
		ap := AnalysisPrompt(spec.Question, done)
		an.Request = llm.Request{Model: env.Extraction, System: ap.System, User: ap.User, MaxTokens: ap.MaxTokens, JSON: true}
		an.Parse = func(text string) (any, error) { return ParseAnalysis(text, done) }
	}
	return []jobkind.Part{synth, an}, nil
}

// ResultKey implements jobkind.Kind: the result depends on the question,
// the two aggregation models at their providers and each answer's model
// and text.
func (Kind) ResultKey(spec job.Spec, env jobkind.Env, done []job.Member) string {
	type answer struct{ M, T string }
	answers := make([]answer, len(done))
	for i, m := range done {
		answers[i] = answer{m.Label, m.Text}
	}
	synth := synthesisModel(spec, env)
	return cache.Identity(struct {
		K, V, Q, S, SP, E, EP string
		A                     []answer
	}{Name, PromptVersion, cache.NormalizeQuestion(spec.Question), synth, env.Provider(synth),
		env.Extraction, env.Provider(env.Extraction), answers})
}

// Accepted implements jobkind.Kind: the models and the synthesis model.
func (Kind) Accepted(spec job.Spec, _ []job.Member) (map[string]any, error) {
	p := ParamsOf(spec)
	out := map[string]any{"models": p.Models}
	if p.SynthesisModel != "" {
		out["synthesis_model"] = p.SynthesisModel
	}
	return out, nil
}

// View is the ensemble's part of a job's view.
type View struct {
	Models         []string     `json:"models"`
	SynthesisModel string       `json:"synthesis_model,omitempty"`
	Answers        []job.Member `json:"answers"`
	Synthesis      string       `json:"synthesis"`
	// Analysis is nil until the analysis is done.
	Analysis *Analysis `json:"analysis"`
}

// View implements jobkind.Kind.
func (Kind) View(j *job.Job) (any, error) {
	p := ParamsOf(j.Spec)
	v := View{Models: p.Models, SynthesisModel: p.SynthesisModel, Answers: j.Members}
	if v.Answers == nil {
		v.Answers = []job.Member{}
	}
	if s := j.Result.Part(PartSynthesis); s != nil {
		v.Synthesis = s.Text
	}
	if a := j.Result.Part(PartAnalysis); a != nil && len(a.Value) > 0 {
		v.Analysis = &Analysis{}
		if err := json.Unmarshal(a.Value, v.Analysis); err != nil {
			return nil, fmt.Errorf("decode analysis: %w", err)
		}
	}
	return v, nil
}
