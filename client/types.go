package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The types of this file mirror the JSON of the API's answers and events
// (docs/api.md) member for member: decoding an answer into them and encoding
// it again gives the same JSON object.

// Values of SubmitRequest.Complexity and JobView.Complexity.
const (
	ComplexityBrief    = "brief"
	ComplexityStandard = "standard"
	ComplexityDetailed = "detailed"
)

// Values of SubmitRequest.Cache and JobView.Cache.
const (
	// CacheUse reads cached answers and caches new ones (the default).
	CacheUse = "use"
	// CacheBypass computes every answer afresh; they are still cached.
	CacheBypass = "bypass"
)

// SubmitRequest is the body of POST /api/time-travel. Only Question is
// required; empty fields are left out so that the API's defaults apply.
type SubmitRequest struct {
	Question   string      `json:"question"`
	TimePoints []TimePoint `json:"time_points,omitempty"`
	Model      string      `json:"model,omitempty"`
	// Complexity is ComplexityBrief, ComplexityStandard or
	// ComplexityDetailed.
	Complexity      string `json:"complexity,omitempty"`
	ForceTimeTravel bool   `json:"force_time_travel,omitempty"`
	// Cache is CacheUse (the default) or CacheBypass (skip cache reads).
	Cache string `json:"cache,omitempty"`
	// CallbackURL gets the job's result in a signed webhook when it ends.
	CallbackURL string `json:"callback_url,omitempty"`
	// IdempotencyKey, sent as the Idempotency-Key header, makes a repeat
	// of this request return the first one's job.
	IdempotencyKey string `json:"-"`
}

// TimePoint is one requested time point: Date is "YYYY-MM-DD" or "today".
// Without a Label it is sent as the bare date string, with one as
// {"date","label"}.
type TimePoint struct {
	Date  string
	Label string
}

// Today is the time point of the current day.
var Today = TimePoint{Date: "today"}

// MarshalJSON writes the string form when there is no label, else the object
// form.
func (t TimePoint) MarshalJSON() ([]byte, error) {
	if t.Label == "" {
		return json.Marshal(t.Date)
	}
	return json.Marshal(struct {
		Date  string `json:"date"`
		Label string `json:"label"`
	}{t.Date, t.Label})
}

