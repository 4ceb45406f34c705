package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// SnapshotID names one cacheable answer: a question as of a time point,
// from a model at a provider, at a complexity. Two IDs share a key exactly
// when their questions normalise alike (NormalizeQuestion) and every other
// field is equal; the prompt version is part of every key, so that
// changing a prompt retires the answers it made.
type SnapshotID struct {
	Question string
	Model    string
	// Provider identifies the provider that serves Model (its name and
	// base URL, config.LLM.ProviderIdentity): one model name at two
	// endpoints can be two models, and pointing the service at another
	// provider must not serve the old one's answers.
	Provider   string
	Date       string
	Label      string
	Complexity job.Complexity
}

// Key is the Redis key of the snapshot's cache entry.
func (id SnapshotID) Key() string {
	return "tt:cache:snap:" + digest(struct {
		V, Q, M, P, D, L, C string
	}{timetravel.PromptVersion, NormalizeQuestion(id.Question), id.Model, id.Provider, id.Date, id.Label, string(id.Complexity)})
}

// AggregateID names one cacheable aggregation: the key changes and the
// narrative made from a set of snapshot answers. Any change to a
// snapshot's text, date or label, to the models, to the providers that
// serve them or to the complexity makes another key; questions share a key
// when they normalise alike (NormalizeQuestion).
type AggregateID struct {
	Question        string
	Complexity      job.Complexity
	ExtractionModel string
	NarrativeModel  string
	// ExtractionProvider and NarrativeProvider identify the providers that
	// serve ExtractionModel and NarrativeModel (as SnapshotID.Provider).
	ExtractionProvider string
	NarrativeProvider  string
	// Snapshots are the answers the aggregation is made from, in
	// chronological order (Date, Label and Text count).
	Snapshots []job.Snapshot
}

// Key is the Redis key of the aggregation's cache entry.
func (id AggregateID) Key() string {
	type snap struct{ D, L, T string }
	snaps := make([]snap, len(id.Snapshots))
	for i, s := range id.Snapshots {
		snaps[i] = snap{s.Date, s.Label, s.Text}
	}
	return "tt:cache:agg:" + digest(struct {
		V, Q, C, E, EP, N, NP string
		S                     []snap
	}{timetravel.PromptVersion, NormalizeQuestion(id.Question), string(id.Complexity),
		id.ExtractionModel, id.ExtractionProvider, id.NarrativeModel, id.NarrativeProvider, snaps})
}

// Fingerprint identifies a request for in-flight deduplication: two
// requests share it exactly when one job answers both alike. model is the
// model that answers the snapshots (the spec's, or the default) and
// provider the identity of the provider that serves it (as
// SnapshotID.Provider). Questions count as NormalizeQuestion spells them.
// Whether the request reads the cache counts, so that a request that
// bypasses the cache never joins a job that may be made of cached answers;
// so does the callback URL, so that no request loses its webhook by
// joining.
func Fingerprint(spec job.Spec, model, provider string) string {
	return digest(struct {
		V, Q, M, P, C, CB string
		T                 []job.TimePoint
		Bypass, Warm      bool
	}{timetravel.PromptVersion, NormalizeQuestion(spec.Question), model, provider, string(spec.Complexity), spec.CallbackURL,
		spec.TimePoints, !spec.ReadsCache(), spec.Warm})
}

// digest is a 128-bit hex digest of v's JSON encoding, which keeps field
// boundaries unambiguous.
func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("cache: encode key: " + err.Error()) // plain strings and slices: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
