package events_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestParseAnnouncement(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, msg, id string
		want          *events.Announced
	}{
		{"bare job id", "job-1", "job-1", nil},
		{"carried event", "job-1\n1-0\n2-5\nsnapshot.delta\n{\"text\":\"a\\nb\"}", "job-1",
			&events.Announced{Prev: "1-0", Event: events.Event{ID: "2-5", Type: "snapshot.delta", Data: []byte(`{"text":"a\nb"}`)}}},
		{"first entry", "job-1\n\n2-0\njob.accepted\n{}", "job-1",
			&events.Announced{Event: events.Event{ID: "2-0", Type: "job.accepted", Data: []byte(`{}`)}}},
		{"data with newlines is kept whole", "j\n1-0\n2-0\nt.delta\n{\n}", "j",
			&events.Announced{Prev: "1-0", Event: events.Event{ID: "2-0", Type: "t.delta", Data: []byte("{\n}")}}},
		{"empty data", "j\n1-0\n2-0\nt.delta\n", "j",
			&events.Announced{Prev: "1-0", Event: events.Event{ID: "2-0", Type: "t.delta", Data: []byte("{}")}}},
		{"too few fields", "j\n1-0\n2-0", "j", nil},
		{"bad entry id", "j\n1-0\nnope\nt.delta\n{}", "j", nil},
		{"bad previous id", "j\nx\n2-0\nt.delta\n{}", "j", nil},
		{"no type", "j\n1-0\n2-0\n\n{}", "j", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, a := events.ParseAnnouncement(tc.msg)
			if id != tc.id || fmt.Sprint(a) != fmt.Sprint(tc.want) {
				t.Fatalf("ParseAnnouncement(%q) = %q, %+v; want %q, %+v", tc.msg, id, a, tc.id, tc.want)
			}
		})
	}
}

// FuzzParseAnnouncement: any message yields a job id without a line feed,
// and an announced event only with valid ids, the previous one before it.
func FuzzParseAnnouncement(f *testing.F) {
	f.Add("job-1")
	f.Add("job-1\n1-0\n2-5\nsnapshot.delta\n{\"text\":\"x\"}")
	f.Add("j\n\n\n\n")
	f.Fuzz(func(t *testing.T, msg string) {
		id, a := events.ParseAnnouncement(msg)
		if strings.Contains(id, "\n") {
			t.Fatalf("job id %q has a line feed", id)
		}
		if a == nil {
			return
		}
		if !events.ValidID(a.Event.ID) || (a.Prev != "" && !events.ValidID(a.Prev)) || a.Event.Type == "" || len(a.Event.Data) == 0 {
			t.Fatalf("announced %+v from %q", a, msg)
		}
	})
}

// announce publishes an announcement that carries an event, the way the
// store's emit script does.
func announce(t *testing.T, rdb *redis.Client, channel, jobID, prev, id, typ, data string) {
	t.Helper()
	msg := strings.Join([]string{jobID, prev, id, typ, data}, "\n")
	if err := rdb.Publish(context.Background(), channel, msg).Err(); err != nil {
		t.Fatal(err)
	}
}

// startSubscribedHub starts a hub on a channel of the test's own and
// returns once its subscription is in place: announcements of events that
// are not on the stream are lost to a hub that is not listening yet.
func startSubscribedHub(t *testing.T, rdb *redis.Client) (*events.Hub, string) {
	t.Helper()
	channel := "test:" + t.Name()
	h := events.NewHub(rdb, channel, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for rdb.PubSubNumSub(ctx, channel).Val()[channel] == 0 {
		<-tick.C
	}
	return h, channel
}

// followInto starts a follower of jobID that sends the ids it delivers.
func followInto(h *events.Hub, jobID string) (<-chan string, <-chan error) {
	got := make(chan string, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- h.Follow(context.Background(), jobID, func(e events.Event) error { got <- e.ID + " " + e.Type; return nil },
			events.FollowOptions{Heartbeat: time.Hour})
	}()
	return got, errc
}

// A carried event that continues the stream is delivered as carried (the
// test announces entries that are not on the stream: only the announcement
// can have delivered them); one the follower has already is not delivered
// again.
func TestFollowDeliversCarriedEvents(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h, ch := startSubscribedHub(t, db.Client)
	job := "job-carried"
	first := appendEvent(t, db.Client, job, events.JobAccepted)
	got, errc := followInto(h, job)
	if e := <-got; e != first+" "+events.JobAccepted {
		t.Fatalf("replayed %s", e)
	}
	announce(t, db.Client, ch, job, "", first, events.JobAccepted, "{}") // delivered already
	announce(t, db.Client, ch, job, first, "9999999999990-0", "snapshot.delta", `{"index":0,"text":"x"}`)
	announce(t, db.Client, ch, job, "9999999999990-0", "9999999999991-0", events.JobCompleted, `{"status":"completed"}`)
	for _, want := range []string{"9999999999990-0 snapshot.delta", "9999999999991-0 " + events.JobCompleted} {
		if e := <-got; e != want {
			t.Fatalf("delivered %s, want %s", e, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("delivered more: %s", <-got)
	}
}

// A carried event that does not follow the last delivered one (an
// announcement was missed) makes the follower read the stream: everything
// arrives once, in stream order.
func TestFollowReadsTheStreamOnAGap(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h, ch := startSubscribedHub(t, db.Client)
	job := "job-gap"
	first := appendEvent(t, db.Client, job, events.JobAccepted)
	got, errc := followInto(h, job)
	if e := <-got; e != first+" "+events.JobAccepted {
		t.Fatalf("replayed %s", e)
	}
	ctx := context.Background()
	key := events.StreamKey(job)
	missed, err := db.Client.XAdd(ctx, xadd(key, "snapshot.started")).Result() // never announced
	if err != nil {
		t.Fatal(err)
	}
	next, err := db.Client.XAdd(ctx, xadd(key, "snapshot.delta")).Result()
	if err != nil {
		t.Fatal(err)
	}
	announce(t, db.Client, ch, job, missed, next, "snapshot.delta", `{"n":1}`)
	last, err := db.Client.XAdd(ctx, xadd(key, events.JobCompleted)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Client.Publish(ctx, ch, job).Err(); err != nil { // a bare announcement
		t.Fatal(err)
	}
	for _, want := range []string{missed + " snapshot.started", next + " snapshot.delta", last + " " + events.JobCompleted} {
		if e := <-got; e != want {
			t.Fatalf("delivered %s, want %s", e, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("delivered more: %s", <-got)
	}
}

func xadd(key, typ string) *redis.XAddArgs {
	return &redis.XAddArgs{Stream: key, Values: []any{"t", typ, "d", `{"n":1}`}}
}
