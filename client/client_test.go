package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

func TestSubmitBody(t *testing.T) {
	tests := []struct {
		name string
		req  client.SubmitRequest
		want string
	}{
		{"question only", client.SubmitRequest{Question: "q"}, `{"question":"q"}`},
		{"all fields", client.SubmitRequest{
			Question:        "q",
			TimePoints:      []client.TimePoint{{Date: "2023-01-01"}, {Date: "2024-05-01", Label: "May 2024"}, client.Today},
			Model:           "gpt-4o",
			Complexity:      "brief",
			ForceTimeTravel: true,
		}, `{"question":"q","time_points":["2023-01-01",{"date":"2024-05-01","label":"May 2024"},"today"],"model":"gpt-4o","complexity":"brief","force_time_travel":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{JobID: "j1"}
			srv := f.start(t)
			c := client.New(srv.URL + "/") // a trailing slash is fine
			a, err := c.Submit(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			want := client.Accepted{JobID: "j1", Status: client.StatusQueued, Links: client.Links{Self: "/api/jobs/j1", Events: "/api/jobs/j1/events"}}
			if a != want {
				t.Errorf("accepted %+v, want %+v", a, want)
			}
			if got := string(f.submitted[0]); got != tt.want {
				t.Errorf("body\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestTimePointJSON(t *testing.T) {
	in := []client.TimePoint{{Date: "2023-01-01"}, {Date: "2024-05-01", Label: "May 2024"}, client.Today}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []client.TimePoint
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Errorf("round trip: %v → %s → %v", in, b, out)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		call   func(*client.Client) error
		want   client.APIError
	}{
		{
			name: "quota", status: 429, header: http.Header{"Retry-After": {"2"}},
			body: `{"error":{"code":"quota_exceeded","limit":"submissions_per_minute","message":"too many submissions: at most 60 a minute for this API key"}}`,
			call: func(c *client.Client) error {
				_, err := c.Submit(t.Context(), client.SubmitRequest{Question: "q"})
				return err
			},
			want: client.APIError{StatusCode: 429, Code: client.CodeQuotaExceeded, Limit: "submissions_per_minute",
				Message: "too many submissions: at most 60 a minute for this API key", RetryAfter: 2 * time.Second},
		},
		{
			name: "quota without Retry-After", status: 429,
			body: `{"error":{"code":"quota_exceeded","limit":"tokens_per_day","message":"used up"}}`,
			call: func(c *client.Client) error {
				_, err := c.Submit(t.Context(), client.SubmitRequest{Question: "q"})
				return err
			},
			want: client.APIError{StatusCode: 429, Code: client.CodeQuotaExceeded, Limit: "tokens_per_day", Message: "used up"},
		},
		{
			name: "unreadable Retry-After", status: 429, header: http.Header{"Retry-After": {"soon"}},
			body: `{"error":{"code":"quota_exceeded","limit":"sse_connections","message":"too many"}}`,
			call: func(c *client.Client) error { _, err := c.Usage(t.Context()); return err },
			want: client.APIError{StatusCode: 429, Code: client.CodeQuotaExceeded, Limit: "sse_connections", Message: "too many"},
		},
		{
			name: "model not allowed", status: 422,
			body: `{"error":{"code":"model_not_allowed","message":"model gpt-5 is not offered","field":"model","allowed":["gpt-4o","gpt-4o-mini"]}}`,
			call: func(c *client.Client) error {
				_, err := c.Submit(t.Context(), client.SubmitRequest{Question: "q", Model: "gpt-5"})
				return err
			},
			want: client.APIError{StatusCode: 422, Code: client.CodeModelNotAllowed, Message: "model gpt-5 is not offered",
				Field: "model", Allowed: []string{"gpt-4o", "gpt-4o-mini"}},
		},
		{
			name: "unauthorized", status: 401,
			body: `{"error":{"code":"unauthorized","message":"missing API key"}}`,
			call: func(c *client.Client) error { _, err := c.Models(t.Context()); return err },
			want: client.APIError{StatusCode: 401, Code: client.CodeUnauthorized, Message: "missing API key"},
		},
		{
			name: "invalid field", status: 400,
			body: `{"error":{"code":"invalid_field","message":"question must not be empty","field":"question"}}`,
			call: func(c *client.Client) error { _, err := c.Submit(t.Context(), client.SubmitRequest{}); return err },
			want: client.APIError{StatusCode: 400, Code: "invalid_field", Message: "question must not be empty", Field: "question"},
		},
		{
			name: "unknown job", status: 404,
			body: `{"error":{"code":"job_not_found","message":"no such job"}}`,
			call: func(c *client.Client) error { _, err := c.Job(t.Context(), "nope"); return err },
			want: client.APIError{StatusCode: 404, Code: "job_not_found", Message: "no such job"},
		},
		{
			name: "finished job", status: 409,
			body: `{"error":{"code":"job_finished","message":"job already ended"}}`,
			call: func(c *client.Client) error { _, err := c.Cancel(t.Context(), "j"); return err },
			want: client.APIError{StatusCode: 409, Code: "job_finished", Message: "job already ended"},
		},
		{
			name: "not JSON", status: 502, body: "<html>Bad Gateway</html>",
			call: func(c *client.Client) error { _, err := c.Job(t.Context(), "j"); return err },
			want: client.APIError{StatusCode: 502, Message: "<html>Bad Gateway</html>"},
		},
		{
			name: "empty body", status: 503,
			call: func(c *client.Client) error { _, err := c.Job(t.Context(), "j"); return err },
			want: client.APIError{StatusCode: 503, Message: "Service Unavailable"},
		},
		{
			name: "events refused", status: 404,
			body: `{"error":{"code":"job_not_found","message":"no such job"}}`,
			call: func(c *client.Client) error {
				_, err := c.Events(t.Context(), "j", "", func(client.Event) error { return nil })
				return err
			},
			want: client.APIError{StatusCode: 404, Code: "job_not_found", Message: "no such job"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, vs := range tt.header {
					w.Header()[k] = vs
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			err := tt.call(client.New(srv.URL))
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if !reflect.DeepEqual(*ae, tt.want) {
				t.Errorf("got %+v, want %+v", *ae, tt.want)
			}
			if tt.want.Code != "" && !client.IsCode(err, tt.want.Code) {
				t.Errorf("IsCode(%q) is false", tt.want.Code)
			}
		})
	}
}

func TestJobAndCancel(t *testing.T) {
	f := &fakeAPI{JobID: "j1", View: client.JobView{ID: "j1", Status: client.StatusRunning, Question: "q",
		Snapshots: []client.Snapshot{{Index: 0, Label: "January 2023", Status: client.SnapshotRunning}}}}
	srv := f.start(t)
	c := client.New(srv.URL)
	v, err := c.Job(t.Context(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "j1" || v.Status != client.StatusRunning || len(v.Snapshots) != 1 || v.Snapshots[0].Label != "January 2023" {
		t.Errorf("job %+v", v)
	}
	v, err = c.Cancel(t.Context(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != client.StatusCanceled {
		t.Errorf("after cancel: %s", v.Status)
	}
	// Ids are path-escaped.
	if _, err := c.Job(t.Context(), "a/b?c"); !client.IsCode(err, "job_not_found") {
		t.Errorf("escaped id: %v", err)
	}
}

func TestBadBaseURL(t *testing.T) {
	for _, u := range []string{"", "not a url", "/relative"} {
		if _, err := client.New(u).Job(t.Context(), "j"); err == nil {
			t.Errorf("%q: no error", u)
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	_, err := client.New(u).Submit(t.Context(), client.SubmitRequest{Question: "q"})
	var ae *client.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("err %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		header string
		want   time.Duration
		slack  time.Duration // tolerated shortfall for HTTP dates, which count from the answer
	}{
		{name: "none", header: "", want: 0},
		{name: "seconds", header: "7", want: 7 * time.Second},
		{name: "zero", header: "0", want: 0},
		{name: "negative", header: "-3", want: 0},
		{name: "not a number", header: "soon", want: 0},
		{name: "huge", header: "99999999999999999", want: 24 * time.Hour},
		{name: "http date", header: now.Add(90 * time.Second).UTC().Format(http.TimeFormat), want: 90 * time.Second, slack: 5 * time.Second},
		{name: "past http date", header: now.Add(-time.Hour).UTC().Format(http.TimeFormat), want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				writeError(w, http.StatusTooManyRequests, "quota_exceeded", "slow down", "")
			}))
			defer srv.Close()
			_, err := client.New(srv.URL).Job(t.Context(), "j")
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v, want *APIError", err)
			}
			if ae.RetryAfter > tt.want || ae.RetryAfter < tt.want-tt.slack-time.Second {
				t.Errorf("RetryAfter %v, want %v", ae.RetryAfter, tt.want)
			}
		})
	}
}

func TestUsageAndModels(t *testing.T) {
	mux := http.NewServeMux()
	var auth []string
	mux.HandleFunc("GET /api/usage", func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"key":{"id":"0123456789abcdef","name":"team-a"},
 "limits":{"submissions_per_minute":60,"running_jobs":16,"stored_jobs":5000,"tokens_per_day":2000000,"sse_connections":32},
 "usage":{"submissions_available":57,"running_jobs":2,"stored_jobs":311,"tokens_today":48211,"sse_connections":1}}`)
	})
	mux.HandleFunc("GET /api/models", func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"default":"gpt-4o","models":["gpt-4o","gpt-4o-mini"]}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := client.New(srv.URL, client.WithAPIKey("ttk_k"))

	u, err := c.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantU := client.Usage{
		Key:    client.KeyInfo{ID: "0123456789abcdef", Name: "team-a"},
		Limits: client.Limits{SubmissionsPerMinute: 60, RunningJobs: 16, StoredJobs: 5000, TokensPerDay: 2000000, SSEConnections: 32},
		Usage:  client.UsageCounts{SubmissionsAvailable: 57, RunningJobs: 2, StoredJobs: 311, TokensToday: 48211, SSEConnections: 1},
	}
	if u != wantU {
		t.Errorf("usage %+v, want %+v", u, wantU)
	}
	m, err := c.Models(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (client.Models{Default: "gpt-4o", Models: []string{"gpt-4o", "gpt-4o-mini"}}); !reflect.DeepEqual(m, want) {
		t.Errorf("models %+v, want %+v", m, want)
	}
	if want := []string{"Bearer ttk_k", "Bearer ttk_k"}; !reflect.DeepEqual(auth, want) {
		t.Errorf("Authorization headers %q, want %q", auth, want)
	}
}

