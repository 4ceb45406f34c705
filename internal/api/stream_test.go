package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

const allowedOrigin = "https://app.example.com"

// endedJob is an api (allowing allowedOrigin) with one ended job; it
// returns the handler, the job's id and its events' ids.
func endedJob(t testing.TB) (http.Handler, string, []string) {
	t.Helper()
	db := redistest.New(t)
	cfg, err := config.LoadFrom(map[string]string{"REDIS_URL": db.URL, "CORS_ALLOWED_ORIGINS": allowedOrigin + "/"})
	if err != nil {
		t.Fatal(err)
	}
	h := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler()
	rec := post(h, "application/json", `{"question":"When does a stream end?","time_points":["2023-01-01"]}`)
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil {
		t.Fatal(err)
	}
	st := store.New(db.Client, cfg.JobRetention)
	if err := st.Finish(context.Background(), acc.JobID, job.StatusCanceled, job.CanceledByClient, nil); err != nil {
		t.Fatal(err)
	}
	evs, err := st.Events(context.Background(), acc.JobID, "")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return h, acc.JobID, ids
}

func getEvents(h http.Handler, id, lastEventID string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/api/jobs/"+id+"/events", nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// A stream resumed after its terminal event answers 204 (an EventSource
// stops); an id past the end is a 400; one before the end replays the rest.
func TestStreamEnd(t *testing.T) {
	t.Parallel()
	h, id, ids := endedJob(t)
	last := ids[len(ids)-1]
	tests := []struct {
		name, after string
		status      int
		events      int
	}{
		{"from the start", "", http.StatusOK, len(ids)},
		{"before the end", ids[0], http.StatusOK, len(ids) - 1},
		{"after the terminal event", last, http.StatusNoContent, 0},
		{"past the end", "99999999999999-0", http.StatusBadRequest, 0},
		{"malformed", "yesterday", http.StatusBadRequest, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := getEvents(h, id, tt.after, nil)
			if rec.Code != tt.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			if n := strings.Count(rec.Body.String(), "\nevent: "); tt.status == http.StatusOK && n != tt.events {
				t.Fatalf("%d events, want %d:\n%s", n, tt.events, rec.Body)
			}
			if tt.status == http.StatusBadRequest && errorOf(t, rec).Field != "Last-Event-ID" {
				t.Fatalf("400 does not name Last-Event-ID: %s", rec.Body)
			}
		})
	}
}

// Pages of an allowed origin get the CORS headers (and preflights their
// answer); other origins get none, so their browser keeps the answer.
func TestCORS(t *testing.T) {
	t.Parallel()
	h, id, _ := endedJob(t)
	pre := httptest.NewRequest(http.MethodOptions, "/api/time-travel", nil)
	pre.Header.Set("Origin", allowedOrigin)
	pre.Header.Set("Access-Control-Request-Method", http.MethodPost)
	pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, pre)
	if rec.Code/100 != 2 || rec.Header().Get("Access-Control-Allow-Origin") != allowedOrigin ||
		!strings.Contains(strings.ToLower(rec.Header().Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	got := getEvents(h, id, "", map[string]string{"Origin": allowedOrigin})
	if got.Header().Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Fatalf("stream for an allowed origin: %v", got.Header())
	}
	req := httptest.NewRequest(http.MethodPost, "/api/time-travel", strings.NewReader(`{"question":"Which headers may a page read?"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", allowedOrigin)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if exp := rec.Header().Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "Location") || !strings.Contains(strings.ToLower(exp), "ratelimit") {
		t.Fatalf("exposed headers %q", exp)
	}
	other := getEvents(h, id, "", map[string]string{"Origin": "https://evil.example.net"})
	if other.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin got %q", other.Header().Get("Access-Control-Allow-Origin"))
	}
}

// FuzzEventsRequest: any Last-Event-ID and any job id in the events URL
// get a stream, a 204 or a JSON 4xx; never a 5xx.
func FuzzEventsRequest(f *testing.F) {
	h, id, ids := endedJob(f)
	f.Add(id, "")
	f.Add(id, ids[0])
	f.Add(id, ids[len(ids)-1])
	f.Add(id, "0-0")
	f.Add(id, "18446744073709551615-18446744073709551615")
	f.Add(id, "99999999999999999999-0")
	f.Add("not-a-uuid", "1-1")
	f.Add(id+"x", "")
	f.Add("../../admin", "\x00")
	f.Fuzz(func(t *testing.T, jobID, after string) {
		if strings.ContainsAny(after, "\r\n") {
			return // not a header value a server can receive
		}
		req := httptest.NewRequest(http.MethodGet, "/api/jobs/x/events", nil)
		req.URL.Path = "/api/jobs/" + jobID + "/events"
		req.URL.RawPath = "/api/jobs/" + url.PathEscape(jobID) + "/events"
		req.Header.Set("Last-Event-ID", after)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("%q %q: %d %s", jobID, after, rec.Code, rec.Body)
		case rec.Code == http.StatusOK || rec.Code == http.StatusNoContent:
		default:
			var body api.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code == "" {
				t.Fatalf("%q %q: %d, not the JSON error model: %q", jobID, after, rec.Code, rec.Body)
			}
		}
	})
}
