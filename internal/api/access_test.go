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
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

const testEventsSecret = "events-secret-of-the-api-tests-0123456789"

// keysHandler is an api that requires keys, and a live key for it.
func keysHandler(t testing.TB) (http.Handler, string) {
	t.Helper()
	db := redistest.New(t)
	cfg, err := config.LoadFrom(map[string]string{
		"REDIS_URL": db.URL, "AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": testEventsSecret, "ADMIN_TOKEN": testAdminToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := auth.New(db.Client).Create(t.Context(), "test", auth.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = srv.Close() }) // the admin UI's connections
	return srv.Handler(), key
}

func request(h http.Handler, method, path, authz, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestKeysRequired(t *testing.T) {
	t.Parallel()
	h, key := keysHandler(t)
	tests := []struct {
		name, authz string
		status      int
		code        string
	}{
		{"no credentials", "", http.StatusUnauthorized, api.CodeUnauthorized},
		{"basic scheme", "Basic dXNlcjpwYXNz", http.StatusUnauthorized, api.CodeUnauthorized},
		{"malformed key", "Bearer ttk_nothex_x", http.StatusUnauthorized, api.CodeUnauthorized},
		{"unknown key", "Bearer ttk_0123456789abcdef_" + strings.Repeat("A", 43), http.StatusUnauthorized, api.CodeUnauthorized},
		{"key", "Bearer " + key, http.StatusAccepted, ""},
		{"scheme in lower case", "bearer " + key, http.StatusAccepted, ""},
		{"admin token", "Bearer " + testAdminToken, http.StatusAccepted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := request(h, http.MethodPost, "/api/time-travel", tt.authz, `{"question":"Who may ask?"}`)
			if rec.Code != tt.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			if tt.code == "" {
				return
			}
			if e := errorOf(t, rec); e.Code != tt.code {
				t.Fatalf("code %q, want %q", e.Code, tt.code)
			}
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
			}
			if tt.authz != "" && strings.Contains(rec.Body.String(), strings.TrimPrefix(tt.authz, "Bearer ")) {
				t.Errorf("the error repeats the credentials: %s", rec.Body)
			}
		})
	}
	// Everything under /api needs a key; health and metrics do not.
	for _, p := range []string{"/api/models", "/api/usage", "/api/monitoring/stats", "/api/jobs/01a237be-5458-719a-a493-c5529f53f452"} {
		if rec := request(h, http.MethodGet, p, "", ""); rec.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without a key: %d", p, rec.Code)
		}
	}
	if rec := request(h, http.MethodGet, "/healthz", "", ""); rec.Code != http.StatusOK {
		t.Errorf("/healthz: %d", rec.Code)
	}
}

// Bodies that are not valid UTF-8 (raw bytes, or JSON escapes of lone
// surrogates, which encoding/json would turn into U+FFFD) are refused.
func TestInvalidUTF8Refused(t *testing.T) {
	t.Parallel()
	h := newHandler(t)
	for _, body := range []string{
		"{\"question\":\"caf\xe9?\"}",
		`{"question":"lone \udc00 low surrogate"}`,
		`{"question":"lone \ud83d high surrogate"}`,
		`{"question":"reversed \ude00\ud83d pair"}`,
	} {
		rec := post(h, "application/json", body)
		if rec.Code != http.StatusBadRequest || errorOf(t, rec).Code != api.CodeInvalidEncoding {
			t.Errorf("%q: %d %s, want 400 %s", body, rec.Code, rec.Body, api.CodeInvalidEncoding)
		}
	}
	for _, body := range []string{
		`{"question":"a pair \ud83d\ude00 is fine"}`,
		`{"question":"an escaped backslash \\udc00 is text"}`,
		`{"question":"caf` + "\u00e9" + `?"}`,
	} {
		if rec := post(h, "application/json", body); rec.Code != http.StatusAccepted {
			t.Errorf("%q: %d %s, want 202", body, rec.Code, rec.Body)
		}
	}
}

// FuzzAuthorizationHeader: whatever the header holds, the answer is a 401
// (or a 2xx for a real key) with the JSON error model; never a 5xx, never
// an echo of the header.
func FuzzAuthorizationHeader(f *testing.F) {
	h, key := keysHandler(f)
	for _, s := range []string{"", "Bearer", "Bearer ", "Bearer " + key, "bearer  " + key, "Bearer " + key + "x",
		"Basic Zm9vOmJhcg==", "Bearer ttk_", "Bearer ttk_0123456789abcdef_", "Bearer \x00", "Bearer ttk_ZZZZZZZZZZZZZZZZ_" + strings.Repeat("-", 43),
		"Bearer " + strings.Repeat("a", 5000), "Bearer a.b.c", "Bearer\tx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authz string) {
		if strings.ContainsAny(authz, "\r\n") {
			return // not a header value a server can receive
		}
		rec := request(h, http.MethodGet, "/api/usage", authz, "")
		if rec.Code >= 500 {
			t.Fatalf("%q: %d %s", authz, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK {
			return
		}
		var body api.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code == "" {
			t.Fatalf("%q: %d, not the JSON error model: %s", authz, rec.Code, rec.Body)
		}
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("%q: %d, want 401", authz, rec.Code)
		}
		if tok := strings.TrimSpace(strings.TrimPrefix(authz, "Bearer")); len(tok) > 8 && strings.Contains(rec.Body.String(), tok) {
			t.Fatalf("the error repeats the header: %s", rec.Body)
		}
	})
}
