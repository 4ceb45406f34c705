// Package tasks is the queue contract between the api and the workers: task
// types, queues, payloads, task ids and enqueue options. Changing a payload
// here changes it for both sides at once. Every task carries the W3C trace
// context of the context it was enqueued with in its headers (package
// tracing); handlers extract it with StartSpan.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tracing"
)

// Queues. Each has its own asynq server in the worker, hence its own
// concurrency cap.
const (
	QueueSnapshot  = "snapshot"
	QueueAggregate = "aggregate"
	QueueWebhook   = "webhook"
	// QueueWarm carries every task of cache-warming jobs and the periodic
	// warming itself, so that warming has a concurrency cap of its own.
	QueueWarm = "warm"
)

// Task types, the same for every job kind.
const (
	// TypeMember is one member call of a job (a snapshot, an answer).
	TypeMember    = "job:member"
	TypeAggregate = "job:aggregate"
	TypeWebhook   = "job:webhook"
	// TypeWarm warms the cache for the configured questions.
	TypeWarm = "job:warm"
)

// The names the previous version gave the tasks whose payloads have not
// changed: workers run them too, so that webhooks and warming queued
// before an upgrade still run after it. (Member and aggregation tasks of
// the previous version are not run: drain the snapshot and aggregate
// queues before upgrading; see docs/operations.md.)
const (
	LegacyTypeWebhook = "timetravel:webhook"
	LegacyTypeWarm    = "timetravel:warm"
)

// Lane is the pair of queues a job's tasks run on: its member calls on
// Member, its aggregation on Aggregate.
type Lane struct {
	Member, Aggregate string
}

// Lanes: user jobs run on the snapshot and aggregate queues, cache-warming
// jobs on the warm queue.
var (
	UserLane = Lane{Member: QueueSnapshot, Aggregate: QueueAggregate}
	WarmLane = Lane{Member: QueueWarm, Aggregate: QueueWarm}
)

// LaneOf returns the lane of a job (of a warming job when warm).
func LaneOf(warm bool) Lane {
	if warm {
		return WarmLane
	}
	return UserLane
}

// MemberPayload is everything a member task needs, so that the worker
// reads nothing before calling the model, whatever the job's kind.
type MemberPayload struct {
	JobID string `json:"job_id"`
	Kind  string `json:"kind,omitempty"`
	Index int    `json:"index"`
	Label string `json:"label,omitempty"`
	// Request is the call; its model is the model asked.
	Request Request `json:"request"`
	// CacheKey is the answer's identity in the member cache (empty: not
	// cached); Volatile, that it is cached for the short TTL.
	CacheKey string `json:"cache_key,omitempty"`
	Volatile bool   `json:"volatile,omitempty"`
	// NoCacheRead says the job bypasses cache reads (it still writes).
	NoCacheRead bool `json:"no_cache_read,omitempty"`
	// Warm says the job is a cache-warming job (its lane is WarmLane).
	Warm bool `json:"warm,omitempty"`
	// Owner is the API key that submitted the job, whose token budget
	// pays for the call (job.Spec.Owner).
	Owner string `json:"owner,omitempty"`
	// DeadlineMS is the job's deadline (Unix ms): until then a task that
	// finds no job waits for it to be written (the api queues the tasks
	// first); after it, the job has ended and expired.
	DeadlineMS int64 `json:"deadline_ms,omitempty"`
	// LineMS places the call in its provider's line (Unix ms; lower
	// first): the job's deadline, later by the time the job waited for its
	// turn to queue its members (EnqueueMembers). For jobs of one deadline
	// the line then has the order of the queue, which is the order in
	// which workers take the members. 0 (tasks queued by an earlier
	// version): DeadlineMS.
	LineMS int64 `json:"line_ms,omitempty"`
}

// Request is an llm.Request as a task carries it.
type Request struct {
	Model       string  `json:"model"`
	System      string  `json:"system,omitempty"`
	User        string  `json:"user"`
	MaxTokens   int     `json:"max_tokens,omitempty"`
	Temperature float32 `json:"temperature,omitempty"`
	JSON        bool    `json:"json,omitempty"`
}

