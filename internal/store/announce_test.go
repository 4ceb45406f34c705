package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// Text deltas are announced with the event itself and the id of the entry
// before it, so that followers need not read the stream: what the
// announcement carries is exactly what the stream holds.
func TestDeltaAnnouncementCarriesTheEvent(t *testing.T) {
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
	entries, err := b.db.Client.XRange(ctx, events.StreamKey(j.ID), "-", "+").Result()
	if err != nil || len(entries) < 2 {
		t.Fatalf("stream: %v, %v", entries, err)
	}
	prev, last := entries[len(entries)-2], entries[len(entries)-1]
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		id, a := events.ParseAnnouncement(m.Payload)
		if id != j.ID || a == nil {
			continue // a bare announcement (the member's start), or another test's job
		}
		if a.Prev != prev.ID || a.Event.ID != last.ID || a.Event.Type != last.Values["t"] || string(a.Event.Data) != last.Values["d"] {
			t.Fatalf("announced %+v (after %s), stream has %+v after %s", a.Event, a.Prev, last, prev.ID)
		}
		return
	}
}
