package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// TTLs say how long cached answers live: an answer as of a past date does
// not change, one as of today does.
type TTLs struct {
	// Past is the lifetime of a snapshot of a date before today.
	Past time.Duration
	// Today is the lifetime of a snapshot of today's date (UTC).
	Today time.Duration
}

// For returns the lifetime of a snapshot of date (YYYY-MM-DD) written at
// now: Today for today's date (or a later one), Past otherwise.
func (t TTLs) For(date string, now time.Time) time.Duration {
	if date >= now.UTC().Format(job.DateLayout) {
		return t.Today
	}
	return t.Past
}

// ForAll returns the lifetime of a result made from snapshots of dates: the
// shortest of theirs.
func (t TTLs) ForAll(dates []string, now time.Time) time.Duration {
	ttl := t.Past
	for _, d := range dates {
		ttl = min(ttl, t.For(d, now))
	}
	return ttl
}

// Snapshot is a cached answer.
type Snapshot struct {
	Text string `json:"text"`
	// Model is the model that answered.
	Model string `json:"model"`
	// At is when it was answered, in Unix milliseconds.
	At int64 `json:"at_ms"`
}

// Aggregate is a cached aggregation result. Only complete results are
// cached: both the key changes and the narrative.
type Aggregate struct {
	KeyChanges      []job.KeyChange `json:"key_changes"`
	Narrative       string          `json:"narrative"`
	KeyChangesModel string          `json:"key_changes_model,omitempty"`
	NarrativeModel  string          `json:"narrative_model,omitempty"`
	At              int64           `json:"at_ms"`
}

// Cache reads and writes cached answers. It is safe for concurrent use.
// An entry that cannot be decoded reads as a miss.
type Cache struct {
	rdb redis.UniversalClient
	ttl TTLs
	now func() time.Time
}

// New returns a Cache on rdb whose entries live as ttl says.
func New(rdb redis.UniversalClient, ttl TTLs) *Cache {
	return &Cache{rdb: rdb, ttl: ttl, now: time.Now}
}

// Snapshots looks up every id in one round trip. The result has one entry
// per id, nil for a miss.
func (c *Cache) Snapshots(ctx context.Context, ids []SnapshotID) ([]*Snapshot, error) {
	out := make([]*Snapshot, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	// GETs in a pipeline rather than one MGET: the keys live in different
	// Redis Cluster slots.
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, id.Key())
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read snapshot cache: %w", err)
	}
	for i, cmd := range cmds {
		raw, err := cmd.Bytes()
		if err != nil {
			continue
		}
		var s Snapshot
		if json.Unmarshal(raw, &s) == nil && s.Text != "" {
			out[i] = &s
		}
	}
	return out, nil
}

// PutSnapshot caches s as the answer of id, for as long as id's date says.
func (c *Cache) PutSnapshot(ctx context.Context, id SnapshotID, s Snapshot) error {
	if s.Text == "" {
		return errors.New("cache snapshot: empty answer")
	}
	now := c.now()
	if s.At == 0 {
		s.At = now.UnixMilli()
	}
	b, _ := json.Marshal(s)
	if err := c.rdb.Set(ctx, id.Key(), b, c.ttl.For(id.Date, now)).Err(); err != nil {
		return fmt.Errorf("write snapshot cache: %w", err)
	}
	return nil
}

// Aggregate looks up the result of id; nil for a miss.
func (c *Cache) Aggregate(ctx context.Context, id AggregateID) (*Aggregate, error) {
	raw, err := c.rdb.Get(ctx, id.Key()).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read result cache: %w", err)
	}
	var a Aggregate
	if json.Unmarshal(raw, &a) != nil || a.Narrative == "" || a.KeyChanges == nil {
		return nil, nil
	}
	return &a, nil
}

// PutAggregate caches a as the result of id, for the shortest lifetime of
// the snapshots it was made from.
func (c *Cache) PutAggregate(ctx context.Context, id AggregateID, a Aggregate) error {
	if a.Narrative == "" || a.KeyChanges == nil {
		return errors.New("cache result: incomplete result")
	}
	now := c.now()
	if a.At == 0 {
		a.At = now.UnixMilli()
	}
	dates := make([]string, len(id.Snapshots))
	for i, s := range id.Snapshots {
		dates[i] = s.Date
	}
	b, _ := json.Marshal(a)
	if err := c.rdb.Set(ctx, id.Key(), b, c.ttl.ForAll(dates, now)).Err(); err != nil {
		return fmt.Errorf("write result cache: %w", err)
	}
	return nil
}
