package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// handlerWith is newHandler with extra configuration.
// testAdminToken is the ADMIN_TOKEN of tests that need the admin.
const testAdminToken = "admin-token-of-the-api-tests-0123456789abcdef"

func handlerWith(t *testing.T, env map[string]string) http.Handler {
	t.Helper()
	db := redistest.New(t)
	env["REDIS_URL"] = db.URL
	cfg, err := config.LoadFrom(env)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = srv.Close() }) // the admin UI's connections, when mounted
	return srv.Handler()
}

func send(h http.Handler, path, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) api.ErrorDetail {
	t.Helper()
	var body api.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("status %d, body %s: %v", rec.Code, rec.Body, err)
	}
	return body.Error
}

func TestCacheAndDedupSwitches(t *testing.T) {
	t.Parallel()
	const q = `{"question":"What are the best AI models?"}`
	tests := []struct {
		name       string
		env        map[string]string
		wantJoined bool
		warmStatus int
	}{
		{"defaults", map[string]string{"ADMIN_TOKEN": testAdminToken}, true, http.StatusAccepted},
		{"dedup off", map[string]string{"DEDUP_ENABLED": "false", "ADMIN_TOKEN": testAdminToken}, false, http.StatusAccepted},
		{"caching off", map[string]string{"CACHE_ENABLED": "false", "ADMIN_TOKEN": testAdminToken}, true, http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := handlerWith(t, tt.env)
			var first, second api.Accepted
			for _, a := range []*api.Accepted{&first, &second} {
				rec := send(h, "/api/time-travel", q, nil)
				if rec.Code != http.StatusAccepted {
					t.Fatalf("submit: %d %s", rec.Code, rec.Body)
				}
				if err := json.Unmarshal(rec.Body.Bytes(), a); err != nil {
					t.Fatal(err)
				}
			}
			// A joined submission gets a job id of its own on the shared work.
			if second.Joined != tt.wantJoined || second.JobID == first.JobID {
				t.Errorf("second identical submission: joined %v, same job id %v; want joined %v with its own id", second.Joined, second.JobID == first.JobID, tt.wantJoined)
			}
			if rec := send(h, "/api/cache/warm", `{"questions":["Who leads in EV sales?"]}`, nil); rec.Code != http.StatusForbidden {
				t.Fatalf("warm without the admin token: %d, want 403", rec.Code)
			}
			rec := send(h, "/api/cache/warm", `{"questions":["Who leads in EV sales?"]}`, map[string]string{"Authorization": "Bearer " + testAdminToken})
			if rec.Code != tt.warmStatus {
				t.Fatalf("warm: %d %s, want %d", rec.Code, rec.Body, tt.warmStatus)
			}
			if rec.Code == http.StatusConflict {
				if e := errorOf(t, rec); e.Code != api.CodeCacheDisabled || !strings.Contains(e.Message, "CACHE_ENABLED") {
					t.Errorf("warm with caching off: %+v", e)
				}
			}
		})
	}
}

// The answers about an Idempotency-Key, without workers: the job only
// needs to be queued.
func TestIdempotencyKeyAnswers(t *testing.T) {
	t.Parallel()
	h := handlerWith(t, map[string]string{})
	key := map[string]string{api.IdempotencyHeader: "k-1"}
	first := send(h, "/api/time-travel", `{"question":"q1"}`, key)
	again := send(h, "/api/time-travel", `{"question":"q1"}`, key)
	if first.Code != http.StatusAccepted || again.Code != http.StatusAccepted {
		t.Fatalf("status %d then %d", first.Code, again.Code)
	}
	var a, b api.Accepted
	_ = json.Unmarshal(first.Body.Bytes(), &a)
	_ = json.Unmarshal(again.Body.Bytes(), &b)
	if a.JobID == "" || b.JobID != a.JobID || again.Header().Get(api.IdempotentReplayedHeader) != "true" || first.Header().Get(api.IdempotentReplayedHeader) != "" {
		t.Fatalf("first %+v, replay %+v (header %q)", a, b, again.Header().Get(api.IdempotentReplayedHeader))
	}
	// The same body written otherwise (white space, escapes) is the same
	// request.
	rewritten := send(h, "/api/time-travel", ` { "question" : "q\u0031" } `, key)
	var c api.Accepted
	_ = json.Unmarshal(rewritten.Body.Bytes(), &c)
	if rewritten.Code != http.StatusAccepted || c.JobID != a.JobID || rewritten.Header().Get(api.IdempotentReplayedHeader) != "true" {
		t.Fatalf("the same body written otherwise: %d %+v", rewritten.Code, c)
	}
	tests := []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"other body", "k-1", `{"question":"q2"}`, http.StatusUnprocessableEntity, api.CodeIdempotencyMismatch},
		{"empty key", "", `{"question":"q1"}`, http.StatusBadRequest, api.CodeInvalidHeader},
		{"key too long", strings.Repeat("k", 256), `{"question":"q1"}`, http.StatusBadRequest, api.CodeInvalidHeader},
		{"non-ASCII key", "schlüssel", `{"question":"q1"}`, http.StatusBadRequest, api.CodeInvalidHeader},
		{"bad body before the key", "k-2", `{"question":1}`, http.StatusBadRequest, api.CodeInvalidField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := send(h, "/api/time-travel", tt.body, map[string]string{api.IdempotencyHeader: tt.key})
			if e := errorOf(t, rec); rec.Code != tt.status || e.Code != tt.code {
				t.Fatalf("%d %+v, want %d %s", rec.Code, e, tt.status, tt.code)
			}
		})
	}
}
