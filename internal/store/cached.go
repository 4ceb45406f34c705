package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// A job served wholly from the answer caches is stored by reference: the
// same question asked again and again, each time answered from the caches,
// must not cost a full copy of its answers per request (a copy in the job's
// hash and two more in its event stream). What such jobs show is kept once
// per distinct content, in a result record shared by every job that shows
// it; the job's own hash keeps only what is particular to it and names the
// record in its field "ref". It has no event stream: its events are made
// again on every read (Events), with the very function that makes them for
// a job stored in full, so that the two forms cannot differ.
//
// A result record lives at least as long as every job that names it: each
// job that comes to name it, and each pending webhook attempt of such a job
// (which keeps the job longer, RecordWebhook), pushes its expiry past the
// job's by resultSlack. Its key is not in the job's cluster slot, so it is
// written before the job, by a command of its own.

// resultSlack is how much longer than the jobs naming it, at least, a
// result record is kept: more than the time between pushing its expiry and
// setting the job's.
const resultSlack = time.Minute

// ResultKey is the Redis key of the result record whose digest is ref.
func ResultKey(ref string) string { return "tt:result:" + ref }

// result is what a job served wholly from the caches shows, less what is
// particular to the job: its question, the fields its kind adds to
// job.accepted, each member's answer and their result (StartedAt zero: it
// is the job's, in its field "agg_started"). Its JSON is the record; the
// record's key is its digest.
type result struct {
	Question string          `json:"question"`
	Accepted json.RawMessage `json:"accepted,omitempty"`
	Members  []resultMember  `json:"members"`
	Result   job.Result      `json:"result"`
}

type resultMember struct {
	Index int               `json:"index"`
	Label string            `json:"label"`
	Ref   map[string]string `json:"ref,omitempty"`
	Model string            `json:"model,omitempty"`
	Text  string            `json:"text"`
}

// compactResult returns the shared part of j when j can be stored by
// reference without losing anything a reader of the job would see: it has
// ended with its result, everything came from the caches, and its members
// started and completed when it was created (as the intake makes such
// jobs). Any other job is stored in full. acc is j's Accepted as stored
// (normalAccepted).
func compactResult(j *job.Job, acc json.RawMessage) (*result, bool) {
	n := len(j.Members)
	if !j.Status.Terminal() || j.Result == nil || n == 0 || !j.Cached() {
		return nil, false
	}
	created := j.CreatedAt.UnixMilli()
	r := &result{Question: j.Spec.Question, Accepted: acc, Members: make([]resultMember, n), Result: *j.Result}
	r.Result.StartedAt = 0
	for i, m := range j.Members {
		if m.Status != job.MemberCompleted || m.StartedAt != created || m.CompletedAt != created {
			return nil, false
		}
		// The index is the member's place, as Create stores it.
		r.Members[i] = resultMember{Index: i, Label: m.Label, Ref: m.Ref, Model: m.Model, Text: m.Text}
	}
	return r, true
}

// createRef stores j, which ended wholly cached, by reference to r (see
// compactResult). It returns the id of its first event, job.accepted.
func (s *Store) createRef(ctx context.Context, j *job.Job, r *result) (string, error) {
	blob, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode result: %w", err)
	}
	sum := sha256.Sum256(blob)
	ref := hex.EncodeToString(sum[:])
	spec := j.Spec
	spec.Question = "" // in the result
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	// Ended: kept for the retention, as a job stored in full.
	ttl := s.retention
	if err := s.keepResult(ctx, ref, blob, ttl+resultSlack); err != nil {
		return "", fmt.Errorf("create job %s: %w", j.ID, err)
	}
	n := len(j.Members)
	fields := []any{
		"spec", string(specJSON),
		"noun", string(nounOf(j)),
		"status", string(j.Status),
		"created", j.CreatedAt.UnixMilli(),
		"deadline", j.Deadline.UnixMilli(),
		"finished", j.FinishedAt.UnixMilli(),
		"error", j.Error,
		"n", n,
		"done", n,
		"ref", ref,
	}
	if ms := j.Result.StartedAt; ms != 0 {
		fields = append(fields, "agg_started", ms)
	}
	if j.Fingerprint != "" {
		fields = append(fields, "fp", j.Fingerprint)
	}
	if j.Spec.Owner != "" {
		fields = append(fields, "owner", j.Spec.Owner)
	}
	// No events: the script then writes no stream, and answers nil.
	args := append([]any{events.Channel, j.ID, ttl.Milliseconds(), 0}, fields...)
	err = createScript.Run(ctx, s.rdb, keys(j.ID), args...).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		if strings.Contains(err.Error(), "EXISTS") {
			return "", ErrExists
		}
		return "", fmt.Errorf("create job %s: %w", j.ID, err)
	}
	return eventID(j.CreatedAt.UnixMilli(), 0), nil
}

