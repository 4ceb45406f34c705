// Package store keeps jobs of every kind in Redis: the job record, its
// members and result, and the fan-in bookkeeping that tells the last member
// it was the last. Each change is atomic with the event that announces it
// on the job's stream (see package events), so that retries and duplicate
// deliveries of a task count once and a finished job never changes again.
// The store knows no kind: it names member events by the job's noun and
// builds their payloads from the members' identities (job.Member.RefData),
// and the parts' events from job.Part (structured: a Value; streamed: Text).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/redisx"
)

// Errors that tell callers why a step did not apply.
var (
	// ErrNotFound: no such job (never created, or expired).
	ErrNotFound = errors.New("job not found")
	// ErrExists: a job with that id exists already.
	ErrExists = errors.New("job exists already")
	// ErrClosed: the job no longer accepts this step (it is aggregating or
	// has ended). The caller should stop its work quietly.
	ErrClosed = errors.New("job no longer accepts this step")
	// ErrStale: another attempt has taken over this piece of work.
	ErrStale = errors.New("superseded by a newer attempt")
	// ErrMemberDone: the member already has its final outcome.
	ErrMemberDone = errors.New("member already done")
)

// Store reads and writes jobs. It is safe for concurrent use.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	now       func() time.Time
	// patient: writes wait out an unavailable Redis (see Patient).
	patient bool
}

// New returns a Store on rdb; finished jobs are kept for retention.
func New(rdb redis.UniversalClient, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention, now: time.Now}
}

// Patient returns a Store on the same Redis whose writes wait out an
// unavailable Redis (redisx.Retry) until their context ends, instead of
// failing at once: work in a worker then resumes when Redis is back, and a
// Redis outage never shows as the failure of the work. Every write is safe
// to repeat after a lost reply: the scripts are idempotent for the claim's
// owner, text deltas carry sequence numbers, and terminal events are
// recorded once. Request handlers keep the impatient Store, and answer 503.
func (s *Store) Patient() *Store {
	c := *s
	c.patient = true
	return &c
}

// do runs op once, or, when the store is patient, until Redis is
// reachable (redisx.Retry).
func (s *Store) do(ctx context.Context, op func(context.Context) error) error {
	if !s.patient {
		return op(ctx)
	}
	return redisx.Retry(ctx, op)
}

// run runs a script (see do).
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) ([]any, error) {
	var res []any
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		res, err = sc.Run(ctx, s.rdb, keys, args...).Slice()
		return err
	})
	return res, err
}

// DeadlinesKey is the sorted set of the jobs that have not ended, scored by
// their deadline (Unix ms): the deadline watchdog ends those past it.
const DeadlinesKey = "tt:deadlines"

// Deadline is a job's deadline as the watchdog's set holds it.
type Deadline struct {
	JobID string
	At    time.Time
}

// EarliestDeadlines returns the limit earliest deadlines of the jobs that
// have not ended or been forgotten (ForgetDeadline), earliest first, due or
// not: in one read, the watchdog learns both what to end now and how long
// it may sleep.
func (s *Store) EarliestDeadlines(ctx context.Context, limit int) ([]Deadline, error) {
	if limit <= 0 {
		return nil, nil // ZRANGE 0 -1 would read the whole set
	}
	zs, err := s.rdb.ZRangeWithScores(ctx, DeadlinesKey, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("read the earliest deadlines: %w", err)
	}
	out := make([]Deadline, 0, len(zs))
	for _, z := range zs {
		id, ok := z.Member.(string)
		if !ok {
			continue
		}
		out = append(out, Deadline{JobID: id, At: time.UnixMilli(int64(z.Score))})
	}
	return out, nil
}

// ForgetDeadline removes jobID from the watchdog's set; ended jobs are
// removed by Finish.
func (s *Store) ForgetDeadline(ctx context.Context, jobID string) error {
	return s.rdb.ZRem(ctx, DeadlinesKey, jobID).Err()
}

