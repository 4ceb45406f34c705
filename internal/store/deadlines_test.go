package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/store"
)

// EarliestDeadlines reads the earliest deadlines with their times, due or
// not, earliest first, up to the limit; a forgotten job leaves them.
func TestEarliestDeadlines(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	at := b.job.Deadline
	for id, d := range map[string]time.Time{"earlier": at.Add(-time.Hour), "later": at.Add(time.Hour)} {
		if err := b.db.Client.ZAdd(ctx, store.DeadlinesKey, redis.Z{Score: float64(d.UnixMilli()), Member: id}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.ForgetDeadline(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	type deadline struct {
		id string
		ms int64
	}
	for _, tt := range []struct {
		limit int
		want  []deadline
	}{
		{limit: 0},
		{limit: 1, want: []deadline{{"earlier", at.Add(-time.Hour).UnixMilli()}}},
		{limit: 10, want: []deadline{{"earlier", at.Add(-time.Hour).UnixMilli()}, {b.job.ID, at.UnixMilli()}}},
	} {
		ds, err := b.store.EarliestDeadlines(ctx, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]deadline, len(ds))
		for i, d := range ds {
			got[i] = deadline{d.JobID, d.At.UnixMilli()}
		}
		if !slices.Equal(got, tt.want) {
			t.Fatalf("limit %d: %v, want %v", tt.limit, got, tt.want)
		}
	}
}
