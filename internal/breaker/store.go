// Package breaker keeps circuit breakers whose state every process shares,
// on Redis: gobreaker's DistributedCircuitBreaker over a SharedDataStore
// implemented here, used in two short steps (admit a request, then record
// its outcome) so that no lock is held while the request runs.
package breaker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLockBusy: the store's lock stayed taken for the whole wait.
var ErrLockBusy = errors.New("breaker lock busy")

// ErrConflict: the shared state changed between its read and the write
// that was based on it; nothing was written.
var ErrConflict = errors.New("breaker state changed concurrently")

// Store is a gobreaker.SharedDataStore on Redis.
//
//   - Lock is SET NX PX with a random token, retried with a short jittered
//     backoff for up to LockWait; Unlock deletes the key only if it still
//     holds this process' token, so that a lock that expired and was taken
//     by another process is never released by the first.
//   - SetData is a compare-and-set against what GetData returned last for
//     the same name in this process: gobreaker reads the state before it
//     takes the lock, and a plain write could undo another process' update
//     made in between. On a conflict it returns ErrConflict and writes
//     nothing; the caller repeats the whole step (see Breaker).
//
// Keys live under the prefix and expire StateTTL after their last write.
// The methods take no context (the interface has none): each Redis call is
// bounded by OpTimeout.
type Store struct {
	rdb    redis.UniversalClient
	prefix string

	// LockTTL bounds how long a lock outlives a holder that died.
	LockTTL time.Duration
	// LockWait bounds how long Lock waits for a taken lock.
	LockWait time.Duration
	// StateTTL is how long an unused breaker's state is kept.
	StateTTL time.Duration
	// OpTimeout bounds each Redis call.
	OpTimeout time.Duration

	mu     sync.Mutex
	tokens map[string]string // lock name → token held by this process
	seen   map[string]string // state name → value last read
}

// NewStore returns a Store whose keys start with prefix (e.g. "tt:breaker:").
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{
		rdb: rdb, prefix: prefix,
		LockTTL: 2 * time.Second, LockWait: time.Second, StateTTL: 24 * time.Hour, OpTimeout: 2 * time.Second,
		tokens: map[string]string{}, seen: map[string]string{},
	}
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.OpTimeout)
}

// Lock takes the named lock, waiting up to LockWait.
func (s *Store) Lock(name string) error {
	token := newToken()
	ctx, cancel := context.WithTimeout(context.Background(), s.LockWait+s.OpTimeout)
	defer cancel()
	deadline := time.Now().Add(s.LockWait)
	backoff := time.Millisecond
	for {
		ok, err := s.rdb.SetNX(ctx, s.prefix+name, token, s.LockTTL).Result()
		if err != nil {
			return fmt.Errorf("breaker store: lock %s: %w", name, err)
		}
		if ok {
			s.mu.Lock()
			s.tokens[name] = token
			s.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("breaker store: lock %s: %w", name, ErrLockBusy)
		}
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("breaker store: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, 20*time.Millisecond)
	}
}

// unlockScript deletes KEYS[1] if it holds ARGV[1].
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Unlock releases the named lock if this process still holds it.
func (s *Store) Unlock(name string) error {
	s.mu.Lock()
	token, ok := s.tokens[name]
	delete(s.tokens, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("breaker store: unlock %s: not locked by this process", name)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if err := unlockScript.Run(ctx, s.rdb, []string{s.prefix + name}, token).Err(); err != nil {
		return fmt.Errorf("breaker store: unlock %s: %w", name, err)
	}
	return nil
}

// GetData returns the named value, or nil when there is none.
func (s *Store) GetData(name string) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	v, err := s.rdb.Get(ctx, s.prefix+name).Result()
	if errors.Is(err, redis.Nil) {
		v, err = "", nil
	}
	if err != nil {
		return nil, fmt.Errorf("breaker store: get %s: %w", name, err)
	}
	s.mu.Lock()
	s.seen[name] = v
	s.mu.Unlock()
	if v == "" {
		return nil, nil
	}
	return []byte(v), nil
}

// casScript sets KEYS[1] to ARGV[2] with a TTL of ARGV[3] ms if it holds
// ARGV[1] (empty: does not exist). Returns 1, or 0 on a conflict.
var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// SetData writes the named value if it is still what GetData last read.
func (s *Store) SetData(name string, data []byte) error {
	s.mu.Lock()
	expect := s.seen[name]
	s.mu.Unlock()
	ctx, cancel := s.ctx()
	defer cancel()
	ok, err := casScript.Run(ctx, s.rdb, []string{s.prefix + name}, expect, string(data), s.StateTTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("breaker store: set %s: %w", name, err)
	}
	if ok == 0 {
		return fmt.Errorf("breaker store: set %s: %w", name, ErrConflict)
	}
	s.mu.Lock()
	s.seen[name] = string(data)
	s.mu.Unlock()
	return nil
}

// setNX sets key to a token for ttl if it does not exist; it returns the
// token, or "" when the key exists.
func (s *Store) setNX(ctx context.Context, key string, ttl time.Duration) (string, error) {
	token := newToken()
	ok, err := s.rdb.SetNX(ctx, s.prefix+key, token, ttl).Result()
	if err != nil || !ok {
		return "", err
	}
	return token, nil
}

// delIf deletes key if it holds token.
func (s *Store) delIf(ctx context.Context, key, token string) error {
	return unlockScript.Run(ctx, s.rdb, []string{s.prefix + key}, token).Err()
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