// UnmarshalJSON reads either form.
func (t *TimePoint) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*t = TimePoint{}
		return json.Unmarshal(b, &t.Date)
	}
	var o struct {
		Date  string `json:"date"`
		Label string `json:"label"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("time point: %w", err)
	}
	*t = TimePoint{Date: o.Date, Label: o.Label}
	return nil
}

// JobStatus is the state of a job: StatusQueued, StatusRunning and
// StatusAggregating, then one of the terminal statuses StatusCompleted,
// StatusPartial, StatusFailed and StatusCanceled, after which it never
// changes.
type JobStatus string

// Job statuses.
const (
	StatusQueued      JobStatus = "queued"
	StatusRunning     JobStatus = "running"
	StatusAggregating JobStatus = "aggregating"
	StatusCompleted   JobStatus = "completed"
	// StatusPartial: the job ended at its deadline with part of the
	// answer (the snapshots that completed, and the key changes or the
	// narrative if they finished).
	StatusPartial  JobStatus = "partial"
	StatusFailed   JobStatus = "failed"
	StatusCanceled JobStatus = "canceled"
)

// Terminal reports whether s is a final status.
func (s JobStatus) Terminal() bool {
	switch s {
	case StatusCompleted, StatusPartial, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// SnapshotStatus is the state of one time point's answer: SnapshotPending,
// SnapshotRunning, then SnapshotCompleted or SnapshotFailed. A snapshot
// that had not finished when its job ended is SnapshotCanceled in a
// canceled job and SnapshotExpired otherwise, so an ended job lists no
// snapshot as pending or running.
type SnapshotStatus string

// Snapshot statuses.
const (
	SnapshotPending   SnapshotStatus = "pending"
	SnapshotRunning   SnapshotStatus = "running"
	SnapshotCompleted SnapshotStatus = "completed"
	SnapshotFailed    SnapshotStatus = "failed"
	SnapshotCanceled  SnapshotStatus = "canceled"
	SnapshotExpired   SnapshotStatus = "expired"
)

// Terminal reports whether the snapshot will not change again.
func (s SnapshotStatus) Terminal() bool {
	switch s {
	case SnapshotCompleted, SnapshotFailed, SnapshotCanceled, SnapshotExpired:
		return true
	}
	return false
}

// WebhookStatus is the state of the delivery of a job's result to its
// callback URL: WebhookPending until it is WebhookDelivered (a 2xx answer)
// or WebhookFailed for good.
type WebhookStatus string

// Webhook delivery statuses.
const (
	WebhookPending   WebhookStatus = "pending"
	WebhookDelivered WebhookStatus = "delivered"
	WebhookFailed    WebhookStatus = "failed"
)

// Final reports whether the delivery has its outcome.
func (s WebhookStatus) Final() bool { return s == WebhookDelivered || s == WebhookFailed }

// JobView is a job as GET /api/jobs/{id} and DELETE /api/jobs/{id} show it,
// for every kind: the fields of a time-travel job (Complexity to Narrative)
// are empty in an ensemble's view, and those of an ensemble (Models to
// Analysis) in a time-travel job's.
type JobView struct {
	ID string `json:"job_id"`
	// Kind is KindTimeTravel or KindEnsemble.
	Kind     string    `json:"kind"`
	Status   JobStatus `json:"status"`
	Question string    `json:"question"`
	// Model is the model the request named; empty for the default.
	Model string `json:"model,omitempty"`
	// Complexity is one of the Complexity* values.
	Complexity      string `json:"complexity"`
	ForceTimeTravel bool   `json:"force_time_travel"`
	// Cache is CacheUse or CacheBypass.
	Cache string `json:"cache"`
	// Cached is set when the whole job was served from the caches.
	Cached bool `json:"cached"`
	// Warm is set on a cache-warming job.
	Warm      bool      `json:"warm,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Deadline  time.Time `json:"deadline"`
	// FinishedAt is set once the job has ended.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Snapshots has one entry per time point, in chronological order.
	Snapshots  []Snapshot  `json:"snapshots"`
	KeyChanges []KeyChange `json:"key_changes"`
	Narrative  string      `json:"narrative"`
	// Models are an ensemble's models, one answer each, in order;
	// SynthesisModel the model that merges them (empty: the default).
	Models         []string `json:"models"`
	SynthesisModel string   `json:"synthesis_model,omitempty"`
	// Answers has one entry per model of an ensemble (Label is the model).
	Answers   []Member `json:"answers"`
	Synthesis string   `json:"synthesis"`
	// Analysis is nil until the ensemble's analysis is done.
	Analysis *Analysis `json:"analysis"`
	Timings  Timings   `json:"timings"`
	// Errors lists every failure that shaped the outcome.
	Errors []string `json:"errors"`
	// CallbackURL is the request's callback URL without its query,
	// fragment and user info.
	CallbackURL string `json:"callback_url,omitempty"`
	// Webhook is the callback's delivery state, once the job has ended.
	Webhook *Webhook `json:"webhook,omitempty"`
	// Links are the job's own path and its event stream's, whose token is
	// fresh in every answer.
	Links Links `json:"links"`
}

// kindFields are the JSON fields of a view or job.accepted that belong to
// one kind: the others' are left out of its encoding.
var kindFields = map[string][]string{
	KindTimeTravel: {"complexity", "force_time_travel", "snapshots", "key_changes", "narrative", "time_points"},
	KindEnsemble:   {"models", "synthesis_model", "answers", "synthesis", "analysis"},
}

// withoutOtherKinds encodes v (whose kind is kind) without the fields of
// the other kinds, as the API writes it. No kind is time travel: servers
// from before job kinds name none.
func withoutOtherKinds(v any, kind string) ([]byte, error) {
	if kind == "" {
		kind = KindTimeTravel
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var o map[string]json.RawMessage
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, err
	}
	for k, fields := range kindFields {
		if k == kind {
			continue
		}
		for _, f := range fields {
			if !slices.Contains(kindFields[kind], f) {
				delete(o, f)
			}
		}
	}
	return json.Marshal(o)
}

type jobViewJSON JobView

// MarshalJSON writes the view as the API does: with its own kind's fields
// only.
func (v JobView) MarshalJSON() ([]byte, error) { return withoutOtherKinds(jobViewJSON(v), v.Kind) }

