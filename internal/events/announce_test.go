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

// following is a follower of a job on a hub of the test's own, past the
// replay of the job's first event.
type following struct {
	db    redistest.DB
	ch    string // the hub's channel
	job   string
	first string // the id of the replayed event
	got   chan string
	errc  chan error
}

// follow appends job.accepted to job's stream, starts a follower, and
// returns once it has replayed that event.
func follow(t *testing.T, job string) *following {
	t.Helper()
	f := &following{db: redistest.New(t), job: job, got: make(chan string, 64), errc: make(chan error, 1)}
	var h *events.Hub
	h, f.ch = startSubscribedHub(t, f.db.Client)
	f.first = appendEvent(t, f.db.Client, job, events.JobAccepted)
	go func() {
		f.errc <- h.Follow(context.Background(), job, func(e events.Event) error { f.got <- e.ID + " " + e.Type; return nil },
			events.FollowOptions{Heartbeat: time.Hour})
	}()
	if e := <-f.got; e != f.first+" "+events.JobAccepted {
		t.Fatalf("replayed %s", e)
	}
	return f
}

// delivered checks that the follower delivers want ("<id> <type>" each),
// then ends, and delivered nothing more.
func (f *following) delivered(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		if e := <-f.got; e != w {
			t.Fatalf("delivered %s, want %s", e, w)
		}
	}
	if err := <-f.errc; err != nil {
		t.Fatal(err)
	}
	if len(f.got) != 0 {
		t.Fatalf("delivered more: %s", <-f.got)
	}
}

// A carried event that continues the stream is delivered as carried (the
// test announces entries that are not on the stream: only the announcement
// can have delivered them); one the follower has already is not delivered
// again.
func TestFollowDeliversCarriedEvents(t *testing.T) {
	t.Parallel()
	f := follow(t, "job-carried")
	c := f.db.Client
	announce(t, c, f.ch, f.job, "", f.first, events.JobAccepted, "{}") // delivered already
	announce(t, c, f.ch, f.job, f.first, "9999999999990-0", "snapshot.delta", `{"index":0,"text":"x"}`)
	announce(t, c, f.ch, f.job, "9999999999990-0", "9999999999991-0", events.JobCompleted, `{"status":"completed"}`)
	f.delivered(t, "9999999999990-0 snapshot.delta", "9999999999991-0 "+events.JobCompleted)
}

// A carried event that does not follow the last delivered one (an
// announcement was missed) makes the follower read the stream: everything
// arrives once, in stream order.
func TestFollowReadsTheStreamOnAGap(t *testing.T) {
	t.Parallel()
	f := follow(t, "job-gap")
	c := f.db.Client
	ctx := context.Background()
	key := events.StreamKey(f.job)
	missed, err := c.XAdd(ctx, xadd(key, "snapshot.started")).Result() // never announced
	if err != nil {
		t.Fatal(err)
	}
	next, err := c.XAdd(ctx, xadd(key, "snapshot.delta")).Result()
	if err != nil {
		t.Fatal(err)
	}
	announce(t, c, f.ch, f.job, missed, next, "snapshot.delta", `{"n":1}`)
	last, err := c.XAdd(ctx, xadd(key, events.JobCompleted)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, f.ch, f.job).Err(); err != nil { // a bare announcement
		t.Fatal(err)
	}
	f.delivered(t, missed+" snapshot.started", next+" snapshot.delta", last+" "+events.JobCompleted)
}

func xadd(key, typ string) *redis.XAddArgs {
	return &redis.XAddArgs{Stream: key, Values: []any{"t", typ, "d", `{"n":1}`}}
}