// RequestOf is r as a task carries it (without its validator).
func RequestOf(r llm.Request) Request {
	return Request{Model: r.Model, System: r.System, User: r.User, MaxTokens: r.MaxTokens, Temperature: r.Temperature, JSON: r.JSON}
}

// LLM is the request as the model client takes it.
func (r Request) LLM() llm.Request {
	return llm.Request{Model: r.Model, System: r.System, User: r.User, MaxTokens: r.MaxTokens, Temperature: r.Temperature, JSON: r.JSON}
}

// AggregatePayload names the job to aggregate.
type AggregatePayload struct {
	JobID string `json:"job_id"`
}

// WebhookPayload names the job whose result goes to its callback URL; the
// handler reads the job, so that the delivery carries its final state.
type WebhookPayload struct {
	JobID string `json:"job_id"`
}

// MemberTaskID is the fixed asynq task id of member index of a job; a
// second enqueue of the same member is refused by asynq.
func MemberTaskID(jobID string, index int) string {
	return jobID + ":member:" + strconv.Itoa(index)
}

// AggregateTaskID is the fixed asynq task id of a job's aggregation.
func AggregateTaskID(jobID string) string { return jobID + ":aggregate" }

// WebhookTaskID is the fixed asynq task id of the delivery of a job's
// webhook.
func WebhookTaskID(jobID string) string { return jobID + ":webhook" }

// WebhookRetention is how long a webhook task is kept after it ended
// (delivered, or archived after failing for good): while it is, a second
// enqueue of the job's delivery conflicts and does nothing.
const WebhookRetention = 24 * time.Hour

// webhookTaskTimeout bounds one run of a webhook task; each attempt has its
// own, shorter timeout (WEBHOOK_TIMEOUT, at most 5 minutes).
const webhookTaskTimeout = 10 * time.Minute

// HandBackSpare is the delivery each task gets beyond its retry budget.
// asynq archives a task whose handler returns an error once its retries are
// spent, even when Config.IsFailure says the error is no failure; the spare
// delivery lets a task hand its work back (no provider capacity) on its last
// attempt too. Handlers count the budget themselves with LastAttempt, and on
// their last attempt return an error only to hand the work back.
const HandBackSpare = 1

// AggregateMaxRetry is the retry budget of an aggregation task.
const AggregateMaxRetry = 5

// LastAttempt reports whether this run of a task is the last of its retry
// budget (the spare delivery aside): if its work fails now, it fails for
// good.
func LastAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return !ok1 || !ok2 || n >= maxRetry-HandBackSpare
}

// Enqueuer puts a job's tasks on the queues.
type Enqueuer struct {
	client   *asynq.Client
	maxRetry int
	timeout  time.Duration
	// turn is held while one job's members are enqueued, waited for at
	// most turnWait (see EnqueueMembers).
	turn     chan struct{}
	turnWait time.Duration
}

// NewEnqueuer returns an Enqueuer; snapshot tasks get maxRetry retries and a
// per-attempt timeout.
func NewEnqueuer(c *asynq.Client, maxRetry int, timeout time.Duration) *Enqueuer {
	return &Enqueuer{client: c, maxRetry: maxRetry, timeout: timeout, turn: make(chan struct{}, 1), turnWait: maxTurnWait}
}

// EnqueueAggregate schedules the job's aggregation at AggregateAt, ahead of
// its deadline. The last snapshot to finish brings it forward (see
// Promote); if snapshots hang or the enqueuing process dies half-way, the
// aggregation still runs in time to end the job by its deadline with what
// it has. Enqueue it before anything else of the job.
func (e *Enqueuer) EnqueueAggregate(ctx context.Context, j *job.Job) error {
	p, _ := json.Marshal(AggregatePayload{JobID: j.ID})
	_, err := e.client.EnqueueContext(ctx, asynq.NewTaskWithHeaders(TypeAggregate, p, tracing.Headers(ctx)),
		asynq.Queue(LaneOf(j.Spec.Warm).Aggregate),
		asynq.TaskID(AggregateTaskID(j.ID)),
		asynq.ProcessAt(AggregateAt(j)),
		asynq.MaxRetry(AggregateMaxRetry+HandBackSpare),
		asynq.Timeout(5*time.Minute),
	)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue aggregation of job %s: %w", j.ID, err)
	}
	return nil
}