// Member is one member call of a job: a time point's answer (a Snapshot,
// with its Date) or one model's answer in an ensemble (Label is the
// model). Model is the model asked and, once the member is done, the model
// that answered (possibly a fallback). Attempts counts the deliveries of
// its task, LLMAttempts the requests sent to providers for it, failed ones
// included. StartedAt and CompletedAt are Unix milliseconds, 0 when not
// yet.
type Member struct {
	Index       int            `json:"index"`
	Date        string         `json:"date,omitempty"`
	Label       string         `json:"label"`
	Status      SnapshotStatus `json:"status"`
	Text        string         `json:"text,omitempty"`
	Model       string         `json:"model,omitempty"`
	Attempts    int            `json:"attempts"`
	LLMAttempts int            `json:"llm_attempts,omitempty"`
	Error       string         `json:"error,omitempty"`
	StartedAt   int64          `json:"started_at_ms,omitempty"`
	CompletedAt int64          `json:"completed_at_ms,omitempty"`
	// Cached is set when the answer came from the cache.
	Cached bool `json:"cached,omitempty"`
}

// Snapshot is one time point's answer.
type Snapshot = Member

// Analysis is an ensemble's comparison of its answers: the points all
// share, where they disagree (with each model's position), and claims only
// one model made.
type Analysis struct {
	Consensus     []string       `json:"consensus"`
	Disagreements []Disagreement `json:"disagreements"`
	UniqueClaims  []Claim        `json:"unique_claims"`
}

// Disagreement is one topic the models answer differently.
type Disagreement struct {
	Topic     string     `json:"topic"`
	Positions []Position `json:"positions"`
}

// Position is what one model says on a disputed topic.
type Position struct {
	Model    string `json:"model"`
	Position string `json:"position"`
}

// Claim is a claim only one model made.
type Claim struct {
	Model string `json:"model"`
	Claim string `json:"claim"`
}

// KeyChange lists what changed between two consecutive time points (their
// dates and labels).
type KeyChange struct {
	From      string   `json:"from"`
	To        string   `json:"to"`
	FromLabel string   `json:"from_label"`
	ToLabel   string   `json:"to_label"`
	Changes   []string `json:"changes"`
}

// Timings are the durations of a job's stages in milliseconds; a stage that
// has not happened is nil.
type Timings struct {
	// QueueWaitMS is from acceptance to the first snapshot starting.
	QueueWaitMS *int64 `json:"queue_wait_ms,omitempty"`
	// SnapshotsMS is from the first snapshot starting to the last one
	// ending.
	SnapshotsMS *int64 `json:"snapshots_ms,omitempty"`
	// SnapshotMS has each snapshot's own duration, by index (0 when
	// unfinished).
	SnapshotMS []int64 `json:"snapshot_ms,omitempty"`
	// FanInMS is from the last snapshot ending to the aggregation starting.
	FanInMS *int64 `json:"fan_in_ms,omitempty"`
	// KeyChangesMS and NarrativeMS are the two aggregation calls, which
	// run concurrently.
	KeyChangesMS *int64 `json:"key_changes_ms,omitempty"`
	NarrativeMS  *int64 `json:"narrative_ms,omitempty"`
	// KeyChangesLLMAttempts and NarrativeLLMAttempts count the requests
	// the two aggregation calls sent to providers, failed ones included.
	KeyChangesLLMAttempts int `json:"key_changes_llm_attempts,omitempty"`
	NarrativeLLMAttempts  int `json:"narrative_llm_attempts,omitempty"`
	// An ensemble's stages: its answers (all, and each by index), then
	// its synthesis and analysis, which run concurrently.
	AnswersMS            *int64  `json:"answers_ms,omitempty"`
	AnswerMS             []int64 `json:"answer_ms,omitempty"`
	SynthesisMS          *int64  `json:"synthesis_ms,omitempty"`
	AnalysisMS           *int64  `json:"analysis_ms,omitempty"`
	SynthesisLLMAttempts int     `json:"synthesis_llm_attempts,omitempty"`
	AnalysisLLMAttempts  int     `json:"analysis_llm_attempts,omitempty"`
	// TotalMS is from acceptance to the terminal status.
	TotalMS *int64 `json:"total_ms,omitempty"`
}

