// Package job holds the domain of a time-travel job: what a user asks for
// (Spec), the validated form of a submission, the job's state machine and the
// shape in which a job is shown to clients. It has no I/O.
package job

import (
	"net/url"
	"time"
)

// Status is the state of a job. A job moves queued → running → aggregating →
// one of the terminal states; any non-terminal state may also go straight to
// canceled, and aggregating may end partial or failed at the deadline.
type Status string

// Job statuses.
const (
	StatusQueued      Status = "queued"
	StatusRunning     Status = "running"
	StatusAggregating Status = "aggregating"
	StatusCompleted   Status = "completed"
	StatusPartial     Status = "partial"
	StatusFailed      Status = "failed"
	StatusCanceled    Status = "canceled"
)

// Terminal reports whether s is a final status: nothing changes a job after it.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusPartial, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// SnapshotStatus is the state of one time point's answer.
type SnapshotStatus string

// Snapshot statuses.
const (
	SnapshotPending   SnapshotStatus = "pending"
	SnapshotRunning   SnapshotStatus = "running"
	SnapshotCompleted SnapshotStatus = "completed"
	SnapshotFailed    SnapshotStatus = "failed"
	// SnapshotCanceled: the job was canceled before the snapshot finished.
	SnapshotCanceled SnapshotStatus = "canceled"
	// SnapshotExpired: the job ended (at its deadline, or when its
	// aggregation could not wait) before the snapshot finished.
	SnapshotExpired SnapshotStatus = "expired"
)

// Done reports whether the snapshot has its final outcome from the model
// (answered, or failed for good); only such snapshots count towards fan-in.
func (s SnapshotStatus) Done() bool { return s == SnapshotCompleted || s == SnapshotFailed }

// Terminal reports whether the snapshot will not change again: done, or
// stopped when its job ended.
func (s SnapshotStatus) Terminal() bool {
	return s.Done() || s == SnapshotCanceled || s == SnapshotExpired
}

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

// Spec is a validated request: everything a job needs to run. Time points are
// in chronological order.
type Spec struct {
	Question        string      `json:"question"`
	TimePoints      []TimePoint `json:"time_points"`
	Model           string      `json:"model,omitempty"`
	Complexity      Complexity  `json:"complexity"`
	ForceTimeTravel bool        `json:"force_time_travel,omitempty"`
	// Cache says whether the job may reuse cached answers: CacheUse, or
	// CacheBypass (also set by ForceTimeTravel), which skips cache reads
	// but still writes what the job computes.
	Cache CacheMode `json:"cache"`
	// CallbackURL, when set, gets the job's result in a signed webhook
	// once the job ends. It was checked at submission (webhook.Policy).
	CallbackURL string `json:"callback_url,omitempty"`
	// Warm marks a cache-warming job: its tasks run on the warm queue,
	// within the provider capacity share of warming.
	Warm bool `json:"warm,omitempty"`
	// Owner is the id of the API key that submitted the job (AnonymousOwner
	// when the api runs without keys); its quotas pay for the job's
	// provider tokens. Set by the api, never by the request body.
	Owner string `json:"owner,omitempty"`
}

// AnonymousOwner owns the jobs submitted without an API key, on a server
// that does not require one (local development, make demo).
const AnonymousOwner = "anonymous"

// SystemOwner owns the jobs the service makes for itself (cache warming).
const SystemOwner = "system"

// CacheMode is how a job uses the answer caches.
type CacheMode string

// Cache modes.
const (
	// CacheUse reads cached answers and writes new ones.
	CacheUse CacheMode = "use"
	// CacheBypass computes every answer afresh and writes them to the
	// cache for later jobs.
	CacheBypass CacheMode = "bypass"
)

// ReadsCache reports whether the job may be served cached answers.
func (s Spec) ReadsCache() bool { return s.Cache != CacheBypass && !s.ForceTimeTravel }

