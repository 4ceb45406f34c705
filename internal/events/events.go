// Package events defines a job's event stream: the event names and payloads
// clients receive over SSE, the Redis keys they live in, and a Hub that lets
// any number of SSE clients replay and follow job streams over a fixed number
// of Redis connections.
//
// One Redis Stream per job holds its events in order; the stream entry id is
// the SSE event id, so any api replica can resume any client without gaps or
// duplicates. Writers (the store's scripts) publish the job id on Channel after
// each append; readers wake on it instead of blocking a connection each.
package events

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Event names, as sent in the SSE "event:" field.
const (
	JobAccepted         = "job.accepted"
	SnapshotStarted     = "snapshot.started"
	SnapshotDelta       = "snapshot.delta"
	SnapshotCompleted   = "snapshot.completed"
	SnapshotFailed      = "snapshot.failed"
	KeyChangesCompleted = "key_changes.completed"
	KeyChangesFailed    = "key_changes.failed"
	// AggregateStarted announces an aggregation attempt. An attempt after
	// the first means the one before it died: narrative text before it is
	// void (the narrative is the narrative.delta text after the latest
	// aggregate.started).
	AggregateStarted   = "aggregate.started"
	NarrativeDelta     = "narrative.delta"
	NarrativeCompleted = "narrative.completed"
	NarrativeFailed    = "narrative.failed"
	JobCompleted       = "job.completed"
	// HolderDetached marks, on a shared job's stream, that one of its
	// callers canceled its part (data: {"holder": id}). It is never sent
	// as is: that caller's stream ends there with job.completed
	// (canceled), and the others' streams skip it.
	HolderDetached = "holder.detached"
	// The outcome of the delivery of the job's result to its callback URL;
	// they come after job.completed, so live followers never see them (a
	// replay of an ended job's stream does).
	WebhookDelivered = "webhook.delivered"
	WebhookFailed    = "webhook.failed"
)

// Channel is the Pub/Sub channel on which writers announce "job <id> has new
// events"; the message is the job id.
const Channel = "tt:events"

// StreamKey is the Redis Stream of a job's events. The hash tag keeps all of
// a job's keys in one Redis Cluster slot.
func StreamKey(jobID string) string { return "tt:{" + jobID + "}:events" }

// Event is one entry of a job's stream.
type Event struct {
	// ID is the stream entry id ("<ms>-<seq>"), used as the SSE id.
	ID string
	// Type is one of the event names above.
	Type string
	// Data is the JSON payload.
	Data json.RawMessage
}

// Terminal reports whether e ends its stream.
func (e Event) Terminal() bool { return e.Type == JobCompleted }

var idPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ValidID reports whether s has the form of a stream entry id, as a
// Last-Event-ID must.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Payloads. Field names are part of the public contract (docs/api.md).

// TimePointRef names a time point in event payloads.
type TimePointRef struct {
	Index int    `json:"index"`
	Date  string `json:"date"`
	Label string `json:"label"`
}

// AcceptedData is the payload of job.accepted.
type AcceptedData struct {
	JobID      string         `json:"job_id"`
	Question   string         `json:"question"`
	Model      string         `json:"model,omitempty"`
	Complexity string         `json:"complexity"`
	Deadline   string         `json:"deadline"`
	TimePoints []TimePointRef `json:"time_points"`
	// Cached is set when the whole job is served from the caches: its
	// events follow at once.
	Cached bool `json:"cached,omitempty"`
}

// SnapshotStartedData is the payload of snapshot.started. Attempt counts
// the deliveries of the snapshot's task (0 for a cached answer).
type SnapshotStartedData struct {
	Index   int    `json:"index"`
	Date    string `json:"date"`
	Label   string `json:"label"`
	Attempt int    `json:"attempt"`
	Cached  bool   `json:"cached,omitempty"`
}

// SnapshotCompletedData is the payload of snapshot.completed.
type SnapshotCompletedData struct {
	Index      int    `json:"index"`
	Date       string `json:"date"`
	Label      string `json:"label"`
	Model      string `json:"model,omitempty"`
	Text       string `json:"text"`
	DurationMS int64  `json:"duration_ms"`
	// Cached is set when the answer came from the snapshot cache.
	Cached bool `json:"cached,omitempty"`
}

// KeyChangesData is the payload of key_changes.completed.
type KeyChangesData struct {
	KeyChanges []job.KeyChange `json:"key_changes"`
	Cached     bool            `json:"cached,omitempty"`
}

// AggregateStartedData is the payload of aggregate.started.
type AggregateStartedData struct {
	Attempt int `json:"attempt"`
}

// NarrativeData is the payload of narrative.completed.
type NarrativeData struct {
	Text   string `json:"text"`
	Cached bool   `json:"cached,omitempty"`
}

// DeltaData is the payload of snapshot.delta (with Index) and
// narrative.delta (without).
type DeltaData struct {
	Index *int   `json:"index,omitempty"`
	Text  string `json:"text"`
}

// ErrorData is the payload of the *.failed events.
type ErrorData struct {
	Error string `json:"error"`
}

// CompletedData is the payload of job.completed.
type CompletedData struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Cached is set when the whole job was served from the caches.
	Cached bool `json:"cached,omitempty"`
}

// WebhookData is the payload of webhook.delivered and webhook.failed.
type WebhookData struct {
	// WebhookID is the webhook-id header of every attempt: msg_<job id>.
	WebhookID  string `json:"webhook_id"`
	Attempts   int    `json:"attempts"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
}

// HolderData is the payload of holder.detached.
type HolderData struct {
	Holder string `json:"holder"`
}

// Before reports whether event id a comes before b in a stream (both
// valid ids, see ValidID).
func Before(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return am < bm
	}
	return as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}