// Redis returns the client the store uses.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// ClosedChannel is the Pub/Sub channel on which the store announces that a
// job stopped taking member work (aggregation began) or ended; the message
// is the job id. Workers listen on it to stop work that became useless.
const ClosedChannel = "tt:closed"

// JobKey is the Redis hash of a job. It shares its hash tag with the job's
// event stream.
func JobKey(jobID string) string { return "tt:{" + jobID + "}:job" }

func keys(jobID string) []string { return []string{JobKey(jobID), events.StreamKey(jobID)} }

// Create stores a new job and appends job.accepted (its common fields,
// with expected_wait_ms when j.ExpectedWait is set, and j.Accepted, the
// kind's). The job's members are j.Members, in order (a
// member's index is its place), each named by its Label and Ref; the job's
// noun j.Noun ("snapshot" when empty) names their events. Members the job comes with as completed (answered from the
// cache) are stored done, each announced like a worker's: <noun>.started,
// one <noun>.delta with the whole text, <noun>.completed; the others are
// stored pending. A job that comes with a terminal status and its result
// (served wholly from the caches) is stored ended, with the events of each
// part of its result and job.completed, and kept for the retention; a job
// that has not ended expires after its deadline plus the retention unless
// it finishes (which restarts the retention clock).
//
// A job served wholly from the caches is stored by reference to one
// shared copy of what it shows (see ResultKey), with no event stream: Get
// and Events return it as if it were stored in full, but for its
// job.accepted deadline, which has the millisecond precision of the
// stored job.
func (s *Store) Create(ctx context.Context, j *job.Job) (string, error) {
	return s.create(ctx, j, true)
}

// defaultNoun is the noun of a job stored without one: a time-travel job
// stored before jobs had kinds.
const defaultNoun job.Noun = "snapshot"

func nounOf(j *job.Job) job.Noun {
	if j.Noun == "" {
		return defaultNoun
	}
	return j.Noun
}

// normalAccepted returns j's Accepted as the store keeps it (compact JSON,
// as encoding/json writes it), or nil when it has none.
func normalAccepted(j *job.Job) (json.RawMessage, error) {
	if len(j.Accepted) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(j.Accepted)
	if err != nil {
		return nil, fmt.Errorf("encode the accepted fields of job %s: %w", j.ID, err)
	}
	return b, nil
}