// Snapshot is one time point's answer and its bookkeeping. Times are Unix
// milliseconds; zero means "not yet". Model is the model asked and, once the
// snapshot is done, the model that answered (a fallback when the model was
// out of service). Attempts counts the deliveries of its task that claimed
// it; LLMAttempts the requests sent to providers for it over all of them,
// failed ones included.
type Snapshot struct {
	Index       int            `json:"index"`
	Date        string         `json:"date"`
	Label       string         `json:"label"`
	Status      SnapshotStatus `json:"status"`
	Text        string         `json:"text,omitempty"`
	Model       string         `json:"model,omitempty"`
	Attempts    int            `json:"attempts"`
	LLMAttempts int            `json:"llm_attempts,omitempty"`
	Error       string         `json:"error,omitempty"`
	StartedAt   int64          `json:"started_at_ms,omitempty"`
	CompletedAt int64          `json:"completed_at_ms,omitempty"`
	// Cached is set when the answer came from the snapshot cache (no
	// model was called for it).
	Cached bool `json:"cached,omitempty"`
}

// KeyChange lists what changed between two consecutive snapshots.
type KeyChange struct {
	From      string   `json:"from"`
	To        string   `json:"to"`
	FromLabel string   `json:"from_label"`
	ToLabel   string   `json:"to_label"`
	Changes   []string `json:"changes"`
}

// Aggregate is the outcome of the aggregation step. An error field set means
// that part failed; the other part may still be there.
type Aggregate struct {
	KeyChanges      []KeyChange `json:"key_changes"`
	KeyChangesError string      `json:"key_changes_error,omitempty"`
	Narrative       string      `json:"narrative,omitempty"`
	NarrativeError  string      `json:"narrative_error,omitempty"`
	StartedAt       int64       `json:"started_at_ms,omitempty"`
	KeyChangesMS    int64       `json:"key_changes_ms,omitempty"`
	NarrativeMS     int64       `json:"narrative_ms,omitempty"`
	// The models that answered the key changes and the narrative, and the
	// requests each call sent (failed ones included).
	KeyChangesModel       string `json:"key_changes_model,omitempty"`
	KeyChangesLLMAttempts int    `json:"key_changes_llm_attempts,omitempty"`
	NarrativeModel        string `json:"narrative_model,omitempty"`
	NarrativeLLMAttempts  int    `json:"narrative_llm_attempts,omitempty"`
	// Cached is set when the key changes and the narrative came from the
	// result cache.
	Cached bool `json:"cached,omitempty"`
}

// WebhookStatus is the state of the delivery of a job's result to its
// callback URL.
type WebhookStatus string

// Webhook delivery statuses: pending from the moment the delivery is
// queued until it is delivered (a 2xx answer) or has failed for good.
const (
	WebhookPending   WebhookStatus = "pending"
	WebhookDelivered WebhookStatus = "delivered"
	WebhookFailed    WebhookStatus = "failed"
)

// Final reports whether the delivery has its outcome.
func (s WebhookStatus) Final() bool { return s == WebhookDelivered || s == WebhookFailed }

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

// Job is the full state of a job as stored.
type Job struct {
	ID         string     `json:"job_id"`
	Spec       Spec       `json:"-"`
	Status     Status     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	Deadline   time.Time  `json:"deadline"`
	FinishedAt time.Time  `json:"-"`
	Snapshots  []Snapshot `json:"snapshots"`
	Aggregate  *Aggregate `json:"-"`
	Error      string     `json:"-"`
	// Webhook is the callback's delivery state; nil until it is queued.
	Webhook *Webhook `json:"-"`
	// Fingerprint identifies the request for in-flight deduplication
	// (package cache); empty when the job takes no part in it.
	Fingerprint string `json:"-"`
	// Of is set on a handle: the job of a request that joined an
	// identical job in flight. It names that job, which does the work;
	// the handle has its own id and owner.
	Of string `json:"-"`
	// Detached lists, by job or handle id, the callers that canceled their
	// part in this job while others still wanted it (see SeenBy).
	Detached map[string]Detach `json:"-"`
}

// Detach records when a caller let go of a shared job, and the id of the
// event that marks it on the job's stream (the caller's stream ends there).
type Detach struct {
	At     time.Time
	Marker string
}

// CanceledByClient is the error of a job its caller canceled.
const CanceledByClient = "canceled by the client"

