package quota

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestStoredPage: pages of an owner's stored jobs come newest first
// (highest expiry, then highest id among equal expiries), each entry once
// across pages of any size, without the expired entries or another
// owner's.
func TestStoredPage(t *testing.T) {
	t.Parallel()
	const owner, other = "0123456789abcdef", "fedcba9876543210"
	// Expiries: three jobs share one (admitted in the same millisecond),
	// one has expired.
	held := map[string]time.Duration{
		"a": time.Minute, "b": 2 * time.Minute, "c1": 3 * time.Minute, "c2": 3 * time.Minute, "c3": 3 * time.Minute,
		"d": 4 * time.Minute, "old": -time.Second,
	}
	want := []string{"d", "c3", "c2", "c1", "b", "a"}
	for _, limit := range []int{1, 2, 3, 4, 6, 7, 50} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			t.Parallel()
			q, _, db := newQuota(t, start)
			seed(t, db.Client, storedKey(owner), held)
			seed(t, db.Client, storedKey(other), map[string]time.Duration{"x": time.Hour})
			var got []string
			var after StoredEntry
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatalf("the pages do not end: %v", got)
				}
				page, err := q.StoredPage(context.Background(), owner, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("%d entries, limit %d", len(page), limit)
				}
				for _, e := range page {
					if e.Score != start.Add(held[e.ID]).UnixMilli() {
						t.Errorf("%s: score %d, want its expiry", e.ID, e.Score)
					}
					got = append(got, e.ID)
				}
				if len(page) < limit {
					break
				}
				after = page[len(page)-1]
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listed %v, want %v", got, want)
			}
		})
	}
}

func TestStoredPageEdges(t *testing.T) {
	t.Parallel()
	q, _, db := newQuota(t, start)
	ctx := context.Background()
	if _, err := q.StoredPage(ctx, "", StoredEntry{}, 5); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("no owner: %v", err)
	}
	if page, err := q.StoredPage(ctx, "nobody", StoredEntry{}, 5); err != nil || len(page) != 0 {
		t.Fatalf("an owner without jobs: %v %v", page, err)
	}
	seed(t, db.Client, storedKey("o"), map[string]time.Duration{"a": time.Minute})
	if page, err := q.StoredPage(ctx, "o", StoredEntry{}, 0); err != nil || len(page) != 0 {
		t.Fatalf("limit 0: %v %v", page, err)
	}
	// After an entry that left the set: the position still holds.
	gone := StoredEntry{ID: "b", Score: start.Add(2 * time.Minute).UnixMilli()}
	if page, err := q.StoredPage(ctx, "o", gone, 5); err != nil || len(page) != 1 || page[0].ID != "a" {
		t.Fatalf("after a removed entry: %v %v", page, err)
	}
}