// create is Create; compact false stores a job served wholly from the
// caches in full too.
func (s *Store) create(ctx context.Context, j *job.Job, compact bool) (string, error) {
	acc, err := normalAccepted(j)
	if err != nil {
		return "", err
	}
	if r, ok := compactResult(j, acc); ok && compact {
		return s.createRef(ctx, j, r)
	}
	spec, err := json.Marshal(j.Spec)
	if err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	n := len(j.Members)
	status := job.StatusQueued
	if j.Status.Terminal() {
		status = j.Status
	}
	noun := nounOf(j)
	fields := []any{
		"spec", string(spec),
		"noun", string(noun),
		"status", string(status),
		"created", j.CreatedAt.UnixMilli(),
		"deadline", j.Deadline.UnixMilli(),
		"n", n,
	}
	if acc != nil {
		fields = append(fields, "acc", string(acc))
	}
	if j.Fingerprint != "" {
		fields = append(fields, "fp", j.Fingerprint)
	}
	if j.Spec.Owner != "" {
		fields = append(fields, "owner", j.Spec.Owner)
	}
	done := 0
	stored := make([]job.Member, n)
	for i, c := range j.Members {
		m := job.Member{Index: i, Label: c.Label, Ref: c.Ref, Status: job.MemberPending}
		if c.Status == job.MemberCompleted {
			m.Status, m.Text, m.Model, m.Cached = job.MemberCompleted, c.Text, c.Model, c.Cached
			m.StartedAt, m.CompletedAt = c.StartedAt, c.CompletedAt
			done++
		}
		stored[i] = m
		b, err := encodeMember(m)
		if err != nil {
			return "", fmt.Errorf("encode member %d of job %s: %w", i, j.ID, err)
		}
		fields = append(fields, "s:"+strconv.Itoa(i), string(b))
	}
	fields = append(fields, "done", done)
	ttl := time.Until(j.Deadline) + s.retention
	if status.Terminal() {
		ttl = s.retention
		fields = append(fields, "finished", j.FinishedAt.UnixMilli(), "error", j.Error)
		if r := j.Result; r != nil {
			b, err := json.Marshal(r)
			if err != nil {
				return "", fmt.Errorf("encode result: %w", err)
			}
			fields = append(fields, "agg", string(b))
		}
	}
	evs, err := createdEvents(&job.Job{
		ID: j.ID, Spec: j.Spec, Noun: noun, Status: status, Deadline: j.Deadline, Members: stored, Result: j.Result,
		Error: j.Error, Accepted: acc, ExpectedWait: j.ExpectedWait,
	}, j.Cached())
	if err != nil {
		return "", err
	}
	args := []any{events.Channel, j.ID, ttl.Milliseconds(), len(evs)}
	for _, e := range evs {
		args = append(args, e.Type, string(e.Data))
	}
	args = append(args, fields...)
	id, err := createScript.Run(ctx, s.rdb, keys(j.ID), args...).Text()
	if err != nil {
		if strings.Contains(err.Error(), "EXISTS") {
			return "", ErrExists
		}
		return "", fmt.Errorf("create job %s: %w", j.ID, err)
	}
	if !status.Terminal() {
		// Outside the script: the set is not in the job's cluster slot. The
		// job exists now, so a failure here is not the caller's: a job
		// whose entry is lost still ends by its aggregation task, only
		// without the watchdog's second guarantee.
		_ = s.rdb.ZAdd(ctx, DeadlinesKey, redis.Z{Score: float64(j.Deadline.UnixMilli()), Member: j.ID}).Err()
	}
	return id, nil
}

// memberRecord is how a member is stored (field s:<i>): its identity as
// its events carry it (Ref: job.Member.RefData, an object of index, label
// and the kind's fields), from which the scripts build the member's event
// payloads whatever the kind, and its state. A record stored before
// members had an identity of their own has no "ref": its identity is its
// fields that are not state (job.Member's JSON).
type memberRecord struct {
	Ref         json.RawMessage  `json:"ref,omitempty"`
	Status      job.MemberStatus `json:"status"`
	Text        string           `json:"text,omitempty"`
	Model       string           `json:"model,omitempty"`
	Attempts    int              `json:"attempts"`
	LLMAttempts int              `json:"llm_attempts,omitempty"`
	Error       string           `json:"error,omitempty"`
	StartedAt   int64            `json:"started_at_ms,omitempty"`
	CompletedAt int64            `json:"completed_at_ms,omitempty"`
	Cached      bool             `json:"cached,omitempty"`
}

func encodeMember(m job.Member) ([]byte, error) {
	ref, err := json.Marshal(m.RefData())
	if err != nil {
		return nil, err
	}
	return json.Marshal(memberRecord{
		Ref: ref, Status: m.Status, Text: m.Text, Model: m.Model, Attempts: m.Attempts, LLMAttempts: m.LLMAttempts,
		Error: m.Error, StartedAt: m.StartedAt, CompletedAt: m.CompletedAt, Cached: m.Cached,
	})
}

func decodeMember(raw []byte) (job.Member, error) {
	var r memberRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return job.Member{}, err
	}
	var m job.Member
	if len(r.Ref) == 0 {
		err := json.Unmarshal(raw, &m)
		return m, err
	}
	if err := json.Unmarshal(r.Ref, &m); err != nil {
		return job.Member{}, fmt.Errorf("its identity: %w", err)
	}
	m.Status, m.Text, m.Model, m.Attempts, m.LLMAttempts = r.Status, r.Text, r.Model, r.Attempts, r.LLMAttempts
	m.Error, m.StartedAt, m.CompletedAt, m.Cached = r.Error, r.StartedAt, r.CompletedAt, r.Cached
	return m, nil
}