// touchResultScript: KEYS[1] a result record, ARGV[1] ms. Makes the record
// live at least ARGV[1] ms from now, never shorter than it would have.
// Returns 0 when there is no such record.
var touchResultScript = redis.NewScript(`
local t = redis.call('PTTL', KEYS[1])
if t == -2 then return 0 end
if t >= 0 and t < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`)

// keepResult makes the result record ref (blob) exist for at least ttl:
// it is written when absent, and only then, so that the many jobs showing
// one result cost it once.
func (s *Store) keepResult(ctx context.Context, ref string, blob []byte, ttl time.Duration) error {
	key := ResultKey(ref)
	for range 2 {
		ok, err := touchResultScript.Run(ctx, s.rdb, []string{key}, ttl.Milliseconds()).Int()
		if err != nil {
			return fmt.Errorf("keep result %s: %w", ref, err)
		}
		if ok == 1 {
			return nil
		}
		set, err := s.rdb.SetNX(ctx, key, blob, ttl).Result()
		if err != nil {
			return fmt.Errorf("write result %s: %w", ref, err)
		}
		if set {
			return nil
		}
		// Written by another job between the two commands: push its
		// expiry as for any existing record.
	}
	return fmt.Errorf("keep result %s: it keeps vanishing", ref)
}

// touchResultOf pushes the expiry of the result record named by jobID, if
// it is stored by reference, to at least ttl from now. A job stored in
// full, or gone, is left to the caller.
func (s *Store) touchResultOf(ctx context.Context, jobID string, ttl time.Duration) error {
	ref, err := s.rdb.HGet(ctx, JobKey(jobID), "ref").Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read result of job %s: %w", jobID, err)
	}
	if err := touchResultScript.Run(ctx, s.rdb, []string{ResultKey(ref)}, ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("keep result %s of job %s: %w", ref, jobID, err)
	}
	return nil
}

// decode is decodeJob with the result record of a job stored by
// reference read. A missing record is an error: the job is never returned
// without the answers it has.
func (s *Store) decode(ctx context.Context, jobID string, h map[string]string) (*job.Job, error) {
	ref := h["ref"]
	if ref == "" {
		return decodeJob(jobID, h, nil)
	}
	var blob []byte
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		blob, err = s.rdb.Get(ctx, ResultKey(ref)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read job %s: its result %s is missing", jobID, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("read result %s of job %s: %w", ref, jobID, err)
	}
	r := &result{}
	if err := json.Unmarshal(blob, r); err != nil {
		return nil, fmt.Errorf("decode result %s of job %s: %w", ref, jobID, err)
	}
	return decodeJob(jobID, h, r)
}

