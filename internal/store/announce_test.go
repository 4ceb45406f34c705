package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
)

// The events of a job's life are announced with the event itself and the
// id of the entry before it, so that followers need not read the stream:
// what each announcement carries is exactly what the stream holds.
func TestAnnouncementsCarryTheEvents(t *testing.T) {
	t.Parallel()
	j := timeTravel("0190aaaa-0000-7000-8000-0000000000a1", "q?", []job.Member{dated(0, time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC))})
	b := create(t, j)
	ctx := context.Background()
	ps := b.db.Client.Subscribe(ctx, events.Channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if _, _, err := b.store.StartMember(ctx, j.ID, 0, "w", "m"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendMemberText(ctx, j.ID, 0, "w", 1, "hello\nworld"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.FinishMember(ctx, j.ID, 0, "w", store.MemberOutcome{Text: "hello\nworld"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.BeginAggregate(ctx, j.ID, "agg"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendPartText(ctx, j.ID, "agg", "narrative", 1, "once"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Finish(ctx, j.ID, job.StatusCompleted, "", nil); err != nil {
		t.Fatal(err)
	}
	entries, err := b.db.Client.XRange(ctx, events.StreamKey(j.ID), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	// Every entry after job.accepted (written before the subscription) is
	// announced with itself, in order.
	for i := 1; i < len(entries); i++ {
		a := nextAnnounced(ctx, t, ps, j.ID)
		want := entries[i]
		if a.Prev != entries[i-1].ID || a.Event.ID != want.ID || a.Event.Type != want.Values["t"] || string(a.Event.Data) != want.Values["d"] {
			t.Fatalf("announcement %d carried %+v after %s; the stream has %+v after %s", i, a.Event, a.Prev, want, entries[i-1].ID)
		}
	}
}

// nextAnnounced returns the next announcement of jobID that carries an
// event (another test's job may share the channel and the id).
func nextAnnounced(ctx context.Context, t *testing.T, ps *redis.PubSub, jobID string) *events.Announced {
	t.Helper()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		if id, a := events.ParseAnnouncement(m.Payload); id == jobID && a != nil {
			return a
		}
	}
}