func TestStatuses(t *testing.T) {
	tests := []struct {
		job      client.JobStatus
		terminal bool
	}{
		{client.StatusQueued, false}, {client.StatusRunning, false}, {client.StatusAggregating, false},
		{client.StatusCompleted, true}, {client.StatusPartial, true}, {client.StatusFailed, true}, {client.StatusCanceled, true},
		{"", false},
	}
	for _, tt := range tests {
		if got := tt.job.Terminal(); got != tt.terminal {
			t.Errorf("JobStatus(%q).Terminal() = %v", tt.job, got)
		}
	}
	snaps := []struct {
		s        client.SnapshotStatus
		terminal bool
	}{
		{client.SnapshotPending, false}, {client.SnapshotRunning, false}, {client.SnapshotCompleted, true},
		{client.SnapshotFailed, true}, {client.SnapshotCanceled, true}, {client.SnapshotExpired, true},
	}
	for _, tt := range snaps {
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("SnapshotStatus(%q).Terminal() = %v", tt.s, got)
		}
	}
	hooks := []struct {
		s     client.WebhookStatus
		final bool
	}{{client.WebhookPending, false}, {client.WebhookDelivered, true}, {client.WebhookFailed, true}}
	for _, tt := range hooks {
		if got := tt.s.Final(); got != tt.final {
			t.Errorf("WebhookStatus(%q).Final() = %v", tt.s, got)
		}
	}
}

