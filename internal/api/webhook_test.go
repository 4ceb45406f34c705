package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// newWebhookHandler is an api with the given webhook settings, and its
// database.
func newWebhookHandler(t *testing.T, env map[string]string) (http.Handler, redistest.DB) {
	t.Helper()
	db := redistest.New(t)
	vars := map[string]string{"REDIS_URL": db.URL, "JOB_DEADLINE": "60s"}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.LoadFrom(vars)
	if err != nil {
		t.Fatal(err)
	}
	return api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler(), db
}

func wantFieldError(t *testing.T, rec *httptest.ResponseRecorder, field, detail string) {
	t.Helper()
	var e api.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("status %d, body %s: %v", rec.Code, rec.Body, err)
	}
	if rec.Code != http.StatusBadRequest || e.Error.Code != api.CodeInvalidField || e.Error.Field != field || !strings.Contains(e.Error.Message, detail) {
		t.Fatalf("got %d %+v, want 400 invalid_field %s mentioning %q", rec.Code, e.Error, field, detail)
	}
	if strings.Contains(rec.Body.String(), strings.TrimPrefix(testSecret, "whsec_")) {
		t.Fatalf("the answer contains the webhook secret: %s", rec.Body)
	}
}

func TestCallbackURLRefused(t *testing.T) {
	t.Parallel()
	h, _ := newWebhookHandler(t, map[string]string{"WEBHOOK_SECRET": testSecret})
	cases := []struct{ name, url, detail string }{
		{"plain http", "http://93.184.215.14/hook", "https"},
		{"other scheme", "ftp://93.184.215.14/hook", "scheme"},
		{"javascript", "javascript:alert(1)", "scheme"},
		{"malformed", "https://[::1", "invalid"},
		{"relative", "/hook", "scheme"},
		{"credentials", "https://user:pw@93.184.215.14/hook", "credentials"},
		{"no host", "https:///hook", "no host"},
		{"loopback", "https://127.0.0.1/hook", "not a public"},
		{"loopback v6", "https://[::1]/hook", "not a public"},
		{"localhost", "https://localhost/hook", "not a public"},
		{"private", "https://10.1.2.3/hook", "not a public"},
		{"private 192.168", "https://192.168.1.1/hook", "not a public"},
		{"link-local metadata", "https://169.254.169.254/latest/meta-data", "not a public"},
		{"aws v6 metadata", "https://[fd00:ec2::254]/", "not a public"},
		{"multicast", "https://224.0.0.1/", "not a public"},
		{"too long", "https://93.184.215.14/" + strings.Repeat("a", 2100), "longer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body, _ := json.Marshal(map[string]string{"question": "x", "callback_url": c.url})
			wantFieldError(t, post(h, "application/json", string(body)), "callback_url", c.detail)
		})
	}
	t.Run("not a string", func(t *testing.T) {
		t.Parallel()
		wantFieldError(t, post(h, "application/json", `{"question":"x","callback_url":42}`), "callback_url", "string")
	})
}

func TestCallbackURLWithoutWebhooksConfigured(t *testing.T) {
	t.Parallel()
	h, _ := newWebhookHandler(t, nil)
	rec := post(h, "application/json", `{"question":"x","callback_url":"https://93.184.215.14/hook"}`)
	wantFieldError(t, rec, "callback_url", "webhooks are not configured")
	// Without a callback URL the job is accepted as before.
	if rec := post(h, "application/json", `{"question":"x","callback_url":""}`); rec.Code != http.StatusAccepted {
		t.Fatalf("empty callback_url: %d %s", rec.Code, rec.Body)
	}
}

// With http and loopback admitted (tests, development), the callback URL is
// accepted and shown; cancelling the job queues its webhook, and only then
// withdraws the aggregation task.
func TestCallbackURLAcceptedAndQueuedOnCancel(t *testing.T) {
	t.Parallel()
	h, db := newWebhookHandler(t, map[string]string{
		"WEBHOOK_SECRET": testSecret, "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
	})
	url := "http://127.0.0.1:9/hook?token=abc"
	rec := post(h, "application/json", `{"question":"x","callback_url":" `+url+` "}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil {
		t.Fatal(err)
	}
	view := func(rec *httptest.ResponseRecorder) job.View {
		t.Helper()
		var v job.View
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
		}
		return v
	}
	get := httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, acc.Links.Self, nil))
	// The view shows the URL without its query (it may carry a token).
	if v := view(get); v.CallbackURL != strings.Split(url, "?")[0] || v.Webhook != nil {
		t.Fatalf("view: callback_url %q, webhook %+v; want the URL without its query and no delivery yet", v.CallbackURL, v.Webhook)
	}
	if strings.Contains(get.Body.String(), `"webhook"`) {
		t.Fatalf("view has a webhook field before the end: %s", get.Body)
	}

	del := httptest.NewRecorder()
	h.ServeHTTP(del, httptest.NewRequest(http.MethodDelete, acc.Links.Self, nil))
	v := view(del)
	if v.Status != job.StatusCanceled || v.Webhook == nil || v.Webhook.Status != job.WebhookPending || v.Webhook.Attempts != 0 {
		t.Fatalf("canceled view: status %s, webhook %+v; want canceled with the webhook pending", v.Status, v.Webhook)
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	info, err := insp.GetTaskInfo(tasks.QueueWebhook, tasks.WebhookTaskID(acc.JobID))
	if err != nil || info.State != asynq.TaskStatePending || info.MaxRetry != 7 || info.Retention != tasks.WebhookRetention {
		t.Fatalf("webhook task %+v, %v; want it pending, 7 retries, kept 24h", info, err)
	}
	if _, err := insp.GetTaskInfo(tasks.QueueAggregate, tasks.AggregateTaskID(acc.JobID)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("aggregation task: %v, want it withdrawn", err)
	}
}