// Get returns the job, or ErrNotFound.
func (s *Store) Get(ctx context.Context, jobID string) (*job.Job, error) {
	h, err := s.hash(ctx, jobID)
	if err != nil {
		return nil, err
	}
	return s.decode(ctx, jobID, h)
}

func (s *Store) hash(ctx context.Context, jobID string) (map[string]string, error) {
	var h map[string]string
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		h, err = s.rdb.HGetAll(ctx, JobKey(jobID)).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", jobID, err)
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	return h, nil
}

// Status returns the job's status, or ErrNotFound.
func (s *Store) Status(ctx context.Context, jobID string) (job.Status, error) {
	st, err := s.rdb.HGet(ctx, JobKey(jobID), "status").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read status of job %s: %w", jobID, err)
	}
	return job.Status(st), nil
}

// decodeJob decodes the hash h of job id; r is the result record it names
// when it is stored by reference (see decode), and nil otherwise.
func decodeJob(id string, h map[string]string, r *result) (*job.Job, error) {
	j := &job.Job{ID: id, Status: job.Status(h["status"]), Noun: job.Noun(h["noun"])}
	if j.Noun == "" {
		j.Noun = defaultNoun
	}
	if acc := h["acc"]; acc != "" {
		j.Accepted = json.RawMessage(acc)
	}
	if err := json.Unmarshal([]byte(h["spec"]), &j.Spec); err != nil {
		return nil, fmt.Errorf("decode job %s spec: %w", id, err)
	}
	j.CreatedAt = msTime(h["created"])
	j.Deadline = msTime(h["deadline"])
	j.FinishedAt = msTime(h["finished"])
	j.Error = h["error"]
	j.Fingerprint = h["fp"]
	j.Of = h["of"]
	j.Detached = decodeDetached(h)
	n, _ := strconv.Atoi(h["n"])
	j.Members = make([]job.Member, n)
	for i := 0; i < n && r == nil; i++ { // by reference: applyResult
		m, err := decodeMember([]byte(h["s:"+strconv.Itoa(i)]))
		if err != nil {
			return nil, fmt.Errorf("decode job %s member %d: %w", id, i, err)
		}
		j.Members[i] = m
	}
	// The result as the job ended with it, or, while it aggregates, when
	// its aggregation began; a result that does not say when it began
	// began when the job moved to aggregating.
	started, _ := strconv.ParseInt(h["agg_started"], 10, 64)
	if raw := h["agg"]; raw != "" {
		j.Result = &job.Result{}
		if err := json.Unmarshal([]byte(raw), j.Result); err != nil {
			return nil, fmt.Errorf("decode job %s result: %w", id, err)
		}
		if j.Result.StartedAt == 0 {
			j.Result.StartedAt = started
		}
	} else if started != 0 {
		j.Result = &job.Result{StartedAt: started}
	}
	if r != nil {
		if err := applyResult(j, h, r); err != nil {
			return nil, err
		}
	}
	if raw := h["webhook"]; raw != "" {
		var w webhookRecord
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("decode job %s webhook: %w", id, err)
		}
		j.Webhook = w.state()
	}
	return j, nil
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// FanIn tells how many members of a job have their final outcome.
type FanIn struct {
	Done, Total int
}

// Last reports whether every member is done.
func (f FanIn) Last() bool { return f.Total > 0 && f.Done >= f.Total }