// Webhook is the delivery state of a job's callback. LastStatusCode and
// LastError describe the latest attempt that did not deliver (the status
// code also that of the one that did); Attempts counts the requests made.
type Webhook struct {
	Status         WebhookStatus `json:"status"`
	Attempts       int           `json:"attempts"`
	LastStatusCode int           `json:"last_status_code,omitempty"`
	LastError      string        `json:"last_error,omitempty"`
	DeliveredAt    *time.Time    `json:"delivered_at,omitempty"`
}

// Usage is the answer of GET /api/usage: the caller's limits and how much
// of each it uses. A limit of 0 means unlimited.
type Usage struct {
	Key    KeyInfo     `json:"key"`
	Limits Limits      `json:"limits"`
	Usage  UsageCounts `json:"usage"`
}

// KeyInfo names the caller: its API key's id and name, or "anonymous" on a
// server that runs without keys.
type KeyInfo struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Limits are a caller's quotas; 0 means unlimited.
type Limits struct {
	SubmissionsPerMinute int   `json:"submissions_per_minute"`
	RunningJobs          int   `json:"running_jobs"`
	StoredJobs           int   `json:"stored_jobs"`
	TokensPerDay         int64 `json:"tokens_per_day"`
	SSEConnections       int   `json:"sse_connections"`
}

// UsageCounts is what a caller uses now.
type UsageCounts struct {
	// SubmissionsAvailable is how many submissions may be made at once now.
	SubmissionsAvailable int64 `json:"submissions_available"`
	RunningJobs          int64 `json:"running_jobs"`
	StoredJobs           int64 `json:"stored_jobs"`
	TokensToday          int64 `json:"tokens_today"`
	// SSEConnections counts the caller's streams open on the api replica
	// that answered.
	SSEConnections int `json:"sse_connections"`
}

// Models is the answer of GET /api/models: the models a request may name,
// and the one used when it names none.
type Models struct {
	Default string   `json:"default"`
	Models  []string `json:"models"`
}

// JobsQuery asks for a page of the caller's jobs (GET /api/jobs).
type JobsQuery struct {
	// Limit is the page's size, 1 to 100; 0 asks for the server's default
	// (20).
	Limit int
	// Cursor is the previous page's NextCursor, as it is; empty for the
	// first page (the newest jobs).
	Cursor string
}

// JobList is a page of the caller's jobs, newest first (GET /api/jobs).
type JobList struct {
	Jobs []JobSummary `json:"jobs"`
	// NextCursor asks for the next page (JobsQuery.Cursor); empty on the
	// last page. A page may hold fewer jobs than asked for (jobs that
	// expired are left out): only an empty NextCursor ends the list.
	NextCursor string `json:"next_cursor,omitempty"`
}

// JobSummary is one job of a JobList: what a history shows of it. Job
// returns the whole job.
type JobSummary struct {
	JobID    string    `json:"job_id"`
	Kind     string    `json:"kind"`
	Status   JobStatus `json:"status"`
	Question string    `json:"question"`
	// CreatedAt is when the job was accepted; FinishedAt when it ended
	// (nil until then).
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// TotalMS is from acceptance to the end; nil until the job ends.
	TotalMS *int64 `json:"total_ms,omitempty"`
	// Cached is set when the whole job was served from the caches.
	Cached bool `json:"cached"`
}

// Accepted is the API's answer to a submission (202 Accepted).
type Accepted struct {
	JobID  string    `json:"job_id"`
	Status JobStatus `json:"status"`
	// Joined is set when the request joined an identical job in flight
	// instead of starting work: JobID is still a job of the caller's own,
	// whose progress is the shared work's and whose cancellation ends only
	// the caller's part.
	Joined bool `json:"joined,omitempty"`
	// Cached is set when the whole job was served from the caches: it has
	// ended already, and its event stream holds every event up to
	// job.completed.
	Cached bool `json:"cached,omitempty"`
	// CachedSnapshots counts the snapshots answered from the cache.
	CachedSnapshots int   `json:"cached_snapshots,omitempty"`
	Links           Links `json:"links"`
	// Replayed is set when the answer repeats the job of an earlier
	// request with the same idempotency key (header Idempotent-Replayed).
	Replayed bool `json:"-"`
}

// Links are the paths of a job's resources as the API names them
// ("/api/jobs/{id}", "/api/jobs/{id}/events?token=…"), to be appended to
// the API's base URL. The events link carries a token, signed for that one
// stream and its owner, that opens it without the API key (a browser
// EventSource cannot send headers); the token expires, and every answer
// that shows the job carries a fresh one.
type Links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

