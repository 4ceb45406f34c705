package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tracing"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

// Webhooks configures the delivery of a job's result to its callback URL.
type Webhooks struct {
	// Sender signs and sends the deliveries; nil when no secret is
	// configured (then each attempt fails, and is retried, until a worker
	// that has one takes the task). Deliveries are queued, with their
	// retry budget, by the job's lifecycle (SetLifecycle).
	Sender *webhook.Sender
	// RetryDelay is the wait before retry n (0-based) given the receiver's
	// Retry-After; nil means webhook.RetryDelay (the Standard Webhooks
	// schedule). Tests make it short.
	RetryDelay func(n int, retryAfter time.Duration) time.Duration
}

// SetWebhooks turns on the delivery of webhooks. Call it before the
// servers start.
func (h *Handlers) SetWebhooks(w Webhooks) {
	if w.RetryDelay == nil {
		w.RetryDelay = webhook.RetryDelay
	}
	h.webhooks = w
}

// webhookDeliveries counts delivery attempts by outcome: delivered, retry
// (another attempt follows) and failed (for good).
var webhookDeliveries = metrics.WebhookDeliveries

// errWebhooksOff is an attempt's failure on a worker without a secret.
var errWebhooksOff = errors.New("webhooks are not configured on this worker (no secret)")

// webhookRetry is a retryable failure of an attempt, with the receiver's
// Retry-After, which the webhook queue's retry delay reads.
type webhookRetry struct {
	after time.Duration
	err   error
}

func (e *webhookRetry) Error() string { return e.err.Error() }
func (e *webhookRetry) Unwrap() error { return e.err }

// webhookRetryDelay is the webhook queue's asynq RetryDelayFunc: the
// schedule's delay before retry n, or the receiver's Retry-After when that
// is longer.
func (h *Handlers) webhookRetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var after time.Duration
	var r *webhookRetry
	if errors.As(err, &r) {
		after = r.after
	}
	delay := h.webhooks.RetryDelay
	if delay == nil {
		delay = webhook.RetryDelay
	}
	return delay(n, after)
}

// WebhookID is the webhook-id of the delivery of a job's result, the same
// for every attempt, so that receivers can drop duplicates.
func WebhookID(jobID string) string { return "msg_" + jobID }

// WebhookBody is the JSON a job's callback URL receives.
type WebhookBody struct {
	// Type is "job." + the job's final status.
	Type string `json:"type"`
	// Timestamp is when the job ended (RFC 3339).
	Timestamp string `json:"timestamp"`
	// Data is the job as GET /api/jobs/{id} shows it, without the
	// delivery's own state.
	Data job.View `json:"data"`
}

// webhookBody renders the delivery of an ended job: its view as its kind
// shows it (jobkind.Registry.View). It is the same for every attempt.
func (h *Handlers) webhookBody(j *job.Job) ([]byte, error) {
	if h.kinds == nil {
		return nil, errors.New("no job kinds registered")
	}
	v, err := h.kinds.View(j)
	if err != nil {
		return nil, err
	}
	v.Webhook = nil
	return json.Marshal(WebhookBody{
		Type:      "job." + string(j.Status),
		Timestamp: j.FinishedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Data:      v,
	})
}

// HandleWebhook makes one attempt to deliver an ended job's result to its
// callback URL. A 2xx answer delivers; 429, 5xx, 408, timeouts and
// connection errors are retried on the webhook schedule (the error it
// returns carries the receiver's Retry-After); anything else (410, other
// 4xx, redirects, a refused address) and the last retry fail for good.
// Each attempt is recorded on the job; a delivery that has its outcome is
// not made again.
func (h *Handlers) HandleWebhook(ctx context.Context, t *asynq.Task) error {
	var p tasks.WebhookPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode webhook payload: %v: %w", err, asynq.SkipRetry)
	}
	ctx, span := tasks.StartSpan(ctx, t, "webhook", p.JobID)
	defer span.End()
	log := h.log.With("job_id", p.JobID, "stage", "webhook").With(tracing.LogAttrs(ctx)...)
	j, err := h.store.Get(ctx, p.JobID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Warn("job gone (expired?); webhook dropped")
		return nil
	case err != nil:
		return err
	}
	switch {
	case !j.Status.Terminal():
		// Only enqueued after the end; a stray task waits for it.
		return fmt.Errorf("webhook of job %s: the job has not ended (%s)", j.ID, j.Status)
	case j.Spec.CallbackURL == "":
		return nil
	case j.Webhook != nil && j.Webhook.Status.Final():
		log.Info("webhook already has its outcome; duplicate delivery ignored", "webhook", j.Webhook.Status)
		return nil
	}
	log = log.With("host", callbackHost(j.Spec.CallbackURL), "status", j.Status)
	body, err := h.webhookBody(j)
	if err != nil {
		return fmt.Errorf("webhook of job %s: %v: %w", j.ID, err, asynq.SkipRetry)
	}
	id := WebhookID(j.ID)
	var res webhook.Result
	if h.webhooks.Sender == nil {
		res = webhook.Result{Retry: true, Err: errWebhooksOff}
	} else {
		res = h.webhooks.Sender.Send(ctx, j.Spec.CallbackURL, id, body)
	}

	a := store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: res.StatusCode, WebhookID: id}
	outcome := "delivered"
	if !res.Delivered {
		a.Error = res.Err.Error()
		a.Status, outcome = job.WebhookFailed, "failed"
		if res.Retry && !lastWebhookAttempt(ctx) {
			a.Status, outcome = job.WebhookPending, "retry"
		}
	}
	// Recorded even when the task's own context ended with the attempt.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	attempts, err := h.store.RecordWebhook(rctx, j.ID, a)
	switch {
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrNotFound):
		// A concurrent delivery recorded the outcome, or the job expired.
		log.Info("webhook outcome not recorded", "reason", err)
		return nil
	case err != nil:
		// Unrecorded: asynq tries again (the receiver may see the
		// webhook-id twice, which it drops).
		return err
	}
	webhookDeliveries.WithLabelValues(outcome).Inc()
	switch a.Status {
	case job.WebhookDelivered:
		log.Info("webhook delivered", "attempts", attempts, "status_code", res.StatusCode)
		return nil
	case job.WebhookPending:
		log.Warn("webhook attempt failed; will retry", "attempts", attempts, "status_code", res.StatusCode,
			"err", res.Err, "retry_after", res.RetryAfter)
		return &webhookRetry{after: res.RetryAfter, err: fmt.Errorf("webhook of job %s: %w", j.ID, res.Err)}
	}
	log.Warn("webhook failed for good", "attempts", attempts, "status_code", res.StatusCode, "err", res.Err)
	return fmt.Errorf("webhook of job %s failed for good: %v: %w", j.ID, res.Err, asynq.SkipRetry)
}

// lastWebhookAttempt reports whether this run of a webhook task is its last
// (or runs outside asynq, as in tests that call the handler).
func lastWebhookAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return !ok1 || !ok2 || n >= maxRetry
}

// callbackHost names the receiver in logs without the URL's path and
// query, which may carry the receiver's own token.
func callbackHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}