// Aggregation reserve: the part of a job's time kept for its aggregation
// when snapshots hang.
const (
	aggregateShare      = 4 // a quarter of the job's time
	maxAggregateReserve = 30 * time.Second
)

// AggregateAt is when a job's aggregation runs unless the last snapshot
// brings it forward: a quarter of the job's time before its deadline (at
// most 30 s, ample for two concurrent LLM calls), so that a job whose members hang still gets its
// aggregation over the members it has.
func AggregateAt(j *job.Job) time.Time {
	reserve := min(j.Deadline.Sub(j.CreatedAt)/aggregateShare, maxAggregateReserve)
	return j.Deadline.Add(-max(reserve, 0))
}

// maxTurnWait bounds a job's wait for its turn to queue its members: a
// burst of 500 jobs takes about 2.5 s to queue on a loaded 2-core machine.
const maxTurnWait = 5 * time.Second

// EnqueueMembers puts one task per member of plan (the job's plan, by
// index) on the job's member queue, except for the members the job
// already has done (answered from the cache). A task that exists already
// (same id) counts as enqueued.
//
// The jobs submitted at once to one process take turns: a job's members
// are queued one after the other with no other job's between them, so
// that workers dequeue them together (asynq queues are first in, first
// out) and a burst of jobs is served job by job, not first members first.
// A turn costs one round trip to Redis per member. The order is a
// preference, not a condition: a job that waited maxTurnWait for its turn
// (Redis slow or out of reach, every turn taking its timeouts) queues its
// members without it, so that a Redis outage fails the submissions side
// by side, not one after the other.
func (e *Enqueuer) EnqueueMembers(ctx context.Context, j *job.Job, plan []jobkind.Member) error {
	wait := time.NewTimer(e.turnWait)
	select {
	case e.turn <- struct{}{}:
		wait.Stop()
		defer func() { <-e.turn }()
	case <-wait.C:
	case <-ctx.Done():
		wait.Stop()
		return fmt.Errorf("enqueue the members of job %s: %w", j.ID, context.Cause(ctx))
	}
	line := j.Deadline.Add(max(time.Since(j.CreatedAt), 0)).UnixMilli()
	headers := tracing.Headers(ctx)
	lane := LaneOf(j.Spec.Warm)
	for i, m := range plan {
		if i < len(j.Members) && j.Members[i].Status.Done() {
			continue
		}
		p, _ := json.Marshal(MemberPayload{
			JobID: j.ID, Kind: j.Spec.Kind, Index: i, Label: m.Label, Request: RequestOf(m.Request),
			CacheKey: m.CacheKey, Volatile: m.Volatile,
			NoCacheRead: !j.Spec.ReadsCache(), Warm: j.Spec.Warm, DeadlineMS: j.Deadline.UnixMilli(), LineMS: line,
			Owner: j.Spec.Owner,
		})
		_, err := e.client.EnqueueContext(ctx, asynq.NewTaskWithHeaders(TypeMember, p, headers),
			asynq.Queue(lane.Member),
			asynq.TaskID(MemberTaskID(j.ID, i)),
			asynq.MaxRetry(e.maxRetry+HandBackSpare),
			asynq.Timeout(e.timeout),
		)
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("enqueue %s %d of job %s: %w", j.Noun, i, j.ID, err)
		}
	}
	return nil
}

// EnqueueWebhook puts the delivery of the job's webhook on the webhook
// queue, to run now, with maxRetry retries (webhook.MaxRetries). The task
// id is fixed and the task is kept for WebhookRetention after it ended, so
// that enqueuing again (every path that sees the job ended does) is a
// conflict, which counts as enqueued, and never a second delivery.
func (e *Enqueuer) EnqueueWebhook(ctx context.Context, jobID string, maxRetry int) error {
	p, _ := json.Marshal(WebhookPayload{JobID: jobID})
	_, err := e.client.EnqueueContext(ctx, asynq.NewTaskWithHeaders(TypeWebhook, p, tracing.Headers(ctx)),
		asynq.Queue(QueueWebhook),
		asynq.TaskID(WebhookTaskID(jobID)),
		asynq.MaxRetry(maxRetry),
		asynq.Retention(WebhookRetention),
		asynq.Timeout(webhookTaskTimeout),
	)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue webhook of job %s: %w", jobID, err)
	}
	return nil
}

