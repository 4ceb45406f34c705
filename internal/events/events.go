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
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Event names, as sent in the SSE "event:" field: the fixed ones below,
// whatever the job's kind, and those of its members and of the parts of
// its aggregation (MemberEvent, PartEvent).
const (
	JobAccepted = "job.accepted"
	// AggregateStarted announces an aggregation attempt. An attempt after
	// the first means the one before it died: the streamed text of its
	// parts before it is void (a streamed part's text is the <part>.delta
	// text after the latest aggregate.started).
	AggregateStarted = "aggregate.started"
	JobCompleted     = "job.completed"
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

// Verbs of the events of members and of parts.
const (
	// VerbStarted: a member's attempt began (<noun>.started).
	VerbStarted = "started"
	// VerbDelta: text of a member's answer or of a streamed part.
	VerbDelta = "delta"
	// VerbCompleted: a member's answer or a part is complete.
	VerbCompleted = "completed"
	// VerbFailed: a member or a part failed for good.
	VerbFailed = "failed"
)

// MemberEvent is the name of a member event of a job whose kind calls its
// members noun: <noun>.<verb> ("snapshot.started"). Payloads (see
// Catalog): started carries the member's identity (MemberIdentity and the
// kind's Ref fields) and MemberStartedData; delta MemberDeltaData;
// completed the identity and MemberCompletedData; failed the identity and
// ErrorData.
func MemberEvent(noun job.Noun, verb string) string { return string(noun) + "." + verb }

// PartEvent is the name of an event of the aggregation part part:
// <part>.<verb> ("narrative.delta"). Payloads (see Catalog): a streamed
// part's delta PartDeltaData and completed PartTextData, a structured
// part's completed {<part>: value} (PartValueData), both completed with
// cached:true when from the result cache; failed ErrorData.
func PartEvent(part, verb string) string { return part + "." + verb }

// Channel is the Pub/Sub channel on which writers announce "job <id> has new
// events": the message is the job id, or an announcement that carries the
// new event itself (see ParseAnnouncement).
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

// Payloads. Field names are part of the public contract (docs/api.md);
// Catalog lists which event has which (catalog.go has the rest).

// AcceptedData is the part of the payload of job.accepted that every kind
// has; the kind adds its own fields (AcceptedPayload).
type AcceptedData struct {
	JobID    string `json:"job_id"`
	Kind     string `json:"kind"`
	Question string `json:"question"`
	Model    string `json:"model,omitempty"`
	Deadline string `json:"deadline"`
	// ExpectedWaitMS is how long the api expected the job's member calls
	// to wait for provider capacity when it accepted the job (the last of
	// them to start; 0: no wait). Absent when it could not tell, and for
	// jobs that queue no member call of their own (served from the
	// caches, joined, warming).
	ExpectedWaitMS *int64 `json:"expected_wait_ms,omitempty"`
	// Cached is set when the whole job is served from the caches: its
	// events follow at once.
	Cached bool `json:"cached,omitempty"`
}

// AcceptedPayload returns the payload of job.accepted: common with the
// fields of extra (a JSON object, the job's job.Job.Accepted; empty or
// null adds nothing) beside its own. A field of extra named like one of
// common's is dropped: the common fields mean the same for every kind.
func AcceptedPayload(common AcceptedData, extra json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(common)
	if err != nil {
		return nil, fmt.Errorf("encode job.accepted: %w", err)
	}
	if len(bytes.TrimSpace(extra)) == 0 || bytes.Equal(bytes.TrimSpace(extra), []byte("null")) {
		return b, nil
	}
	var o, e map[string]json.RawMessage
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("encode job.accepted: %w", err)
	}
	if err := json.Unmarshal(extra, &e); err != nil {
		return nil, fmt.Errorf("encode job.accepted: the kind's fields are not a JSON object: %w", err)
	}
	for k, v := range e {
		if _, taken := o[k]; !taken {
			o[k] = v
		}
	}
	return json.Marshal(o)
}

// AggregateStartedData is the payload of aggregate.started.
type AggregateStartedData struct {
	Attempt int `json:"attempt"`
}

// DeltaData decodes both <noun>.delta (with Index) and a streamed part's
// <part>.delta (without), for readers of any delta; writers use
// MemberDeltaData and PartDeltaData.
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

// WebhookData decodes both webhook.delivered and webhook.failed, for
// readers of either; their payloads are WebhookDeliveredData and
// WebhookFailedData.
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
