package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

func TestWebhookState(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	id := b.job.ID
	if err := b.store.Finish(ctx, id, job.StatusCompleted, "", nil); err != nil {
		t.Fatal(err)
	}
	if j, _ := b.store.Get(ctx, id); j.Webhook != nil {
		t.Fatalf("webhook state %+v before it was queued", j.Webhook)
	}
	if err := b.store.WebhookQueued(ctx, id); err != nil {
		t.Fatal(err)
	}
	if j, _ := b.store.Get(ctx, id); j.Webhook == nil || *j.Webhook != (job.Webhook{Status: job.WebhookPending}) {
		t.Fatalf("queued: %+v, want pending with no attempt", j.Webhook)
	}

	// A failed attempt with another to follow: pending, counted, and the
	// job kept for the retries although its retention (1h) is shorter.
	n, err := b.store.RecordWebhook(ctx, id, store.WebhookAttempt{Status: job.WebhookPending, StatusCode: 503, Error: "receiver answered 503", WebhookID: "msg_" + id})
	if err != nil || n != 1 {
		t.Fatalf("record: %d, %v", n, err)
	}
	for _, key := range []string{store.JobKey(id), events.StreamKey(id)} {
		if ttl := b.db.Client.PTTL(ctx, key).Val(); ttl < store.WebhookKeep-time.Minute {
			t.Errorf("%s TTL %s, want at least %s while the webhook is pending", key, ttl, store.WebhookKeep)
		}
	}
	// Queued again (another path saw the job ended): the state stays.
	if err := b.store.WebhookQueued(ctx, id); err != nil {
		t.Fatal(err)
	}
	j, _ := b.store.Get(ctx, id)
	if w := j.Webhook; w.Status != job.WebhookPending || w.Attempts != 1 || w.LastStatusCode != 503 || w.LastError != "receiver answered 503" {
		t.Fatalf("after a failed attempt: %+v", w)
	}
	if got := b.types(t); got[len(got)-1] != events.JobCompleted {
		t.Fatalf("a pending attempt appended an event: %v", got)
	}

	// Delivered: the error goes, the time and the event come.
	before := time.Now().Add(-time.Second)
	n, err = b.store.RecordWebhook(ctx, id, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 200, WebhookID: "msg_" + id})
	if err != nil || n != 2 {
		t.Fatalf("record: %d, %v", n, err)
	}
	j, _ = b.store.Get(ctx, id)
	if w := j.Webhook; w.Status != job.WebhookDelivered || w.Attempts != 2 || w.LastStatusCode != 200 || w.LastError != "" ||
		w.DeliveredAt == nil || w.DeliveredAt.Before(before) {
		t.Fatalf("delivered: %+v", w)
	}
	evs, _ := events.Read(ctx, b.db.Client, id, "")
	last := evs[len(evs)-1]
	var d events.WebhookData
	if err := json.Unmarshal(last.Data, &d); err != nil || last.Type != events.WebhookDelivered || !evs[len(evs)-2].Terminal() ||
		d != (events.WebhookData{WebhookID: "msg_" + id, Attempts: 2, StatusCode: 200}) {
		t.Fatalf("last events %s %s (%+v, %v), want job.completed then webhook.delivered", evs[len(evs)-2].Type, last.Data, d, err)
	}

	// Nothing changes a delivery that has its outcome.
	if _, err := b.store.RecordWebhook(ctx, id, store.WebhookAttempt{Status: job.WebhookFailed, Error: "late"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("record after the outcome: %v, want ErrClosed", err)
	}
	if err := b.store.WebhookQueued(ctx, id); err != nil {
		t.Fatal(err)
	}
	if j, _ := b.store.Get(ctx, id); j.Webhook.Status != job.WebhookDelivered || j.Webhook.Attempts != 2 {
		t.Fatalf("after the outcome: %+v", j.Webhook)
	}
	if got := b.types(t); count(got, events.WebhookDelivered)+count(got, events.WebhookFailed) != 1 {
		t.Fatalf("events %v, want one webhook event", got)
	}
}

func TestWebhookFailedAndGone(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	id := b.job.ID
	if err := b.store.Finish(ctx, id, job.StatusCanceled, "canceled", nil); err != nil {
		t.Fatal(err)
	}
	// A delivery that fails at once, before it was marked queued.
	if _, err := b.store.RecordWebhook(ctx, id, store.WebhookAttempt{Status: job.WebhookFailed, StatusCode: 410, Error: "gone", WebhookID: "msg_" + id}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.WebhookQueued(ctx, id); err != nil {
		t.Fatal(err)
	}
	j, _ := b.store.Get(ctx, id)
	if w := j.Webhook; w.Status != job.WebhookFailed || w.Attempts != 1 || w.LastStatusCode != 410 || w.DeliveredAt != nil {
		t.Fatalf("failed: %+v", w)
	}
	if v := j.View(); v.Webhook == nil || v.Webhook.Status != job.WebhookFailed {
		t.Fatalf("view webhook %+v", v.Webhook)
	}
	if got := b.types(t); got[len(got)-1] != events.WebhookFailed {
		t.Fatalf("events %v, want webhook.failed last", got)
	}
	if _, err := b.store.RecordWebhook(ctx, "0190aaaa-0000-7000-8000-00000000ffff", store.WebhookAttempt{Status: job.WebhookPending}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown job: %v, want ErrNotFound", err)
	}
	if err := b.store.WebhookQueued(ctx, "0190aaaa-0000-7000-8000-00000000ffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown job: %v, want ErrNotFound", err)
	}
}
