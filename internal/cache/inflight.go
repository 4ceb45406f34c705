package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Inflight records, per request fingerprint, the job that answers it while
// that job runs, so that an identical request joins it instead of starting
// another. Claims are atomic across every process that shares the Redis:
// of concurrent claims of one fingerprint exactly one wins.
//
// An entry may outlive its job (a process that died before releasing it);
// callers check the holder's state and Release a holder that has ended.
type Inflight struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// NewInflight returns the registry on rdb.
func NewInflight(rdb redis.UniversalClient) *Inflight {
	return &Inflight{rdb: rdb, now: time.Now}
}

// Holder is the job that holds a fingerprint and since when.
type Holder struct {
	JobID string
	Since time.Time
}

func inflightKey(fp string) string { return "tt:inflight:" + fp }

// claimScript: KEYS[1] the entry; ARGV[1] value, ARGV[2] ttl ms. Sets the
// entry unless there is one; returns the existing value, or false.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// evictScript: KEYS[1] the entry; ARGV[1] job id. Deletes the entry if
// that job holds it.
var evictScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Claim makes jobID the holder of fp for ttl, unless a job holds it
// already: then it returns that holder and ok false.
func (f *Inflight) Claim(ctx context.Context, fp, jobID string, ttl time.Duration) (Holder, bool, error) {
	val := jobID + " " + strconv.FormatInt(f.now().UnixMilli(), 10)
	res, err := claimScript.Run(ctx, f.rdb, []string{inflightKey(fp)}, val, max(ttl.Milliseconds(), 1)).Result()
	if errors.Is(err, redis.Nil) {
		return Holder{}, true, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("claim in-flight request: %w", err)
	}
	s, _ := res.(string)
	id, ms, _ := strings.Cut(s, " ")
	since, _ := strconv.ParseInt(ms, 10, 64)
	return Holder{JobID: id, Since: time.UnixMilli(since)}, false, nil
}

// Release removes fp's entry if jobID holds it; an entry of another job
// stays. The holder releases it when its job ends; anyone may release a
// holder whose job has ended.
func (f *Inflight) Release(ctx context.Context, fp, jobID string) error {
	if fp == "" {
		return nil
	}
	if err := evictScript.Run(ctx, f.rdb, []string{inflightKey(fp)}, jobID).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release in-flight request: %w", err)
	}
	return nil
}