// applyResult gives j, decoded from the hash of a job stored by
// reference, what the record r keeps for it: the job as it was given to
// Create, as a job stored in full reads.
func applyResult(j *job.Job, h map[string]string, r *result) error {
	if len(r.Members) != len(j.Members) {
		return fmt.Errorf("decode job %s: its result has %d members, the job %d", j.ID, len(r.Members), len(j.Members))
	}
	j.Spec.Question = r.Question
	j.Accepted = r.Accepted
	created := j.CreatedAt.UnixMilli()
	for i, rm := range r.Members {
		j.Members[i] = job.Member{
			Index: rm.Index, Label: rm.Label, Ref: rm.Ref, Status: job.MemberCompleted,
			Text: rm.Text, Model: rm.Model, Cached: true, StartedAt: created, CompletedAt: created,
		}
	}
	res := r.Result
	res.StartedAt, _ = strconv.ParseInt(h["agg_started"], 10, 64)
	j.Result = &res
	return nil
}

// createdEvents returns the events Create appends for j (as stored: its
// stored status and members, its noun and Accepted as stored), in order:
// job.accepted (events.AcceptedPayload: the common fields, kind
// j.Spec.Kind, expected_wait_ms when j.ExpectedWait is known, and
// j.Accepted); for each completed member <noun>.started
// (identity, attempt 0, cached), one <noun>.delta with the whole text and
// <noun>.completed (identity, model, text, duration_ms 0, cached); for an
// ended job, the events of each part of its result in order when it has
// one (a structured part: <part>.completed {<part>: value}; a streamed
// part: <part>.delta {text}, then <part>.completed {text}; both with the
// result's cached; a failed part: <part>.failed {error}), and
// job.completed. cached is whether the whole job was served from the
// caches. Events makes the events of a job stored by reference with it, so
// they are the events the job would have had stored in full. IDs are left
// empty.
func createdEvents(j *job.Job, cached bool) ([]events.Event, error) {
	var evs []events.Event
	add := func(typ string, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("encode %s: %w", typ, err)
		}
		evs = append(evs, events.Event{Type: typ, Data: b})
		return nil
	}
	common := events.AcceptedData{
		JobID: j.ID, Kind: j.Spec.Kind, Question: j.Spec.Question, Model: j.Spec.Model,
		Deadline: j.Deadline.UTC().Format(time.RFC3339Nano), Cached: cached,
	}
	if w := j.ExpectedWait; w != nil {
		ms := max(w.Milliseconds(), 0)
		common.ExpectedWaitMS = &ms
	}
	acc, err := events.AcceptedPayload(common, j.Accepted)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", j.ID, err)
	}
	evs = append(evs, events.Event{Type: events.JobAccepted, Data: acc})
	noun := nounOf(j)
	member := func(typ string, m job.Member, data any) error {
		b, err := events.MemberPayload(m, data)
		if err != nil {
			return fmt.Errorf("encode %s: %w", typ, err)
		}
		evs = append(evs, events.Event{Type: typ, Data: b})
		return nil
	}
	for _, m := range j.Members {
		if m.Status != job.MemberCompleted {
			continue
		}
		started, completed := events.MemberEvent(noun, events.VerbStarted), events.MemberEvent(noun, events.VerbCompleted)
		err = errors.Join(
			member(started, m, events.MemberStartedData{Attempt: 0, Cached: m.Cached}),
			add(events.MemberEvent(noun, events.VerbDelta), events.MemberDeltaData{Index: m.Index, Text: m.Text}),
			member(completed, m, events.MemberCompletedData{Model: m.Model, Text: m.Text, DurationMS: 0, Cached: m.Cached}))
		if err != nil {
			return nil, err
		}
	}
	if !j.Status.Terminal() {
		return evs, nil
	}
	if r := j.Result; r != nil {
		for _, p := range r.Parts {
			if p.Error == "" && p.Value == nil {
				if err := add(events.PartEvent(p.Name, events.VerbDelta), events.PartDeltaData{Text: p.Text}); err != nil {
					return nil, err
				}
			}
			verb, data := partTerminal(p, r.Cached)
			if err := add(events.PartEvent(p.Name, verb), data); err != nil {
				return nil, err
			}
		}
	}
	if err := add(events.JobCompleted, events.CompletedData{JobID: j.ID, Status: string(j.Status), Error: j.Error, Cached: cached}); err != nil {
		return nil, err
	}
	return evs, nil
}

