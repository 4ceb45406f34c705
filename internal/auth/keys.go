package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// MaxNameLen bounds a key's name, in characters.
const MaxNameLen = 64

// ErrInvalidName: the name given to Create is empty, too long or not
// printable. The error returned wraps it with the reason.
var ErrInvalidName = errors.New("invalid API key name")

// ErrInvalidLimits: a limit is negative. The error returned wraps it and
// names the limit.
var ErrInvalidLimits = errors.New("invalid API key limits")

// Limits are a key's own limits. A zero field means the server's default.
type Limits struct {
	SubmissionsPerMinute int
	RunningJobs          int
	StoredJobs           int
	SSEConnections       int
	TokensPerDay         int64
}

// Or returns l with each zero field taken from def.
func (l Limits) Or(def Limits) Limits {
	if l.SubmissionsPerMinute == 0 {
		l.SubmissionsPerMinute = def.SubmissionsPerMinute
	}
	if l.RunningJobs == 0 {
		l.RunningJobs = def.RunningJobs
	}
	if l.StoredJobs == 0 {
		l.StoredJobs = def.StoredJobs
	}
	if l.SSEConnections == 0 {
		l.SSEConnections = def.SSEConnections
	}
	if l.TokensPerDay == 0 {
		l.TokensPerDay = def.TokensPerDay
	}
	return l
}

// Validate returns an error wrapping ErrInvalidLimits, naming the first
// negative limit, or nil when every limit is zero or positive.
func (l Limits) Validate() error {
	for _, f := range l.fields() {
		if f.v < 0 {
			return fmt.Errorf("%w: %s must not be negative", ErrInvalidLimits, f.name)
		}
	}
	return nil
}

type limitField struct {
	name string // the Redis hash field, also used in messages
	v    int64
}

func (l Limits) fields() []limitField {
	return []limitField{
		{fieldSubmissions, int64(l.SubmissionsPerMinute)},
		{fieldRunning, int64(l.RunningJobs)},
		{fieldStored, int64(l.StoredJobs)},
		{fieldSSE, int64(l.SSEConnections)},
		{fieldTokens, l.TokensPerDay},
	}
}

// Key is what the service knows of an API key; never the key itself.
type Key struct {
	ID      string
	Name    string
	Created time.Time
	Revoked time.Time // zero when live
	Limits  Limits
}

// Live reports whether the key has not been revoked.
func (k Key) Live() bool { return k.Revoked.IsZero() }

// Redis layout. The record's key has the id as its hash tag, so that each
// script below touches one slot of a Redis Cluster.
const (
	setKey = "tt:apikeys" // every id, for List

	fieldName        = "name"
	fieldHash        = "hash"
	fieldCreated     = "created_ms"
	fieldRevoked     = "revoked_ms"
	fieldSubmissions = "submissions_per_minute"
	fieldRunning     = "running_jobs"
	fieldStored      = "stored_jobs"
	fieldSSE         = "sse_connections"
	fieldTokens      = "tokens_per_day"
)

func recordKey(id string) string { return "tt:apikey:{" + id + "}" }

// createScript writes a new record unless the id is taken: KEYS[1] the
// record, ARGV its field/value pairs. Returns 1 when written.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`)

// updateScript sets fields of an existing record, so that an unknown id
// does not leave a record without a hash behind: KEYS[1] the record, ARGV
// field/value pairs. Returns 0 when there is no record.
var updateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`)

// revokeScript marks a record revoked at ARGV[1] (ms), keeping the time of
// an earlier revocation. Returns 0 when there is no record.
var revokeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_ms', ARGV[1])
return 1
`)

// Keys stores API keys in Redis. It is safe for concurrent use.
type Keys struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// New returns the store on rdb.
func New(rdb redis.UniversalClient) *Keys {
	return &Keys{rdb: rdb, now: time.Now}
}

