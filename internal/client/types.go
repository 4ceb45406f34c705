package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// SubmitRequest is the body of POST /api/time-travel. Only Question is
// required; empty fields are left out so that the API's defaults apply.
type SubmitRequest struct {
	Question        string      `json:"question"`
	TimePoints      []TimePoint `json:"time_points,omitempty"`
	Model           string      `json:"model,omitempty"`
	Complexity      string      `json:"complexity,omitempty"`
	ForceTimeTravel bool        `json:"force_time_travel,omitempty"`
	// Cache is "use" (the default) or "bypass" (skip cache reads).
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

// Accepted is the API's answer to a submission (202 Accepted).
type Accepted struct {
	JobID  string     `json:"job_id"`
	Status job.Status `json:"status"`
	// Joined is set when the request joined an identical job in flight
	// instead of starting one: JobID is that job's.
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

// Links are the API paths of an accepted job, relative to the API root.
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

// JobAcceptedData is the data of job.accepted.
type JobAcceptedData struct {
	JobID      string         `json:"job_id"`
	Question   string         `json:"question"`
	Model      string         `json:"model"`
	Complexity string         `json:"complexity"`
	Deadline   string         `json:"deadline"`
	TimePoints []TimePointRef `json:"time_points"`
}

// SnapshotStartedData is the data of snapshot.started. A later attempt
// replaces the text of earlier attempts of the same index.
type SnapshotStartedData struct {
	Index   int    `json:"index"`
	Date    string `json:"date"`
	Label   string `json:"label"`
	Attempt int    `json:"attempt"`
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

// SnapshotCompletedData is the data of snapshot.completed.
type SnapshotCompletedData struct {
	Index      int    `json:"index"`
	Date       string `json:"date"`
	Label      string `json:"label"`
	Model      string `json:"model"`
	Text       string `json:"text"`
	DurationMS int64  `json:"duration_ms"`
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
	KeyChanges []job.KeyChange `json:"key_changes"`
}

// TextData is the data of narrative.delta and narrative.completed.
type TextData struct {
	Text string `json:"text"`
}

// FailedData is the data of key_changes.failed and narrative.failed.
type FailedData struct {
	Error string `json:"error"`
}

// JobCompletedData is the data of job.completed; Status is the job's final
// status.
type JobCompletedData struct {
	JobID  string     `json:"job_id"`
	Status job.Status `json:"status"`
	Error  string     `json:"error,omitempty"`
}

// WebhookData is the data of webhook.delivered and webhook.failed.
type WebhookData struct {
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
}