// Event names of a job's stream (docs/api.md).
const (
	EventJobAccepted         = "job.accepted"
	EventSnapshotStarted     = "snapshot.started"
	EventSnapshotDelta       = "snapshot.delta"
	EventSnapshotCompleted   = "snapshot.completed"
	EventSnapshotFailed      = "snapshot.failed"
	EventKeyChangesCompleted = "key_changes.completed"
	EventKeyChangesFailed    = "key_changes.failed"
	// EventAggregateStarted announces an aggregation attempt; one after the
	// first means the earlier attempt died: the narrative is the text of
	// the narrative.delta events after the latest aggregate.started.
	EventAggregateStarted   = "aggregate.started"
	EventNarrativeDelta     = "narrative.delta"
	EventNarrativeCompleted = "narrative.completed"
	EventNarrativeFailed    = "narrative.failed"
	EventJobCompleted       = "job.completed"
	// After job.completed, in a replay of an ended job's stream only: the
	// outcome of the webhook to the job's callback URL.
	EventWebhookDelivered = "webhook.delivered"
	EventWebhookFailed    = "webhook.failed"
	// An ensemble's events: each model's answer (data: AnswerStartedData,
	// SnapshotDeltaData, AnswerCompletedData, AnswerFailedData), the
	// synthesis (TextDeltaData, TextData, FailedData) and the analysis
	// (AnalysisData, FailedData).
	EventAnswerStarted      = "answer.started"
	EventAnswerDelta        = "answer.delta"
	EventAnswerCompleted    = "answer.completed"
	EventAnswerFailed       = "answer.failed"
	EventSynthesisDelta     = "synthesis.delta"
	EventSynthesisCompleted = "synthesis.completed"
	EventSynthesisFailed    = "synthesis.failed"
	EventAnalysisCompleted  = "analysis.completed"
	EventAnalysisFailed     = "analysis.failed"
)

// Job kinds (JobView.Kind, JobAcceptedData.Kind).
const (
	KindTimeTravel = "timetravel"
	KindEnsemble   = "ensemble"
)

// Event is one Server-Sent Event of a job's stream.
type Event struct {
	// ID is the event's id: the last id the stream set, which the API sets
	// on every event (a Redis Stream entry id such as "1732590000000-0").
	ID string
	// Name is the "event:" field, or "message" when the event has none.
	Name string
	// Data is the event's data: the data lines joined with "\n". The API
	// sends one line of JSON; it is handed over as received.
	Data json.RawMessage
}

// Terminal reports whether e is the last event of its job's stream.
func (e Event) Terminal() bool { return e.Name == EventJobCompleted }

// Decode unmarshals the event's data into v, e.g. a *SnapshotDeltaData for a
// snapshot.delta event.
func (e Event) Decode(v any) error {
	if len(e.Data) == 0 {
		return errors.New("client: event " + e.Name + " has no data")
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("client: event %s (id %s): %w", e.Name, e.ID, err)
	}
	return nil
}

// TimePointRef names a time point in event payloads.
type TimePointRef struct {
	Index int    `json:"index"`
	Date  string `json:"date"`
	Label string `json:"label"`
}

// JobAcceptedData is the data of job.accepted: the fields of every kind
// (ExpectedWaitMS among them), those of a time-travel job (Complexity, TimePoints) and those of an
// ensemble (Models, SynthesisModel).
type JobAcceptedData struct {
	JobID          string         `json:"job_id"`
	Kind           string         `json:"kind"`
	Question       string         `json:"question"`
	Model          string         `json:"model,omitempty"`
	Complexity     string         `json:"complexity"`
	Deadline       string         `json:"deadline"`
	TimePoints     []TimePointRef `json:"time_points"`
	Models         []string       `json:"models"`
	SynthesisModel string         `json:"synthesis_model,omitempty"`
	// ExpectedWaitMS is how long the server expected the job's model calls
	// to wait for provider capacity when it accepted the job (0: no wait);
	// nil when it could not tell, and for a job that queued no call of its
	// own (served from the caches, or joined).
	ExpectedWaitMS *int64 `json:"expected_wait_ms,omitempty"`
	// Cached is set when the whole job is served from the caches: its
	// events follow at once.
	Cached bool `json:"cached,omitempty"`
}