// hashKey is what Redis keeps of a key: the hex SHA-256 of the whole key.
// A plain hash is right here, unlike for passwords: the secret is 256
// random bits, so there is nothing to guess that a slow KDF would protect,
// and verifying a request stays one fast hash.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Create makes a key named name (trimmed; 1 to MaxNameLen printable
// characters) with limits l, and returns the key, which is stored nowhere
// and cannot be recovered, and its record. A bad name gives an error
// wrapping ErrInvalidName, a negative limit one wrapping ErrInvalidLimits.
func (k *Keys) Create(ctx context.Context, name string, l Limits) (string, Key, error) {
	name, err := checkName(name)
	if err != nil {
		return "", Key{}, err
	}
	if err := l.Validate(); err != nil {
		return "", Key{}, err
	}
	// Two ids meeting is a 1 in 2^64 event; trying again costs nothing and
	// keeps an existing key from being overwritten.
	for range 3 {
		key, id, err := newKey()
		if err != nil {
			return "", Key{}, err
		}
		// The id goes into the set before its record exists, so that no
		// usable key is ever missing from List; an id whose record never
		// got written is skipped there.
		if err := k.rdb.SAdd(ctx, setKey, id).Err(); err != nil {
			return "", Key{}, fmt.Errorf("create API key: %w", err)
		}
		created := time.UnixMilli(k.now().UnixMilli())
		args := []any{fieldName, name, fieldHash, hashKey(key), fieldCreated, created.UnixMilli()}
		args = append(args, limitArgs(l)...)
		ok, err := createScript.Run(ctx, k.rdb, []string{recordKey(id)}, args...).Int()
		if err != nil {
			return "", Key{}, fmt.Errorf("create API key: %w", err)
		}
		if ok == 1 {
			return key, Key{ID: id, Name: name, Created: created, Limits: l}, nil
		}
	}
	return "", Key{}, errors.New("create API key: no unused id found")
}

func limitArgs(l Limits) []any {
	var args []any
	for _, f := range l.fields() {
		args = append(args, f.name, f.v)
	}
	return args
}

// checkName returns name trimmed, or an error wrapping ErrInvalidName. The
// error does not repeat the name: it may hold anything.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", fmt.Errorf("%w: it must not be empty", ErrInvalidName)
	case !utf8.ValidString(name):
		return "", fmt.Errorf("%w: it must be UTF-8", ErrInvalidName)
	case utf8.RuneCountInString(name) > MaxNameLen:
		return "", fmt.Errorf("%w: it must be at most %d characters", ErrInvalidName, MaxNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return "", fmt.Errorf("%w: it must be printable, without control characters", ErrInvalidName)
		}
	}
	return name, nil
}

// Get returns the record of the key with the given id, or ErrUnknownKey.
func (k *Keys) Get(ctx context.Context, id string) (Key, error) {
	key, _, err := k.read(ctx, id)
	return key, err
}

// read returns a key's record and stored hash, or ErrUnknownKey.
func (k *Keys) read(ctx context.Context, id string) (Key, string, error) {
	if !validID(id) {
		return Key{}, "", ErrUnknownKey
	}
	m, err := k.rdb.HGetAll(ctx, recordKey(id)).Result()
	if err != nil {
		return Key{}, "", fmt.Errorf("read API key: %w", err)
	}
	if len(m) == 0 {
		return Key{}, "", ErrUnknownKey
	}
	return decode(id, m)
}