// StartMember claims member index for the attempt owner (a token unique to
// this delivery) and appends <noun>.started (the member's identity and
// attempt). A newer attempt takes over from an older one, whose later
// writes then fail with ErrStale. It returns the attempt number;
// ErrMemberDone with the fan-in state when the member is already done;
// ErrClosed or ErrNotFound when the job takes no more member work.
func (s *Store) StartMember(ctx context.Context, jobID string, index int, owner, model string) (int, FanIn, error) {
	res, err := s.run(ctx, memberStartScript, keys(jobID), events.Channel, jobID, index, owner, s.now().UnixMilli(), model)
	if err != nil {
		return 0, FanIn{}, fmt.Errorf("start member %d of job %s: %w", index, jobID, err)
	}
	switch res[0] {
	case "ok":
		return int(toInt(res, 1)), FanIn{}, nil
	case "done":
		return 0, FanIn{Done: int(toInt(res, 1)), Total: int(toInt(res, 2))}, ErrMemberDone
	}
	return 0, FanIn{}, resultErr(res)
}

// AppendMemberText appends a <noun>.delta {index, text}, if owner still
// owns the member and the job still takes member work. seq numbers the
// owner's deltas from 1: a delta whose number was appended already (a
// retry after a lost reply) is not appended again.
func (s *Store) AppendMemberText(ctx context.Context, jobID string, index int, owner string, seq int, text string) error {
	d, _ := json.Marshal(events.MemberDeltaData{Index: index, Text: text})
	i := strconv.Itoa(index)
	return s.emit(ctx, jobID, ",queued,running,", "o:"+i, owner, "q:"+i, "", events.VerbDelta, d, seq, "", nil)
}

// MemberOutcome is how an attempt at a member ended.
type MemberOutcome struct {
	// Text is the answer when the attempt succeeded.
	Text string
	// Err is the failure; with Retry it is recorded and the member goes
	// back to pending for a later attempt, without it the member fails.
	Err   error
	Retry bool
	// Model is the model that answered (or last failed); empty keeps the
	// one recorded at the start.
	Model string
	// LLMAttempts is the requests this attempt sent; they add up over the
	// member's attempts.
	LLMAttempts int
	// Cached is set when Text came from the member cache.
	Cached bool
}

// FinishMember records the owner attempt's outcome and appends
// <noun>.completed (the member's identity, model, text, duration_ms, and
// cached:true for a cached answer) or <noun>.failed (identity and error);
// a retry appends nothing. Completed and failed count towards fan-in
// exactly once per member, whatever the number of deliveries; the returned
// FanIn tells whether this call made it the last. ErrStale, ErrClosed and
// ErrMemberDone say why nothing was recorded.
func (s *Store) FinishMember(ctx context.Context, jobID string, index int, owner string, out MemberOutcome) (FanIn, error) {
	outcome, errMsg := "completed", ""
	if out.Err != nil {
		outcome, errMsg = "failed", out.Err.Error()
		if out.Retry {
			outcome = "retry"
		}
	}
	cached := ""
	if out.Cached {
		cached = "1"
	}
	res, err := s.run(ctx, memberFinishScript, keys(jobID), events.Channel, jobID, index, owner, outcome,
		s.now().UnixMilli(), out.Text, errMsg, out.Model, out.LLMAttempts, cached)
	if err != nil {
		return FanIn{}, fmt.Errorf("finish member %d of job %s: %w", index, jobID, err)
	}
	switch res[0] {
	case "ok":
		return FanIn{Done: int(toInt(res, 1)), Total: int(toInt(res, 2))}, nil
	case "done":
		return FanIn{Done: int(toInt(res, 1)), Total: int(toInt(res, 2))}, ErrMemberDone
	}
	return FanIn{}, resultErr(res)
}

// Aggregation is a job as an aggregation attempt found it (BeginAggregate).
type Aggregation struct {
	Job *job.Job
	// Attempt counts the aggregation's owners, from 1.
	Attempt int
	// Parts are the records (job.Part JSON) of the parts whose terminal
	// event an earlier attempt appended (EmitPart), by part name: an
	// attempt reuses them instead of calling the model again.
	Parts map[string][]byte
}