// SeenBy returns the job as the caller of handle sees it: j's work and
// state under the handle's id, owner and creation time (handle is j
// itself for the caller that started j). A caller that detached sees its
// job canceled at that moment, whatever became of the shared work.
func (j *Job) SeenBy(handle *Job) *Job {
	v := *j
	v.ID, v.Spec.Owner, v.CreatedAt, v.Of = handle.ID, handle.Spec.Owner, handle.CreatedAt, ""
	v.Detached = nil
	if handle.ID != j.ID {
		// The webhook and the deduplication entry belong to the job that
		// started the work.
		v.Webhook, v.Fingerprint = nil, ""
	}
	d, ok := j.Detached[handle.ID]
	if !ok {
		return &v
	}
	v.Status, v.FinishedAt, v.Error = StatusCanceled, d.At, CanceledByClient
	v.Snapshots = make([]Snapshot, len(j.Snapshots))
	for i, s := range j.Snapshots {
		if !s.Status.Terminal() || s.CompletedAt > d.At.UnixMilli() {
			s.Status, s.Text, s.Error, s.CompletedAt = SnapshotCanceled, "", "", 0
		}
		v.Snapshots[i] = s
	}
	if a := j.Aggregate; a != nil {
		v.Aggregate = &Aggregate{StartedAt: a.StartedAt}
		if a.StartedAt > d.At.UnixMilli() {
			v.Aggregate = nil
		}
	}
	return &v
}

// Cached reports whether the whole job was served from the caches: every
// snapshot and the aggregation.
func (j *Job) Cached() bool {
	if j.Aggregate == nil || !j.Aggregate.Cached {
		return false
	}
	for _, s := range j.Snapshots {
		if !s.Cached {
			return false
		}
	}
	return true
}

// Timings are the per-stage durations of a job in milliseconds; a stage that
// has not happened is omitted.
type Timings struct {
	// QueueWaitMS is from acceptance to the first snapshot starting.
	QueueWaitMS *int64 `json:"queue_wait_ms,omitempty"`
	// SnapshotsMS is from the first snapshot starting to the last one ending.
	SnapshotsMS *int64 `json:"snapshots_ms,omitempty"`
	// SnapshotMS has each snapshot's own duration, by index (0 when unfinished).
	SnapshotMS []int64 `json:"snapshot_ms,omitempty"`
	// FanInMS is from the last snapshot ending to aggregation starting.
	FanInMS *int64 `json:"fan_in_ms,omitempty"`
	// KeyChangesMS and NarrativeMS are the two aggregation calls, which run
	// concurrently.
	KeyChangesMS *int64 `json:"key_changes_ms,omitempty"`
	NarrativeMS  *int64 `json:"narrative_ms,omitempty"`
	// KeyChangesLLMAttempts and NarrativeLLMAttempts count the requests
	// the two aggregation calls sent to providers, failed ones included.
	KeyChangesLLMAttempts int `json:"key_changes_llm_attempts,omitempty"`
	NarrativeLLMAttempts  int `json:"narrative_llm_attempts,omitempty"`
	// TotalMS is from acceptance to the terminal state.
	TotalMS *int64 `json:"total_ms,omitempty"`
}

// Timings derives the stage durations from the job's timestamps.
func (j *Job) Timings() Timings {
	var t Timings
	created := j.CreatedAt.UnixMilli()
	var firstStart, lastEnd int64
	per := make([]int64, len(j.Snapshots))
	anyDone := false
	for i, s := range j.Snapshots {
		if s.StartedAt > 0 && (firstStart == 0 || s.StartedAt < firstStart) {
			firstStart = s.StartedAt
		}
		if s.Status.Done() && s.CompletedAt > 0 {
			anyDone = true
			if s.CompletedAt > lastEnd {
				lastEnd = s.CompletedAt
			}
			if s.StartedAt > 0 {
				per[i] = s.CompletedAt - s.StartedAt
			}
		}
	}
	if firstStart > 0 {
		t.QueueWaitMS = ptr(max(firstStart-created, 0))
	}
	if anyDone {
		t.SnapshotMS = per
		if firstStart > 0 {
			t.SnapshotsMS = ptr(max(lastEnd-firstStart, 0))
		}
	}
	if a := j.Aggregate; a != nil {
		if a.StartedAt > 0 && lastEnd > 0 {
			t.FanInMS = ptr(max(a.StartedAt-lastEnd, 0))
		}
		if a.KeyChangesMS > 0 {
			t.KeyChangesMS = ptr(a.KeyChangesMS)
		}
		if a.NarrativeMS > 0 {
			t.NarrativeMS = ptr(a.NarrativeMS)
		}
		t.KeyChangesLLMAttempts, t.NarrativeLLMAttempts = a.KeyChangesLLMAttempts, a.NarrativeLLMAttempts
	}
	if !j.FinishedAt.IsZero() {
		t.TotalMS = ptr(max(j.FinishedAt.UnixMilli()-created, 0))
	}
	return t
}

