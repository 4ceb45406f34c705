package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func newHandler(t testing.TB) http.Handler {
	t.Helper()
	db := redistest.New(t)
	cfg, err := config.LoadFrom(map[string]string{"REDIS_URL": db.URL, "JOB_DEADLINE": "60s"})
	if err != nil {
		t.Fatal(err)
	}
	return api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler()
}

func post(h http.Handler, ctype, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/time-travel", strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestSubmitAccepted(t *testing.T) {
	t.Parallel()
	h := newHandler(t)
	rec := post(h, "application/json; charset=utf-8", `{"question":"  What are the best AI models?  ","time_points":["today",{"date":"2023-03-14","label":"GPT-4 day"}],"complexity":"brief"}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil {
		t.Fatal(err)
	}
	if acc.JobID == "" || acc.Status != "queued" || acc.Links.Self != "/api/jobs/"+acc.JobID || !strings.HasPrefix(acc.Links.Events, acc.Links.Self+"/events?token=") {
		t.Fatalf("answer %+v", acc)
	}
	if loc := rec.Header().Get("Location"); loc != acc.Links.Self {
		t.Fatalf("Location %q", loc)
	}
	get := httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, acc.Links.Self, nil))
	var v struct {
		Kind      string `json:"kind"`
		Question  string `json:"question"`
		Status    string `json:"status"`
		Snapshots []struct{ Date, Label, Status string }
		Links     api.Links `json:"links"`
	}
	if err := json.Unmarshal(get.Body.Bytes(), &v); err != nil || get.Code != 200 {
		t.Fatalf("GET %d %s", get.Code, get.Body)
	}
	today := time.Now().UTC().Format("2006-01-02")
	if v.Question != "What are the best AI models?" || v.Status != "queued" || len(v.Snapshots) != 2 ||
		v.Snapshots[0].Label != "GPT-4 day" || v.Snapshots[1].Date != today || v.Snapshots[1].Status != "pending" {
		t.Fatalf("job %+v", v)
	}
	// The view names the job's kind and carries its links beside the
	// kind's fields.
	if v.Kind != "timetravel" || v.Links.Self != acc.Links.Self || !strings.HasPrefix(v.Links.Events, acc.Links.Self+"/events?token=") {
		t.Fatalf("view: kind %q, links %+v", v.Kind, v.Links)
	}
	for _, field := range []string{`"complexity":"brief"`, `"force_time_travel":false`, `"key_changes":[]`, `"narrative":""`, `"timings":{`} {
		if !strings.Contains(get.Body.String(), field) {
			t.Errorf("view lacks %s: %s", field, get.Body)
		}
	}
}

// A model that is not offered is refused with the field that names it and
// the models that are.
func TestModelNotAllowed(t *testing.T) {
	t.Parallel()
	h := handlerWith(t, map[string]string{"LLM_MODEL": "m1", "LLM_ALLOWED_MODELS": "m2"})
	rec := post(h, "application/json", `{"question":"Which model?","model":"gpt-4-32k"}`)
	if e := errorOf(t, rec); rec.Code != http.StatusUnprocessableEntity || e.Code != api.CodeModelNotAllowed || e.Field != "model" ||
		!slices.Equal(e.Allowed, []string{"m1", "m2"}) || !strings.Contains(e.Message, "gpt-4-32k") {
		t.Fatalf("%d %+v", rec.Code, e)
	}
	for _, m := range []string{"m1", "m2", ""} {
		if rec := post(h, "application/json", `{"question":"Which model?","model":"`+m+`"}`); rec.Code != http.StatusAccepted {
			t.Errorf("model %q: %d %s", m, rec.Code, rec.Body)
		}
	}
}

// FuzzSubmit: whatever the body, the api answers 202 or a 4xx with the JSON
// error model; never a 5xx, never a panic.
func FuzzSubmit(f *testing.F) {
	for _, seed := range []string{
		`{"question":"x"}`, `{"question":""}`, `{`, `[]`, `null`, `{"question":"x","time_points":[null]}`,
		`{"question":"x","time_points":[{"date":"2023-01-01","x":1}]}`, `{"question":"x","time_points":"today"}`,
		`{"question":"x","complexity":1}`, `{"question":"x"} trailing`, `{"question":"\u0000"}`, "\xff\xfe",
	} {
		f.Add(seed)
	}
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, body string) {
		rec := post(h, "application/json", body)
		if rec.Code == http.StatusAccepted {
			return
		}
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		var e api.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("status %d for %q: body %s is not the error model", rec.Code, body, rec.Body)
		}
	})
}