// Inspector is the part of asynq.Inspector that moves and removes tasks.
type Inspector interface {
	RunTask(queue, id string) error
	DeleteTask(queue, id string) error
}

// allQueuesKey is asynq's set of known queues (asynq:queues).
const allQueuesKey = "asynq:queues"

// NewInspector returns the Inspector of rdb's queues that survives a Redis
// that lost its data. asynq's client records a queue in asynq:queues once
// per process, and its Inspector answers "queue not found" for a queue
// missing there (hibiken/asynq#650), so after Redis restarts empty every
// Promote would fail until the processes restart and every job would wait
// for its deadline. On that answer it registers the queue again and
// repeats the operation once.
func NewInspector(rdb redis.UniversalClient) Inspector {
	return &selfHealing{insp: asynq.NewInspectorFromRedisClient(rdb), rdb: rdb}
}

type selfHealing struct {
	insp *asynq.Inspector
	rdb  redis.UniversalClient
}

func (s *selfHealing) RunTask(queue, id string) error {
	return s.again(queue, func() error { return s.insp.RunTask(queue, id) })
}

func (s *selfHealing) DeleteTask(queue, id string) error {
	return s.again(queue, func() error { return s.insp.DeleteTask(queue, id) })
}

func (s *selfHealing) again(queue string, op func() error) error {
	err := op()
	if !errors.Is(err, asynq.ErrQueueNotFound) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if aerr := s.rdb.SAdd(ctx, allQueuesKey, queue).Err(); aerr != nil {
		return errors.Join(err, fmt.Errorf("register queue %s again: %w", queue, aerr))
	}
	return op()
}

// Promote starts the job's aggregation, on lane, now instead of at the
// deadline. It is safe to call more than once and when aggregation already
// runs.
func Promote(insp Inspector, lane Lane, jobID string) error {
	err := insp.RunTask(lane.Aggregate, AggregateTaskID(jobID))
	if err == nil || errors.Is(err, asynq.ErrTaskNotFound) {
		// Not found: the aggregation already ran (it is not kept).
		return nil
	}
	if isPrecondition(err) {
		return nil // already pending or running
	}
	return fmt.Errorf("promote aggregation of job %s: %w", jobID, err)
}

// Withdraw removes the job's tasks, on lane, that have not started: the given
// members and, with withAggregate, the aggregation. Running tasks are not
// touched here: workers stop them when the store announces the job closed
// (asynq's CancelProcessing would put them up for retry instead). Missing
// tasks are fine: they ran or were removed already.
func Withdraw(insp Inspector, lane Lane, jobID string, indexes []int, withAggregate bool) error {
	var errs []error
	remove := func(queue, id string) {
		err := insp.DeleteTask(queue, id)
		if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !isPrecondition(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", id, err))
		}
	}
	for _, i := range indexes {
		remove(lane.Member, MemberTaskID(jobID, i))
	}
	if withAggregate {
		remove(lane.Aggregate, AggregateTaskID(jobID))
	}
	return errors.Join(errs...)
}

// isPrecondition matches asynq's answers for a task that is already pending
// or active, which asynq does not export as sentinel errors.
func isPrecondition(err error) bool {
	s := err.Error()
	return strings.Contains(s, "already running") || strings.Contains(s, "already in pending") || strings.Contains(s, "active state")
}

// StartSpan starts the span of a task's run, a child of the trace context
// in the task's headers (the span that enqueued it), with the job id.
// The caller ends it.
func StartSpan(ctx context.Context, t *asynq.Task, name, jobID string) (context.Context, trace.Span) {
	ctx = tracing.Extract(ctx, t.Headers())
	return tracing.Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("job_id", jobID), attribute.String("task.type", t.Type())))
}