func TestJobs(t *testing.T) {
	mux := http.NewServeMux()
	var queries []string
	mux.HandleFunc("GET /api/jobs", func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("cursor") {
		case "":
			fmt.Fprint(w, `{"jobs":[{"job_id":"j2","kind":"ensemble","status":"running","question":"q2?","created_at":"2025-01-02T03:04:05Z","cached":false}],"next_cursor":"c/1+"}`)
		case "c/1+":
			fmt.Fprint(w, `{"jobs":[{"job_id":"j1","kind":"timetravel","status":"completed","question":"q1?","created_at":"2025-01-02T03:04:00Z","finished_at":"2025-01-02T03:04:01.5Z","total_ms":1500,"cached":true}]}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"invalid_field","field":"cursor","message":"bad cursor"}}`)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := client.New(srv.URL + "/")

	first, err := c.Jobs(t.Context(), client.JobsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Jobs) != 1 || first.Jobs[0].JobID != "j2" || first.Jobs[0].Status != client.StatusRunning || first.Jobs[0].FinishedAt != nil || first.NextCursor != "c/1+" {
		t.Fatalf("first page %+v", first)
	}
	second, err := c.Jobs(t.Context(), client.JobsQuery{Limit: 1, Cursor: first.NextCursor})
	if err != nil {
		t.Fatal(err)
	}
	j := second.Jobs[0]
	if j.JobID != "j1" || !j.Cached || j.TotalMS == nil || *j.TotalMS != 1500 || j.FinishedAt == nil ||
		!j.FinishedAt.Equal(time.Date(2025, 1, 2, 3, 4, 1, 5e8, time.UTC)) || second.NextCursor != "" {
		t.Fatalf("second page %+v", second)
	}
	_, err = c.Jobs(t.Context(), client.JobsQuery{Cursor: "nope"})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || ae.Code != client.CodeInvalidField || ae.Field != "cursor" {
		t.Fatalf("bad cursor: %v", err)
	}
	if want := []string{"", "cursor=c%2F1%2B&limit=1", "cursor=nope"}; !reflect.DeepEqual(queries, want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
}