// BeginAggregate moves the job to aggregating, which closes it to member
// work, makes owner the author of the aggregation events, and returns the job
// as it then is. A new owner (a redelivered or re-run aggregation) takes
// over and is announced by aggregate.started with its attempt; the same
// owner calling again changes nothing. ErrClosed or ErrNotFound mean there
// is nothing to do.
func (s *Store) BeginAggregate(ctx context.Context, jobID, owner string) (*Aggregation, error) {
	res, err := s.run(ctx, aggBeginScript, keys(jobID), events.Channel, jobID, owner, s.now().UnixMilli(), ClosedChannel)
	if err != nil {
		return nil, fmt.Errorf("begin aggregation of job %s: %w", jobID, err)
	}
	if res[0] != "ok" {
		return nil, resultErr(res)
	}
	h, err := hashReply(res, 2)
	if err != nil {
		return nil, fmt.Errorf("begin aggregation of job %s: %w", jobID, err)
	}
	j, parts, err := s.withParts(ctx, jobID, h)
	if err != nil {
		return nil, err
	}
	return &Aggregation{Job: j, Attempt: int(toInt(res, 1)), Parts: parts}, nil
}

// hashReply reads res[i], a script's HGETALL reply, into a map.
func hashReply(res []any, i int) (map[string]string, error) {
	if len(res) <= i {
		return nil, errors.New("the script returned no hash")
	}
	flat, ok := res[i].([]any)
	if !ok || len(flat)%2 != 0 {
		return nil, fmt.Errorf("the script returned %T, not a hash", res[i])
	}
	h := make(map[string]string, len(flat)/2)
	for k := 0; k < len(flat); k += 2 {
		f, ok1 := flat[k].(string)
		v, ok2 := flat[k+1].(string)
		if !ok1 || !ok2 {
			return nil, errors.New("the script returned a hash that is not strings")
		}
		h[f] = v
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	return h, nil
}

// GetWithParts returns the job and the records of the aggregation parts
// whose terminal event is on its stream (job.Part JSON, by name; see
// EmitPart), or
// ErrNotFound.
func (s *Store) GetWithParts(ctx context.Context, jobID string) (*job.Job, map[string][]byte, error) {
	h, err := s.hash(ctx, jobID)
	if err != nil {
		return nil, nil, err
	}
	return s.withParts(ctx, jobID, h)
}

// withParts decodes the job's hash h and picks its parts' records out of
// it (see GetWithParts).
func (s *Store) withParts(ctx context.Context, jobID string, h map[string]string) (*job.Job, map[string][]byte, error) {
	j, err := s.decode(ctx, jobID, h)
	if err != nil {
		return nil, nil, err
	}
	parts := map[string][]byte{}
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, "part:"); ok {
			parts[name] = []byte(v)
		}
	}
	return j, parts, nil
}

// AppendPartText appends a <part>.delta {text} of the streamed part part
// while owner owns the aggregation. seq numbers the owner's deltas of that
// part from 1, as for AppendMemberText: each part counts its own, so parts
// may stream concurrently.
func (s *Store) AppendPartText(ctx context.Context, jobID, owner, part string, seq int, text string) error {
	d, _ := json.Marshal(events.PartDeltaData{Text: text})
	return s.emit(ctx, jobID, ",aggregating,", "o:agg", owner, "q:agg:"+part, part, events.VerbDelta, d, seq, "", nil)
}

// EmitPart appends the terminal event of p, one part of the aggregation,
// while owner owns the aggregation, and keeps p (its JSON) as the part's
// record (Aggregation.Parts). The event is <part>.failed {error} when p
// has an Error; otherwise <part>.completed: {<part>: Value} for a
// structured part (Value set), {text} for a streamed one, with
// cached:true when cached. Each part's terminal event is appended at most
// once per job, whatever the attempts and retries: when it is there
// already, nothing is appended and the call succeeds.
func (s *Store) EmitPart(ctx context.Context, jobID, owner string, p job.Part, cached bool) error {
	if p.Name == "" {
		return fmt.Errorf("emit a part of job %s: the part has no name", jobID)
	}
	verb, data := partTerminal(p, cached)
	d, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s: %w", events.PartEvent(p.Name, verb), err)
	}
	record, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode part %s: %w", p.Name, err)
	}
	return s.emit(ctx, jobID, ",aggregating,", "o:agg", owner, "", p.Name, verb, d, 0, p.Name, record)
}

