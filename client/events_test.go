package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
)

// collect returns a callback that records events, and the record.
func collect() (func(client.Event) error, *[]client.Event) {
	var got []client.Event
	return func(e client.Event) error { got = append(got, e); return nil }, &got
}

func eventIDs(evs []client.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestEventsWholeStream(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1"), RetryMS: 2000}
	srv := f.start(t)
	fn, got := collect()
	last, err := client.New(srv.URL).Events(t.Context(), "j1", "", fn)
	if err != nil {
		t.Fatal(err)
	}
	if last != "6-0" {
		t.Errorf("last id %q", last)
	}
	if !slices.Equal(eventIDs(*got), ids(f.Events)) {
		t.Errorf("ids %v", eventIDs(*got))
	}
	for i, e := range *got {
		if e.Name != f.Events[i].Name || string(e.Data) != f.Events[i].Data {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	var d client.SnapshotDeltaData
	if err := (*got)[3].Decode(&d); err != nil || d.Index != 0 || d.Text != "GPT-3.5 " {
		t.Errorf("decode: %+v %v", d, err)
	}
	var done client.JobCompletedData
	if err := (*got)[len(*got)-1].Decode(&done); err != nil || done.Status != "completed" || !(*got)[len(*got)-1].Terminal() {
		t.Errorf("terminal: %+v %v", done, err)
	}
	if c := f.Conns(); len(c) != 1 || c[0].Accept != "text/event-stream" || c[0].LastEventID != "" {
		t.Errorf("requests %+v", c)
	}
}

func TestEventsResumeSendsLastEventID(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1")}
	srv := f.start(t)
	fn, got := collect()
	if _, err := client.New(srv.URL).Events(t.Context(), "j1", "4-1", fn); err != nil {
		t.Fatal(err)
	}
	if want := ids(f.Events[9:]); !slices.Equal(eventIDs(*got), want) {
		t.Errorf("ids %v, want %v", eventIDs(*got), want)
	}
	if c := f.Conns(); c[0].LastEventID != "4-1" {
		t.Errorf("Last-Event-ID %q", c[0].LastEventID)
	}
}

func TestEventsServerClosesEarly(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1"), Drops: map[int]int{0: 5}}
	srv := f.start(t)
	fn, got := collect()
	last, err := client.New(srv.URL).Events(t.Context(), "j1", "", fn)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
	}
	if len(*got) != 5 || last != "3-1" {
		t.Errorf("%d events, last id %q", len(*got), last)
	}
}

func TestEventsCallbackStops(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1"), Hang: true}
	srv := f.start(t)
	stop := errors.New("enough")
	n := 0
	last, err := client.New(srv.URL).Events(t.Context(), "j1", "", func(e client.Event) error {
		n++
		if e.Name == client.EventSnapshotCompleted {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("err %v, want the callback's error unchanged", err)
	}
	if n != 8 || last != "4-0" {
		t.Errorf("%d events, last id %q", n, last)
	}
}

func TestEventsContextCanceled(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1")[:3], Hang: true}
	srv := f.start(t)
	ctx, cancel := context.WithCancel(t.Context())
	last, err := client.New(srv.URL).Events(ctx, "j1", "", func(e client.Event) error {
		if e.ID == "2-1" {
			cancel() // the server now hangs: only the context can end the call
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || last != "2-1" {
		t.Fatalf("err %v, last %q", err, last)
	}
}

func TestEventsIdleTimeout(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1")[:2], Hang: true}
	srv := f.start(t)
	fn, got := collect()
	last, err := client.New(srv.URL, client.WithIdleTimeout(100*time.Millisecond)).Events(t.Context(), "j1", "", fn)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(*got) != 2 || last != "2-0" {
		t.Fatalf("err %v, %d events, last %q", err, len(*got), last)
	}
}

func TestEventsHeartbeatsKeepStreamAlive(t *testing.T) {
	// Heartbeats every 10ms keep a 500ms idle timeout from firing; the
	// context ends the call once the stream has outlived the timeout.
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1")[:1], Hang: true, Heartbeat: 10 * time.Millisecond}
	srv := f.start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_, err := client.New(srv.URL, client.WithIdleTimeout(500*time.Millisecond)).Events(ctx, "j1", "", func(client.Event) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's deadline (the stream stayed alive)", err)
	}
}

func TestEventsParsing(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    []client.Event
		last    string
		wantErr error
	}{
		{
			name: "multi-line data, comments, retry, default name",
			raw:  "retry: 2000\n\n: ping\n\nid: 1-0\ndata: {\"a\":\ndata: 1}\n\n: ping\nid: 2-0\nevent: job.completed\ndata: {}\n\n",
			want: []client.Event{{ID: "1-0", Name: "message", Data: []byte("{\"a\":\n1}")}, {ID: "2-0", Name: "job.completed", Data: []byte("{}")}},
			last: "2-0",
		},
		{
			name: "CRLF and id persistence",
			raw:  "id: 9-0\r\nevent: snapshot.delta\r\ndata: {}\r\n\r\nevent: snapshot.delta\r\ndata: {}\r\n\r\nevent: job.completed\r\ndata: {}\r\n\r\n",
			want: []client.Event{{ID: "9-0", Name: "snapshot.delta", Data: []byte("{}")}, {ID: "9-0", Name: "snapshot.delta", Data: []byte("{}")}, {ID: "9-0", Name: "job.completed", Data: []byte("{}")}},
			last: "9-0",
		},
		{
			name:    "terminal event cut off is not delivered",
			raw:     "id: 1-0\nevent: snapshot.delta\ndata: {}\n\nid: 2-0\nevent: job.completed\ndata: {}\n",
			want:    []client.Event{{ID: "1-0", Name: "snapshot.delta", Data: []byte("{}")}},
			last:    "2-0",
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "events after the terminal one are not read",
			raw:     "id: 1-0\nevent: job.completed\ndata: {}\n\nid: 2-0\nevent: extra\ndata: {}\n\n",
			want:    []client.Event{{ID: "1-0", Name: "job.completed", Data: []byte("{}")}},
			last:    "1-0",
			wantErr: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{JobID: "j1", Raw: tt.raw}
			srv := f.start(t)
			fn, got := collect()
			last, err := client.New(srv.URL).Events(t.Context(), "j1", "", fn)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if last != tt.last {
				t.Errorf("last %q, want %q", last, tt.last)
			}
			if len(*got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want %d", len(*got), *got, len(tt.want))
			}
			for i := range tt.want {
				g, w := (*got)[i], tt.want[i]
				if g.ID != w.ID || g.Name != w.Name || string(g.Data) != string(w.Data) {
					t.Errorf("event %d: got %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestEventsNotAStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html></html>")
	}))
	defer srv.Close()
	_, err := client.New(srv.URL).Events(t.Context(), "j1", "", func(client.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "text/event-stream") {
		t.Fatalf("err %v", err)
	}
	// Not retried by Follow either.
	_, err = client.New(srv.URL, client.WithRetryDelay(time.Hour)).Follow(t.Context(), "j1", func(client.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "text/event-stream") {
		t.Fatalf("follow err %v", err)
	}
}

func TestFollow(t *testing.T) {
	stream := jobStream("j1")
	tests := []struct {
		name      string
		api       *fakeAPI
		opts      []client.Option
		wantErr   error
		wantIDs   []string
		wantConns []string // Last-Event-ID of each connection
	}{
		{
			name:      "no drop",
			api:       &fakeAPI{RetryMS: 1},
			wantIDs:   ids(stream),
			wantConns: []string{""},
		},
		{
			name:      "resumes after drops with the last id",
			api:       &fakeAPI{RetryMS: 1, Drops: map[int]int{0: 4, 1: 3, 2: 0}},
			wantIDs:   ids(stream),
			wantConns: []string{"", "3-0", "3-3", "3-3"},
		},
		{
			name:      "server that replays from the start gives no duplicates",
			api:       &fakeAPI{RetryMS: 1, IgnoreLastID: true, Drops: map[int]int{0: 4, 1: 9}},
			wantIDs:   ids(stream),
			wantConns: []string{"", "3-0", "4-1"},
		},
		{
			name:      "retry hint replaces the default delay",
			api:       &fakeAPI{RetryMS: 1, Drops: map[int]int{0: 1}},
			opts:      []client.Option{client.WithRetryDelay(time.Hour)},
			wantIDs:   ids(stream),
			wantConns: []string{"", "1-0"},
		},
		{
			name:      "5xx answers are retried",
			api:       &fakeAPI{Statuses: map[int]int{0: 503, 1: 502}},
			opts:      []client.Option{client.WithRetryDelay(time.Millisecond)},
			wantIDs:   ids(stream),
			wantConns: []string{"", "", ""},
		},
		{
			name:      "4xx answers are not",
			api:       &fakeAPI{Statuses: map[int]int{0: 404}},
			opts:      []client.Option{client.WithRetryDelay(time.Millisecond)},
			wantErr:   &client.APIError{},
			wantConns: []string{""},
		},
		{
			name:      "gives up after max retries without progress",
			api:       &fakeAPI{RetryMS: 1, Drops: map[int]int{0: 2, 1: 0, 2: 0, 3: 0}},
			opts:      []client.Option{client.WithMaxRetries(2)},
			wantErr:   io.ErrUnexpectedEOF,
			wantIDs:   ids(stream[:2]),
			wantConns: []string{"", "2-0", "2-0"},
		},
		{
			name:      "progress resets the retry budget",
			api:       &fakeAPI{RetryMS: 1, Drops: map[int]int{0: 2, 1: 0, 2: 2, 3: 0, 4: 2}},
			opts:      []client.Option{client.WithMaxRetries(2)},
			wantIDs:   ids(stream),
			wantConns: []string{"", "2-0", "2-0", "3-0", "3-0", "3-2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.api
			f.JobID, f.Events = "j1", stream
			srv := f.start(t)
			fn, got := collect()
			last, err := client.New(srv.URL, tt.opts...).Follow(t.Context(), "j1", fn)
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("err %v", err)
				}
			case *client.APIError:
				if !errors.As(err, &want) {
					t.Fatalf("err %v, want *APIError", err)
				}
			default:
				if !errors.Is(err, want) {
					t.Fatalf("err %v, want %v", err, want)
				}
			}
			if !slices.Equal(eventIDs(*got), tt.wantIDs) {
				t.Errorf("delivered %v\nwant      %v", eventIDs(*got), tt.wantIDs)
			}
			if len(tt.wantIDs) > 0 && last != tt.wantIDs[len(tt.wantIDs)-1] {
				t.Errorf("last id %q", last)
			}
			var conns []string
			for _, c := range f.Conns() {
				conns = append(conns, c.LastEventID)
			}
			if !slices.Equal(conns, tt.wantConns) {
				t.Errorf("connections' Last-Event-ID %q, want %q", conns, tt.wantConns)
			}
		})
	}
}

func TestFollowCallbackErrorIsNotRetried(t *testing.T) {
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1"), RetryMS: 1}
	srv := f.start(t)
	stop := errors.New("stop")
	last, err := client.New(srv.URL).Follow(t.Context(), "j1", func(e client.Event) error {
		if e.ID == "3-0" {
			return stop
		}
		return nil
	})
	if err != stop || last != "3-0" || len(f.Conns()) != 1 {
		t.Fatalf("err %v, last %q, %d connections", err, last, len(f.Conns()))
	}
}

func TestFollowContextEndsWait(t *testing.T) {
	// The stream drops at once and asks for an hour between attempts: only
	// the context can end Follow.
	f := &fakeAPI{JobID: "j1", Events: jobStream("j1"), RetryMS: 3600_000, Drops: map[int]int{0: 1}, sent: make(chan string, 16)}
	srv := f.start(t)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-f.sent
		cancel()
	}()
	_, err := client.New(srv.URL).Follow(ctx, "j1", func(client.Event) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

// A resumption after the terminal event is answered 204 No Content: the
// stream has ended, and nothing is handed over.
func TestEventsAfterTheEnd(t *testing.T) {
	tests := []struct {
		name string
		call func(c *client.Client, fn func(client.Event) error) (string, error)
		want string // last id returned
	}{
		{"events", func(c *client.Client, fn func(client.Event) error) (string, error) {
			return c.Events(t.Context(), "j1", "6-0", fn)
		}, "6-0"},
		{"follow", func(c *client.Client, fn func(client.Event) error) (string, error) {
			return c.Follow(t.Context(), "j1", fn)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lastIDs []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			fn, got := collect()
			last, err := tt.call(client.New(srv.URL), fn)
			if err != nil || last != tt.want || len(*got) != 0 {
				t.Errorf("last %q, err %v, %d events; want %q, nil, none", last, err, len(*got), tt.want)
			}
			if len(lastIDs) != 1 {
				t.Errorf("%d requests, want 1", len(lastIDs))
			}
		})
	}
}