func ptr(v int64) *int64 { return &v }

// View is how a job is shown to clients (GET /api/jobs/{id}).
type View struct {
	ID              string     `json:"job_id"`
	Status          Status     `json:"status"`
	Question        string     `json:"question"`
	Model           string     `json:"model,omitempty"`
	Complexity      Complexity `json:"complexity"`
	ForceTimeTravel bool       `json:"force_time_travel"`
	Cache           CacheMode  `json:"cache"`
	// Cached is set when the whole job was served from the caches.
	Cached      bool        `json:"cached"`
	Warm        bool        `json:"warm,omitempty"`
	CreatedAt   time.Time   `json:"created_at"`
	Deadline    time.Time   `json:"deadline"`
	FinishedAt  *time.Time  `json:"finished_at,omitempty"`
	Snapshots   []Snapshot  `json:"snapshots"`
	KeyChanges  []KeyChange `json:"key_changes"`
	Narrative   string      `json:"narrative"`
	Timings     Timings     `json:"timings"`
	Errors      []string    `json:"errors"`
	CallbackURL string      `json:"callback_url,omitempty"`
	Webhook     *Webhook    `json:"webhook,omitempty"`
}

// View returns the client-facing form of the job. Errors lists, in a stable
// order, every failure that shaped the outcome. CallbackURL is shown
// without its query, fragment and user info: they may hold the receiver's
// own token, which the view (and the webhook body made of it) must not
// repeat.
func (j *Job) View() View {
	v := View{
		ID:              j.ID,
		Status:          j.Status,
		Question:        j.Spec.Question,
		Model:           j.Spec.Model,
		Complexity:      j.Spec.Complexity,
		ForceTimeTravel: j.Spec.ForceTimeTravel,
		Cache:           j.Spec.Cache,
		Cached:          j.Cached(),
		Warm:            j.Spec.Warm,
		CreatedAt:       j.CreatedAt.UTC(),
		Deadline:        j.Deadline.UTC(),
		Snapshots:       j.Snapshots,
		KeyChanges:      []KeyChange{},
		Timings:         j.Timings(),
		Errors:          []string{},
		Webhook:         j.Webhook,
	}
	if j.Spec.CallbackURL != "" {
		// A URL that does not parse (never one accepted at submission) is
		// not shown at all rather than shown whole.
		if u, err := url.Parse(j.Spec.CallbackURL); err == nil {
			u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
			v.CallbackURL = u.String()
		}
	}
	if !j.FinishedAt.IsZero() {
		f := j.FinishedAt.UTC()
		v.FinishedAt = &f
	}
	if j.Error != "" {
		v.Errors = append(v.Errors, j.Error)
	}
	for _, s := range j.Snapshots {
		if s.Error != "" {
			v.Errors = append(v.Errors, "snapshot "+s.Label+": "+s.Error)
		}
	}
	if a := j.Aggregate; a != nil {
		if a.KeyChanges != nil {
			v.KeyChanges = a.KeyChanges
		}
		v.Narrative = a.Narrative
		if a.KeyChangesError != "" {
			v.Errors = append(v.Errors, "key changes: "+a.KeyChangesError)
		}
		if a.NarrativeError != "" {
			v.Errors = append(v.Errors, "narrative: "+a.NarrativeError)
		}
	}
	return v
}
