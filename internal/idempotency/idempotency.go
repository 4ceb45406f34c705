// Package idempotency keeps the Idempotency-Key of job submissions: a
// client that sends the same key with the same request again (the same
// kind of job, the same body), within the key's lifetime, gets the job of
// its first request instead of a second job; the same key with another
// request is refused. Records live in Redis and
// are shared by every api process.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxKeyLen bounds a key.
const MaxKeyLen = 255

// ErrMismatch: the key was first used with another request body.
var ErrMismatch = errors.New("idempotency key was used with a different request body")

// ErrInProgress: the first request with the key has not decided its job yet.
var ErrInProgress = errors.New("a request with this idempotency key is still in progress")

// CheckKey says what is wrong with a key: it must be 1 to MaxKeyLen
// printable ASCII characters (no spaces at either end).
func CheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("Idempotency-Key must not be empty")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("Idempotency-Key is longer than %d characters", MaxKeyLen)
	case strings.TrimSpace(key) != key:
		return errors.New("Idempotency-Key must not start or end with white space")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return errors.New("Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

// BodyHash is the digest that tells two request bodies apart: the SHA-256
// of v's JSON encoding. Pass the decoded request, so that white space and
// member order do not count.
func BodyHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hash request body: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// RequestHash is the digest that tells two submissions apart: the kind of
// job they ask for (a body sent to two kinds' routes is two requests) and
// their JSON body, canonical: decoded and encoded again, so that white
// space, member order and how strings are escaped do not count, while
// every member present, and every value as written, does. body must be
// JSON.
func RequestHash(kind string, body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers as written, never rounded
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("hash request body: %w", err)
	}
	return BodyHash(struct {
		Kind string `json:"kind"`
		Body any    `json:"body"`
	}{kind, v})
}

// Keys stores the records. It is safe for concurrent use.
type Keys struct {
	rdb redis.UniversalClient
	ttl time.Duration
	// pendingTTL bounds a reservation whose request never finished (its
	// process died), so that the key frees itself: soon enough for a
	// client that retries on another replica (an api killed mid-request),
	// long after a request's own work (a few Redis round trips) is done.
	pendingTTL time.Duration
}

// New returns the store on rdb; a key keeps its job for ttl.
func New(rdb redis.UniversalClient, ttl time.Duration) *Keys {
	return &Keys{rdb: rdb, ttl: ttl, pendingTTL: 10 * time.Second}
}

// redisKey hashes the client's key, which may hold anything printable
// (braces too, which Redis Cluster would read as a hash tag).
func redisKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "tt:idem:" + hex.EncodeToString(sum[:16])
}

// record is a key's value: the body hash, and the job id once decided.
type record struct {
	Hash  string `json:"h"`
	JobID string `json:"j,omitempty"`
}

// beginScript: KEYS[1] the record; ARGV[1] the new record, ARGV[2] ttl ms.
// Returns the existing record, or false after storing the new one.
var beginScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// Begin reserves key for a request whose body hashes to hash. It returns
// ("", nil) when the reservation is new: the caller decides the job, then
// calls Complete, or Abandon if it made none. For a key already used with
// the same body it returns that request's job id, or ErrInProgress while
// that request has not decided it; with another body, ErrMismatch.
func (k *Keys) Begin(ctx context.Context, key, hash string) (string, error) {
	b, _ := json.Marshal(record{Hash: hash})
	res, err := beginScript.Run(ctx, k.rdb, []string{redisKey(key)}, string(b), k.pendingTTL.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reserve idempotency key: %w", err)
	}
	var r record
	if err := json.Unmarshal([]byte(res), &r); err != nil {
		return "", fmt.Errorf("decode idempotency record: %w", err)
	}
	switch {
	case r.Hash != hash:
		return "", ErrMismatch
	case r.JobID == "":
		return "", ErrInProgress
	}
	return r.JobID, nil
}

// Wait is Begin that, while the first request with the key is in progress,
// tries again until maxWait has passed.
func (k *Keys) Wait(ctx context.Context, key, hash string, maxWait time.Duration) (string, error) {
	deadline := time.Now().Add(maxWait)
	for {
		id, err := k.Begin(ctx, key, hash)
		if !errors.Is(err, ErrInProgress) || time.Now().After(deadline) {
			return id, err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// completeScript: KEYS[1] the record; ARGV[1] the body hash, ARGV[2] the
// completed record, ARGV[3] ttl ms. Records the job unless the key now
// holds another body's record (this request's reservation expired and
// another took the key). Returns 1, or 0 when refused.
var completeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v).h ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// Complete records jobID as the job of key, for the key's lifetime. It
// returns ErrMismatch, recording nothing, when the key has meanwhile been
// taken by a request with another body (this one's reservation expired).
func (k *Keys) Complete(ctx context.Context, key, hash, jobID string) error {
	b, _ := json.Marshal(record{Hash: hash, JobID: jobID})
	ok, err := completeScript.Run(ctx, k.rdb, []string{redisKey(key)}, hash, string(b), k.ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	if ok == 0 {
		return ErrMismatch
	}
	return nil
}

// abandonScript: KEYS[1] the record; ARGV[1] the pending record. Deletes
// it if it is still that reservation.
var abandonScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Abandon frees a reservation whose request made no job, so that the
// client may try again with the same key.
func (k *Keys) Abandon(ctx context.Context, key, hash string) error {
	b, _ := json.Marshal(record{Hash: hash})
	if err := abandonScript.Run(ctx, k.rdb, []string{redisKey(key)}, string(b)).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("free idempotency key: %w", err)
	}
	return nil
}