// partTerminal returns the verb and payload of p's terminal event.
func partTerminal(p job.Part, cached bool) (string, any) {
	switch {
	case p.Error != "":
		return events.VerbFailed, events.ErrorData{Error: p.Error}
	case p.Value != nil:
		return events.VerbCompleted, events.PartValueData(p.Name, p.Value, cached)
	}
	return events.VerbCompleted, events.PartTextData{Text: p.Text, Cached: cached}
}

// emit appends an event; see emitScript. seqField names the field that
// keeps the last sequence number (empty with seq 0); the event's type is
// prefix.verb, prefix empty meaning the job's noun.
func (s *Store) emit(ctx context.Context, jobID, allowed, ownerField, owner, seqField, prefix, verb string, data []byte, seq int, part string, record []byte) error {
	res, err := s.run(ctx, emitScript, keys(jobID), events.Channel, jobID, allowed, ownerField, owner, seqField,
		prefix, verb, string(data), seq, part, string(record))
	if err != nil {
		return fmt.Errorf("append %s.%s to job %s: %w", prefix, verb, jobID, err)
	}
	if res[0] == "ok" || res[0] == "dup" {
		return nil
	}
	return resultErr(res)
}

// Finish ends a job that has not ended with the given status and, when r
// is not nil, its result, and appends the terminal job.completed event.
// Members that never finished get the status canceled (a canceled job) or
// expired. Whoever owns the aggregation, this ends the job: it is for a
// cancel and for the deadline. ErrClosed means the job had already ended
// (nothing changed).
func (s *Store) Finish(ctx context.Context, jobID string, status job.Status, errMsg string, r *job.Result) error {
	return s.finish(ctx, jobID, "", status, errMsg, r)
}

// FinishAggregate is Finish fenced by the aggregation's claim: it ends the
// job only while owner owns its aggregation (ErrStale otherwise), so that
// an attempt that was given up for dead cannot end the job behind its
// successor.
func (s *Store) FinishAggregate(ctx context.Context, jobID, owner string, status job.Status, errMsg string, r *job.Result) error {
	return s.finish(ctx, jobID, owner, status, errMsg, r)
}

func (s *Store) finish(ctx context.Context, jobID, owner string, status job.Status, errMsg string, r *job.Result) error {
	if !status.Terminal() {
		return fmt.Errorf("finish job %s: %q is not a terminal status", jobID, status)
	}
	resJSON := ""
	if r != nil {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		resJSON = string(b)
	}
	unfinished := job.MemberExpired
	if status == job.StatusCanceled {
		unfinished = job.MemberCanceled
	}
	d, _ := json.Marshal(events.CompletedData{JobID: jobID, Status: string(status), Error: errMsg})
	res, err := s.run(ctx, finishScript, keys(jobID), events.Channel, jobID, string(status), s.now().UnixMilli(),
		errMsg, resJSON, s.retention.Milliseconds(), string(d), ClosedChannel, owner, string(unfinished))
	if err != nil {
		return fmt.Errorf("finish job %s: %w", jobID, err)
	}
	if res[0] == "ok" || res[0] == "closed" || res[0] == "gone" {
		// Ended (now or before) or gone: nothing left for the watchdog.
		// A lost removal only costs the watchdog one more look.
		_ = s.ForgetDeadline(ctx, jobID)
	}
	if res[0] == "ok" {
		return nil
	}
	return resultErr(res)
}

// webhookRecord is how a job's webhook state is stored (field "webhook",
// written by the scripts).
type webhookRecord struct {
	Status         string `json:"status"`
	Attempts       int    `json:"attempts"`
	LastStatusCode int    `json:"last_status_code,omitempty"`
	LastError      string `json:"last_error,omitempty"`
	DeliveredAtMS  int64  `json:"delivered_at_ms,omitempty"`
}