// SnapshotStartedData is the data of snapshot.started. A later attempt
// replaces the text of earlier attempts of the same index. A cached answer
// has Attempt 0 and Cached set.
type SnapshotStartedData struct {
	Index   int    `json:"index"`
	Date    string `json:"date"`
	Label   string `json:"label"`
	Attempt int    `json:"attempt"`
	Cached  bool   `json:"cached,omitempty"`
}

// AggregateStartedData is the data of aggregate.started.
type AggregateStartedData struct {
	Attempt int `json:"attempt"`
}

// SnapshotDeltaData is the data of snapshot.delta: text to append.
type SnapshotDeltaData struct {
	Index int    `json:"index"`
	Text  string `json:"text"`
}

// SnapshotCompletedData is the data of snapshot.completed; Model is the
// model that answered.
type SnapshotCompletedData struct {
	Index      int    `json:"index"`
	Date       string `json:"date"`
	Label      string `json:"label"`
	Model      string `json:"model,omitempty"`
	Text       string `json:"text"`
	DurationMS int64  `json:"duration_ms"`
	// Cached is set when the answer came from the cache.
	Cached bool `json:"cached,omitempty"`
}

// SnapshotFailedData is the data of snapshot.failed.
type SnapshotFailedData struct {
	Index int    `json:"index"`
	Date  string `json:"date"`
	Label string `json:"label"`
	Error string `json:"error"`
}

// KeyChangesData is the data of key_changes.completed.
type KeyChangesData struct {
	KeyChanges []KeyChange `json:"key_changes"`
	Cached     bool        `json:"cached,omitempty"`
}

// TextDeltaData is the data of narrative.delta and synthesis.delta: text
// to append (TextData decodes it too).
type TextDeltaData struct {
	Text string `json:"text"`
}

// TextData is the data of narrative.completed and synthesis.completed: the
// whole text, Cached when it came from the cache.
type TextData struct {
	Text   string `json:"text"`
	Cached bool   `json:"cached,omitempty"`
}

// FailedData is the data of the failed events of an aggregation's parts:
// key_changes.failed, narrative.failed, synthesis.failed and
// analysis.failed.
type FailedData struct {
	Error string `json:"error"`
}

// JobCompletedData is the data of job.completed; Status is the job's final
// status.
type JobCompletedData struct {
	JobID  string    `json:"job_id"`
	Status JobStatus `json:"status"`
	Error  string    `json:"error,omitempty"`
	// Cached is set when the whole job was served from the caches.
	Cached bool `json:"cached,omitempty"`
}

type acceptedJSON JobAcceptedData

// MarshalJSON writes the data as the API does: with its own kind's fields
// only.
func (d JobAcceptedData) MarshalJSON() ([]byte, error) {
	return withoutOtherKinds(acceptedJSON(d), d.Kind)
}

// AnswerStartedData is the data of answer.started (as SnapshotStartedData;
// Label is the model).
type AnswerStartedData struct {
	Index   int    `json:"index"`
	Label   string `json:"label"`
	Attempt int    `json:"attempt"`
	Cached  bool   `json:"cached,omitempty"`
}

// AnswerCompletedData is the data of answer.completed; Model is the model
// that answered.
type AnswerCompletedData struct {
	Index      int    `json:"index"`
	Label      string `json:"label"`
	Model      string `json:"model,omitempty"`
	Text       string `json:"text"`
	DurationMS int64  `json:"duration_ms"`
	Cached     bool   `json:"cached,omitempty"`
}

// AnswerFailedData is the data of answer.failed.
type AnswerFailedData struct {
	Index int    `json:"index"`
	Label string `json:"label"`
	Error string `json:"error"`
}

// AnalysisData is the data of analysis.completed.
type AnalysisData struct {
	Analysis Analysis `json:"analysis"`
	Cached   bool     `json:"cached,omitempty"`
}

// WebhookDeliveredData is the data of webhook.delivered.
type WebhookDeliveredData struct {
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
}

// WebhookFailedData is the data of webhook.failed: Error says why the
// last attempt failed.
type WebhookFailedData struct {
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error"`
}

// WebhookData decodes the data of either webhook.delivered or
// webhook.failed (WebhookDeliveredData, WebhookFailedData).
type WebhookData struct {
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
}
