package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/timetravel-ai/timetravel/internal/client"
	"github.com/timetravel-ai/timetravel/internal/job"
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
			want := client.Accepted{JobID: "j1", Status: job.StatusQueued, Links: client.Links{Self: "/api/jobs/j1", Events: "/api/jobs/j1/events"}}
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
		body   string
		call   func(*client.Client) error
		want   client.APIError
	}{
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
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			err := tt.call(client.New(srv.URL))
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if *ae != tt.want {
				t.Errorf("got %+v, want %+v", *ae, tt.want)
			}
			if tt.want.Code != "" && !client.IsCode(err, tt.want.Code) {
				t.Errorf("IsCode(%q) is false", tt.want.Code)
			}
		})
	}
}

func TestJobAndCancel(t *testing.T) {
	f := &fakeAPI{JobID: "j1", View: job.View{ID: "j1", Status: job.StatusRunning, Question: "q",
		Snapshots: []job.Snapshot{{Index: 0, Label: "January 2023", Status: job.SnapshotRunning}}}}
	srv := f.start(t)
	c := client.New(srv.URL)
	v, err := c.Job(t.Context(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "j1" || v.Status != job.StatusRunning || len(v.Snapshots) != 1 || v.Snapshots[0].Label != "January 2023" {
		t.Errorf("job %+v", v)
	}
	v, err = c.Cancel(t.Context(), "j1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != job.StatusCanceled {
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
