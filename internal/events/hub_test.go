package events_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// appendEvent writes an event the way the store's scripts do: XADD then
// PUBLISH of the job id.
func appendEvent(t *testing.T, rdb *redis.Client, jobID, typ string) string {
	t.Helper()
	ctx := context.Background()
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamKey(jobID), Values: []any{"t", typ, "d", `{"n":1}`}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Publish(ctx, events.Channel, jobID).Err(); err != nil {
		t.Fatal(err)
	}
	return id
}

func startHub(t *testing.T, rdb *redis.Client) *events.Hub {
	t.Helper()
	h := events.NewHub(rdb, events.Channel, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func TestFollowReplaysThenFollowsUntilTerminal(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h := startHub(t, db.Client)
	job := "job-a"
	first := appendEvent(t, db.Client, job, events.JobAccepted)

	got := make(chan events.Event, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- h.Follow(context.Background(), job, func(e events.Event) error { got <- e; return nil }, events.FollowOptions{Heartbeat: time.Hour})
	}()
	if e := <-got; e.ID != first || e.Type != events.JobAccepted {
		t.Fatalf("replayed %+v, want %s job.accepted", e, first)
	}
	// Live events arrive in order; the follower ends after the terminal one.
	want := []string{events.MemberEvent("snapshot", events.VerbStarted), events.MemberEvent("snapshot", events.VerbDelta), events.JobCompleted}
	ids := make([]string, len(want))
	for i, typ := range want {
		ids[i] = appendEvent(t, db.Client, job, typ)
	}
	for i := range want {
		e := <-got
		if e.ID != ids[i] || e.Type != want[i] {
			t.Fatalf("event %d = %s %s, want %s %s", i, e.ID, e.Type, ids[i], want[i])
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if n := h.Followers(); n != 0 {
		t.Fatalf("%d followers left attached", n)
	}
}

func TestFollowResumesStrictlyAfterID(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h := startHub(t, db.Client)
	job := "job-b"
	var ids []string
	for _, typ := range []string{events.JobAccepted, events.MemberEvent("snapshot", events.VerbStarted), events.MemberEvent("snapshot", events.VerbDelta), events.JobCompleted} {
		ids = append(ids, appendEvent(t, db.Client, job, typ))
	}
	var seen []string
	err := h.Follow(context.Background(), job, func(e events.Event) error { seen = append(seen, e.ID); return nil },
		events.FollowOptions{After: ids[1], Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != fmt.Sprint(ids[2:]) {
		t.Fatalf("resumed with %v, want %v", seen, ids[2:])
	}
}

func TestFollowCallsIdleAndStopsOnItsError(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h := startHub(t, db.Client)
	appendEvent(t, db.Client, "job-c", events.JobAccepted)
	stop := errors.New("client gone")
	idles := 0
	err := h.Follow(context.Background(), "job-c", func(events.Event) error { return nil }, events.FollowOptions{
		Heartbeat: 5 * time.Millisecond,
		Idle: func() error {
			idles++
			if idles == 3 {
				return stop
			}
			return nil
		},
	})
	if !errors.Is(err, stop) || idles != 3 {
		t.Fatalf("Follow = %v after %d idles, want the Idle error after 3", err, idles)
	}
}

func TestFollowEndsWithContext(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h := startHub(t, db.Client)
	appendEvent(t, db.Client, "job-d", events.JobAccepted)
	ctx, cancel := context.WithCancel(context.Background())
	delivered := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- h.Follow(ctx, "job-d", func(events.Event) error { close(delivered); return nil }, events.FollowOptions{Heartbeat: time.Hour})
	}()
	<-delivered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
}

// Many followers share the hub's single subscription: the number of Redis
// connections does not grow with them. Not parallel: Pub/Sub is
// server-wide, so other tests' hubs would be counted.
func TestManyFollowersOneSubscription(t *testing.T) {
	db := redistest.New(t)
	h := startHub(t, db.Client)
	const jobs, perJob = 20, 10
	ctx := context.Background()
	for j := range jobs {
		appendEvent(t, db.Client, fmt.Sprintf("job-m%d", j), events.JobAccepted)
	}
	started := make(chan struct{}, jobs*perJob)
	errc := make(chan error, jobs*perJob)
	for j := range jobs {
		for range perJob {
			go func() {
				n := 0
				errc <- h.Follow(ctx, fmt.Sprintf("job-m%d", j), func(events.Event) error {
					if n++; n == 1 {
						started <- struct{}{}
					}
					return nil
				}, events.FollowOptions{Heartbeat: time.Hour})
			}()
		}
	}
	for range jobs * perJob {
		<-started
	}
	if n := h.Followers(); n != jobs*perJob {
		t.Fatalf("%d followers, want %d", n, jobs*perJob)
	}
	// The hub holds one Pub/Sub connection; reads use the client's pool.
	numsub := db.Client.PubSubNumSub(ctx, events.Channel).Val()[events.Channel]
	if numsub != 1 {
		t.Fatalf("%d subscriptions to %s, want 1", numsub, events.Channel)
	}
	if total := db.Client.PoolStats().TotalConns; total > uint32(db.Client.Options().PoolSize) {
		t.Fatalf("%d pooled connections, above the pool size", total)
	}
	for j := range jobs {
		appendEvent(t, db.Client, fmt.Sprintf("job-m%d", j), events.JobCompleted)
	}
	for range jobs * perJob {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