// decode reads a record. A record it cannot read is an error that does not
// match ErrInvalidKey: the data is at fault, not the caller's key.
func decode(id string, m map[string]string) (Key, string, error) {
	bad := func(field string, err error) (Key, string, error) {
		return Key{}, "", fmt.Errorf("API key %s: bad %s in its record: %w", id, field, err)
	}
	k := Key{ID: id, Name: m[fieldName]}
	hash := m[fieldHash]
	if b, err := hex.DecodeString(hash); err != nil || len(b) != sha256.Size {
		return bad(fieldHash, errors.New("not a hex SHA-256"))
	}
	ms, err := strconv.ParseInt(m[fieldCreated], 10, 64)
	if err != nil {
		return bad(fieldCreated, err)
	}
	k.Created = time.UnixMilli(ms)
	if v, ok := m[fieldRevoked]; ok {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return bad(fieldRevoked, err)
		}
		k.Revoked = time.UnixMilli(ms)
	}
	limit := func(field string) (int64, error) {
		v, ok := m[field]
		if !ok {
			return 0, nil // a record from before the limit existed: the default
		}
		return strconv.ParseInt(v, 10, 64)
	}
	for _, f := range []struct {
		name string
		set  func(int64)
	}{
		{fieldSubmissions, func(v int64) { k.Limits.SubmissionsPerMinute = int(v) }},
		{fieldRunning, func(v int64) { k.Limits.RunningJobs = int(v) }},
		{fieldStored, func(v int64) { k.Limits.StoredJobs = int(v) }},
		{fieldSSE, func(v int64) { k.Limits.SSEConnections = int(v) }},
		{fieldTokens, func(v int64) { k.Limits.TokensPerDay = v }},
	} {
		v, err := limit(f.name)
		if err != nil {
			return bad(f.name, err)
		}
		f.set(v)
	}
	return k, hash, nil
}

// List returns every key, live or revoked, by creation time, then id.
func (k *Keys) List(ctx context.Context) ([]Key, error) {
	ids, err := k.rdb.SMembers(ctx, setKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return !validID(id) })
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, recordKey(id))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	keys := make([]Key, 0, len(ids))
	for i, id := range ids {
		m := cmds[i].Val()
		if len(m) == 0 {
			// Left by a Create that failed, or one under way: it is not
			// removed from the set, which could drop a key being made.
			continue
		}
		key, _, err := decode(id, m)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

// Revoke revokes the key with the given id for good: Verify refuses it from
// then on. Revoking a revoked key succeeds and keeps the first revocation
// time. An unknown id gives ErrUnknownKey.
func (k *Keys) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrUnknownKey
	}
	ok, err := revokeScript.Run(ctx, k.rdb, []string{recordKey(id)}, k.now().UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("revoke API key: %w", err)
	}
	if ok == 0 {
		return ErrUnknownKey
	}
	return nil
}

// SetLimits replaces the limits of the key with the given id by l (zero
// fields: the server's default). A negative limit gives an error wrapping
// ErrInvalidLimits, an unknown id ErrUnknownKey.
func (k *Keys) SetLimits(ctx context.Context, id string, l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if !validID(id) {
		return ErrUnknownKey
	}
	ok, err := updateScript.Run(ctx, k.rdb, []string{recordKey(id)}, limitArgs(l)...).Int()
	if err != nil {
		return fmt.Errorf("set API key limits: %w", err)
	}
	if ok == 0 {
		return ErrUnknownKey
	}
	return nil
}

// Verify returns the record of the live key presented. Errors that say the
// key is no good match ErrInvalidKey: ErrMalformed (wrapped with a reason),
// ErrUnknownKey or ErrRevoked. Any other error (Redis out of reach, a
// damaged record) is returned wrapped and does not match ErrInvalidKey.
func (k *Keys) Verify(ctx context.Context, presented string) (Key, error) {
	id, err := ParseKey(presented)
	if err != nil {
		return Key{}, err
	}
	key, stored, err := k.read(ctx, id)
	if err != nil {
		return Key{}, err
	}
	want, _ := hex.DecodeString(stored) // decode checked it
	got := sha256.Sum256([]byte(presented))
	// A wrong secret is "unknown", like a wrong id, so that the answer does
	// not tell which ids exist to someone who holds none of their secrets.
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return Key{}, ErrUnknownKey
	}
	// Only the key's holder learns that it was revoked.
	if !key.Live() {
		return Key{}, ErrRevoked
	}
	return key, nil
}