func (r webhookRecord) state() *job.Webhook {
	w := &job.Webhook{Status: job.WebhookStatus(r.Status), Attempts: r.Attempts, LastStatusCode: r.LastStatusCode, LastError: r.LastError}
	if r.DeliveredAtMS > 0 {
		t := time.UnixMilli(r.DeliveredAtMS).UTC()
		w.DeliveredAt = &t
	}
	return w
}

// WebhookQueued marks the job's webhook delivery pending, once its task is
// on the queue. A delivery that has a state already (the task may have run
// first) keeps it. ErrNotFound: no such job.
func (s *Store) WebhookQueued(ctx context.Context, jobID string) error {
	res, err := webhookQueuedScript.Run(ctx, s.rdb, keys(jobID), events.Channel, jobID).Slice()
	if err != nil {
		return fmt.Errorf("mark webhook of job %s queued: %w", jobID, err)
	}
	if res[0] == "ok" {
		return nil
	}
	return resultErr(res)
}

// WebhookAttempt is the outcome of one delivery attempt of a job's webhook.
type WebhookAttempt struct {
	// Status is pending (another attempt follows), delivered or failed
	// (for good).
	Status job.WebhookStatus
	// StatusCode is the receiver's answer; 0 when there was none.
	StatusCode int
	// Error says why it was not delivered.
	Error string
	// WebhookID is the delivery's webhook-id, named in the event.
	WebhookID string
}

// WebhookKeep is how long, at least, a job is kept after an attempt of its
// webhook failed and another follows: longer than the longest retry delay
// (webhook.Schedule), so that the retries, which span more than a day, find
// the job even with a short JOB_RETENTION.
const WebhookKeep = 12 * time.Hour

// RecordWebhook counts a delivery attempt and records its outcome; a final
// one (delivered, failed) appends webhook.delivered or webhook.failed to the
// job's stream, after its terminal event (a job stored by reference keeps
// it in its hash; Events returns it after the others). A pending one keeps the job at
// least WebhookKeep longer. It returns the attempts so far.
// ErrClosed: the delivery already had its outcome, nothing changed;
// ErrNotFound: the job is gone.
func (s *Store) RecordWebhook(ctx context.Context, jobID string, a WebhookAttempt) (int, error) {
	switch a.Status {
	case job.WebhookPending, job.WebhookDelivered, job.WebhookFailed:
	default:
		return 0, fmt.Errorf("record webhook of job %s: unknown status %q", jobID, a.Status)
	}
	if a.Status == job.WebhookPending {
		// The job may be kept longer (below); first its result, if it is
		// stored by reference, so that the result outlives it.
		if err := s.touchResultOf(ctx, jobID, WebhookKeep+resultSlack); err != nil {
			return 0, fmt.Errorf("record webhook of job %s: %w", jobID, err)
		}
	}
	res, err := webhookAttemptScript.Run(ctx, s.rdb, keys(jobID), events.Channel, jobID, string(a.Status),
		s.now().UnixMilli(), a.StatusCode, a.Error, a.WebhookID, WebhookKeep.Milliseconds()).Slice()
	if err != nil {
		return 0, fmt.Errorf("record webhook of job %s: %w", jobID, err)
	}
	switch res[0] {
	case "ok":
		return int(toInt(res, 1)), nil
	case "done":
		return 0, fmt.Errorf("%w (webhook %v)", ErrClosed, res[1])
	}
	return 0, resultErr(res)
}

func resultErr(res []any) error {
	switch res[0] {
	case "gone":
		return ErrNotFound
	case "stale":
		return ErrStale
	case "closed":
		if len(res) > 1 {
			return fmt.Errorf("%w (status %v)", ErrClosed, res[1])
		}
		return ErrClosed
	}
	return fmt.Errorf("store: unexpected script answer %v", res)
}

func toInt(res []any, i int) int64 {
	if i >= len(res) {
		return 0
	}
	switch v := res[i].(type) {
	case int64:
		return v
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}