// webhookEvent is how the webhook event of a job stored by reference is
// kept (field "wev", written by webhookAttemptScript): the job has no
// stream to append it to.
type webhookEvent struct {
	Type string `json:"t"`
	Data string `json:"d"`
	// MS is when it was recorded (Unix ms).
	MS int64 `json:"ms"`
}

// Events returns jobID's events after the event id after (all when empty),
// in order, as a client replaying the job's stream gets them; nothing for a
// job that does not exist. For a job stored in full they are the entries of
// its stream (events.Read). A job stored by reference (served wholly from
// the caches) has the events Create appends for a job stored in full, with
// the same types and data, ids <created ms>-0, <created ms>-1, ... in
// order, then its webhook event, and any entry of its stream: every id is
// above those before it, so that a client resuming after any of them gets
// exactly the events after it.
func (s *Store) Events(ctx context.Context, jobID, after string) ([]events.Event, error) {
	var floor eventPos
	if after != "" {
		var ok bool
		if floor, ok = parseEventID(after); !ok {
			return nil, fmt.Errorf("read events of job %s: %q is not an event id", jobID, after)
		}
	}
	if err := s.rdb.HGet(ctx, JobKey(jobID), "ref").Err(); errors.Is(err, redis.Nil) {
		return events.Read(ctx, s.rdb, jobID, after)
	} else if err != nil {
		return nil, fmt.Errorf("read events of job %s: %w", jobID, err)
	}
	h, err := s.hash(ctx, jobID)
	if errors.Is(err, ErrNotFound) {
		return []events.Event{}, nil // expired since
	}
	if err != nil {
		return nil, err
	}
	j, err := s.decode(ctx, jobID, h)
	if err != nil {
		return nil, err
	}
	evs, err := createdEvents(j, j.Cached())
	if err != nil {
		return nil, err
	}
	created := j.CreatedAt.UnixMilli()
	for i := range evs {
		evs[i].ID = eventID(created, int64(i))
	}
	if raw := h["wev"]; raw != "" {
		var w webhookEvent
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("decode webhook event of job %s: %w", jobID, err)
		}
		// After the made events, by its time when the clocks allow it.
		id := eventID(created, int64(len(evs)))
		if w.MS > created {
			id = eventID(w.MS, 0)
		}
		evs = append(evs, events.Event{ID: id, Type: w.Type, Data: json.RawMessage(w.Data)})
	}
	stream, err := events.Read(ctx, s.rdb, jobID, "")
	if err != nil {
		return nil, err
	}
	evs = append(evs, stream...)
	pos := func(e events.Event) eventPos { p, _ := parseEventID(e.ID); return p }
	slices.SortStableFunc(evs, func(a, b events.Event) int { return pos(a).compare(pos(b)) })
	out := make([]events.Event, 0, len(evs))
	for _, e := range evs {
		if after == "" || pos(e).compare(floor) > 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

// eventPos is a stream entry id, <ms>-<seq>, as numbers.
type eventPos struct{ ms, seq uint64 }

func (p eventPos) compare(q eventPos) int {
	if c := cmp.Compare(p.ms, q.ms); c != 0 {
		return c
	}
	return cmp.Compare(p.seq, q.seq)
}

func parseEventID(id string) (eventPos, bool) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return eventPos{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return eventPos{ms, seq}, err1 == nil && err2 == nil
}

func eventID(ms, seq int64) string {
	return strconv.FormatInt(ms, 10) + "-" + strconv.FormatInt(seq, 10)
}

// LastEventID returns the id of the last entry of a job's stream; empty
// when it has none (or the job is stored by reference: see Events).
func (s *Store) LastEventID(ctx context.Context, jobID string) (string, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, events.StreamKey(jobID), "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("read the last event of job %s: %w", jobID, err)
	}
	if len(msgs) == 0 {
		return "", nil
	}
	return msgs[0].ID, nil
}
