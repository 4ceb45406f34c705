package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// TTLs say how long cached answers live: an answer that cannot change (a
// time point in the past) lives long, a volatile one (about today) does
// not.
type TTLs struct {
	// Past is the lifetime of an answer that does not change.
	Past time.Duration
	// Today is the lifetime of a volatile answer (jobkind.Member.Volatile),
	// and of any result made from one.
	Today time.Duration
}

// For returns the lifetime of an entry: Today when volatile, Past
// otherwise.
func (t TTLs) For(volatile bool) time.Duration {
	if volatile {
		return t.Today
	}
	return t.Past
}

// Answer is a cached member answer.
type Answer struct {
	Text string `json:"text"`
	// Model is the model that answered.
	Model string `json:"model"`
	// At is when it was answered, in Unix milliseconds.
	At int64 `json:"at_ms"`
}

// result is a result cache entry: the parts of a complete result, without
// the bookkeeping of the job that made it, and when it was made.
type result struct {
	Parts []job.Part `json:"parts"`
	At    int64      `json:"at_ms"`
}

// Cache reads and writes cached answers and results, by the keys their
// kinds give them (jobkind.Member.CacheKey, jobkind.Kind.ResultKey). It is
// safe for concurrent use. An empty key is never cached: it reads as a
// miss and is not written. An entry that cannot be decoded, or that holds
// no usable answer or no complete result, reads as a miss.
type Cache struct {
	rdb redis.UniversalClient
	ttl TTLs
	now func() time.Time
}

// New returns a Cache on rdb whose entries live as ttl says.
func New(rdb redis.UniversalClient, ttl TTLs) *Cache {
	return &Cache{rdb: rdb, ttl: ttl, now: time.Now}
}

// Members looks up the answer of every key in one round trip (none when
// no key is set). The result has one entry per key, in order, nil for a
// miss; an empty key is a miss.
func (c *Cache) Members(ctx context.Context, keys []string) ([]*Answer, error) {
	out := make([]*Answer, len(keys))
	cmds := make([]*redis.StringCmd, len(keys))
	some := false
	for _, k := range keys {
		some = some || k != ""
	}
	if !some {
		return out, nil
	}
	// GETs in a pipeline rather than one MGET: the keys live in different
	// Redis Cluster slots.
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			if k != "" {
				cmds[i] = p.Get(ctx, MemberRedisKey(k))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read member cache: %w", err)
	}
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		raw, err := cmd.Bytes()
		if err != nil {
			continue
		}
		var a Answer
		if json.Unmarshal(raw, &a) == nil && a.Text != "" {
			out[i] = &a
		}
	}
	return out, nil
}

// PutMember caches a as the answer of key: for TTLs.Today when volatile,
// TTLs.Past otherwise. At defaults to now. An empty key is not cached (no
// error); an empty answer is refused with an error.
func (c *Cache) PutMember(ctx context.Context, key string, a Answer, volatile bool) error {
	if key == "" {
		return nil
	}
	if a.Text == "" {
		return errors.New("cache member answer: empty answer")
	}
	now := c.now()
	if a.At == 0 {
		a.At = now.UnixMilli()
	}
	b, _ := json.Marshal(a)
	if err := c.rdb.Set(ctx, MemberRedisKey(key), b, c.ttl.For(volatile)).Err(); err != nil {
		return fmt.Errorf("write member cache: %w", err)
	}
	return nil
}

// Result looks up the result of key; nil for a miss. The result has its
// parts (Name, Value or Text, Model), Cached false and StartedAt 0: the
// caller marks it as it serves it.
func (c *Cache) Result(ctx context.Context, key string) (*job.Result, error) {
	if key == "" {
		return nil, nil
	}
	raw, err := c.rdb.Get(ctx, ResultRedisKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read result cache: %w", err)
	}
	var e result
	if json.Unmarshal(raw, &e) != nil || !Complete(e.Parts) {
		return nil, nil
	}
	return &job.Result{Parts: e.Parts}, nil
}

// PutResult caches r as the result of key: for TTLs.Today when volatile
// (made from a volatile answer), TTLs.Past otherwise. Only a complete
// result is cached (see Complete); anything else, and an empty key, is
// not written, without error. Only each part's Name, Value, Text and
// Model are kept: its duration and attempts belong to the job that made
// it, and r's StartedAt and Cached are dropped.
func (c *Cache) PutResult(ctx context.Context, key string, r job.Result, volatile bool) error {
	if key == "" || !Complete(r.Parts) {
		return nil
	}
	e := result{Parts: make([]job.Part, len(r.Parts)), At: c.now().UnixMilli()}
	for i, p := range r.Parts {
		e.Parts[i] = job.Part{Name: p.Name, Value: p.Value, Text: p.Text, Model: p.Model}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("cache result: %w", err)
	}
	if err := c.rdb.Set(ctx, ResultRedisKey(key), b, c.ttl.For(volatile)).Err(); err != nil {
		return fmt.Errorf("write result cache: %w", err)
	}
	return nil
}

// Complete reports whether parts make a result worth caching: at least
// one part, each named, none failed, each with its outcome (a structured
// part's value, not null; a streamed part's text, not empty).
func Complete(parts []job.Part) bool {
	if len(parts) == 0 {
		return false
	}
	for _, p := range parts {
		if p.Name == "" || p.Error != "" {
			return false
		}
		if v := bytes.TrimSpace(p.Value); len(v) > 0 {
			if string(v) == "null" {
				return false
			}
			continue
		}
		if p.Text == "" {
			return false
		}
	}
	return true
}
