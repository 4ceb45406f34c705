package breaker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store keeps the breakers' shared state in Redis: one hash per breaker,
// changed only by the two scripts below, so that every step (an admission,
// an outcome) is atomic across processes and costs one round trip. The
// hash expires at most its TTL (the breaker's window, open time, trial TTL
// and ramp added up, and a minute) after its last write, and at least that
// less a bucket width (see the hash's fields), so a breaker nobody uses
// leaves nothing behind and starts again closed.
//
// Processes sharing a breaker must use the same Settings: the scripts take
// them as arguments, and a window of another length reads the hash's
// buckets differently (counts are lost, never corrupted).
type Store struct {
	rdb    redis.UniversalClient
	prefix string

	// OpTimeout bounds each Redis call (default 2 s). A store slower than
	// this counts as unreachable: Allow admits the request without the
	// breaker (fail open) and the outcome goes unrecorded.
	OpTimeout time.Duration
}

// KeyPrefix is the prefix of the service's breakers' keys: every process
// that calls or reads them uses it.
const KeyPrefix = "tt:breaker:"

// NewStore returns a Store whose keys start with prefix (e.g. KeyPrefix).
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, OpTimeout: 2 * time.Second}
}

// key is the hash of the named breaker. "cb:" keeps it apart from the keys
// of the gobreaker-based version, which expire on their own.
func (s *Store) key(name string) string { return s.prefix + "cb:" + name }

// The hash of a breaker:
//
//	st      closed | open | half (absent: closed)
//	gen     generation: changes on every transition, so that an outcome of a
//	        request admitted in an earlier one is not counted; at least the
//	        time of the transition (ms), so a hash that expired and was
//	        created again never reuses one
//	until   open: the time (ms) it half-opens
//	t<i>    half-open: trial slot i, "token:expiry-ms"
//	rf, rt  closed: the ramp's start and end (ms)
//	rb, rc, ra  the ramp's current second, Allow calls and admissions in it
//	w<i>    closed: window bucket i (of buckets, by admission time modulo),
//	        "gen:bucket:requests:failures"
//	pe      the time (ms) the hash's expiry was last renewed
//
// Times are the callers' clocks (ms): processes sharing a breaker are
// assumed to agree within well under a bucket.
//
// Expiry: a transition renews the hash's expiry to the hash TTL, as every
// write used to; any other write (a count, the ramp's, a trial's slot)
// renews it only when the last renewal (pe) is a bucket width old or more,
// so that a breaker in use costs one PEXPIRE a bucket width instead of one
// per call. The hash thus lives at most the hash TTL after its last write,
// and at least that less a width (and the clocks' disagreement): the TTL
// holds a minute beyond the longest phase (see NewSet), so that no phase
// (a window's counts, the ramp, a trial's slot, all started by a renewal)
// loses its state to the expiry.
//
// Each script reads every field it may need with one HMGET, gathers its
// writes into one HSET and deletes with one HDEL.
const luaPrelude = `
local function fmt(n) return string.format('%d', n) end
local function slot(v)
  if not v then return nil end
  local g, b, r, f = string.match(v, '^(%d+):(%d+):(%d+):(%d+)$')
  if not g then return nil end
  return tonumber(g), tonumber(b), tonumber(r), tonumber(f)
end
-- forget the trial slots and the ramp (on every transition)
local function reset(key, trials)
  local f = {'rf', 'rt', 'rb', 'rc', 'ra'}
  for i = 1, trials do f[#f + 1] = 't' .. i end
  redis.call('HDEL', key, unpack(f))
end
-- writer gathers field writes into one HSET; flush makes it and renews the
-- expiry when forced, when the last renewal (pe) is a width old or more, or
-- when pe is missing or in the future (another clock).
local function writer(key, now, width, ttl, pe)
  local w, fields = {}, {}
  function w.set(...)
    for _, v in ipairs({...}) do fields[#fields + 1] = v end
  end
  function w.flush(force)
    local renew = force or not pe or now < pe or now - pe >= width
    if renew then w.set('pe', fmt(now)) end
    if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
    if renew then
      redis.call('PEXPIRE', key, ttl)
      pe = now
    end
    fields = {}
  end
  return w
end
`

// allowScript admits one request or refuses it.
//
// KEYS[1] the hash. ARGV: now (ms), bucket width (ms), buckets, trials,
// trial TTL (ms), trial token, ramp's starting share, hash TTL (ms).
//
// Returns {code, state, gen, x}: code 1 admitted (x: its bucket), 2
// admitted as trial (x: its slot), 0 refused (x: ms until the open time
// ends, or the ramp does).
//
// Cost of an admission closed: the script, HMGET, HSET, and PEXPIRE once a
// bucket width.
var allowScript = redis.NewScript(luaPrelude + `
local key = KEYS[1]
local now = tonumber(ARGV[1])
local width, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local trials, trialTTL, token = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local p0, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])

local b = math.floor(now / width)
local f = 'w' .. fmt(b % buckets)
local h = redis.call('HMGET', key, 'st', 'gen', 'until', 'rf', 'rt', 'rb', 'rc', 'ra', 'pe', f)
local st = h[1] or 'closed'
local gen = tonumber(h[2])
local w = writer(key, now, width, ttl, tonumber(h[9]))
if not gen then
  st, gen = 'closed', now
  w.set('st', st, 'gen', fmt(gen))
end

if st == 'open' then
  local u = tonumber(h[3]) or 0
  if now < u then return {0, st, gen, u - now} end
  st, gen = 'half', math.max(gen + 1, now)
  reset(key, trials)
  w.set('st', st, 'gen', fmt(gen))
  if trials < 1 then
    w.flush(true)
    return {0, st, gen, 0}
  end
  -- every trial slot is free after the reset: take the first
  w.set('t1', token .. ':' .. fmt(now + trialTTL))
  w.flush(true)
  return {2, st, gen, 1}
end

if st == 'half' then
  if trials >= 1 then
    local names = {}
    for i = 1, trials do names[i] = 't' .. i end
    local tv = redis.call('HMGET', key, unpack(names))
    for i = 1, trials do
      local v = tv[i]
      local exp = v and tonumber(string.match(v, ':(%d+)$'))
      if not exp or exp <= now then -- free, or its holder never reported
        w.set('t' .. i, token .. ':' .. fmt(now + trialTTL))
        w.flush(false)
        return {2, st, gen, i}
      end
    end
  end
  return {0, st, gen, 0}
end

-- Closed. While ramping, admit the share p of this second's calls, p rising
-- linearly from p0 to 1: a fraction of each second's calls rather than of
-- all calls since closing, so that refusals do not pile up into a credit
-- that a later burst could spend at once.
local rf, rt = tonumber(h[4]), tonumber(h[5])
if rf and rt and now < rt then
  local p = p0 + (1 - p0) * math.max(now - rf, 0) / math.max(rt - rf, 1)
  local sec = math.floor(now / 1000)
  local rc, ra = 0, 0
  if tonumber(h[6]) == sec then rc, ra = tonumber(h[7]) or 0, tonumber(h[8]) or 0 end
  rc = rc + 1
  local admit = ra < p * rc
  if admit then ra = ra + 1 end
  w.set('rb', fmt(sec), 'rc', fmt(rc), 'ra', fmt(ra))
  if not admit then
    w.flush(false)
    return {0, st, gen, rt - now}
  end
end

-- Count the request in the bucket of its admission.
local req, fail = 0, 0
local g, vb, vr, vf = slot(h[10])
if g == gen and vb == b then req, fail = vr, vf end
w.set(f, fmt(gen) .. ':' .. fmt(b) .. ':' .. fmt(req + 1) .. ':' .. fmt(fail))
w.flush(false)
return {1, st, gen, b}
`)

// recordScript records the outcome of an admitted request and makes the
// transition it calls for.
//
// KEYS[1] the hash. ARGV: now (ms), bucket width (ms), buckets, the
// admission's gen, its bucket, outcome (s success, f failure, x excluded),
// trial slot (0: none), trial token, minimum requests, minimum failures,
// failure ratio, open time (ms), ramp (ms), trials, hash TTL (ms).
//
// Returns {state, gen, changed}.
//
// Cost of a failure closed that does not open the breaker: the script,
// HMGET (the state and the whole window at once), HSET, and PEXPIRE once a
// bucket width.
var recordScript = redis.NewScript(luaPrelude + `
local key = KEYS[1]
local now = tonumber(ARGV[1])
local width, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local agen, abucket, kind = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local tslot, token = tonumber(ARGV[7]), ARGV[8]
local minReq, minFail, ratio = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local openFor, ramp, trials, ttl = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])

-- h[4]: the trial slot's field, or h[4 + i]: window bucket i
local fields = {'st', 'gen', 'pe'}
if tslot > 0 then
  fields[4] = 't' .. tslot
else
  for i = 0, buckets - 1 do fields[#fields + 1] = 'w' .. i end
end
local h = redis.call('HMGET', key, unpack(fields))
local st = h[1] or 'closed'
local gen = tonumber(h[2])
if not gen or gen ~= agen then
  -- The breaker moved on since the admission: the outcome does not count.
  return {st, gen or 0, 0}
end
local w = writer(key, now, width, ttl, tonumber(h[3]))

local function open()
  local ng = math.max(gen + 1, now)
  reset(key, trials)
  w.set('st', 'open', 'gen', fmt(ng), 'until', fmt(now + openFor))
  w.flush(true)
  return {'open', ng, 1}
end

if tslot > 0 then
  if st ~= 'half' then return {st, gen, 0} end
  local v = h[4]
  if not v or string.sub(v, 1, #token + 1) ~= token .. ':' then
    return {st, gen, 0} -- it outlived the trial TTL: its slot went to another trial
  end
  if kind == 'x' then
    redis.call('HDEL', key, 't' .. tslot)
    return {st, gen, 0}
  end
  if kind == 'f' then return open() end
  local ng = math.max(gen + 1, now)
  reset(key, trials)
  w.set('st', 'closed', 'gen', fmt(ng))
  if ramp > 0 then w.set('rf', fmt(now), 'rt', fmt(now + ramp)) end
  w.flush(true)
  return {'closed', ng, 1}
end

if st ~= 'closed' then return {st, gen, 0} end
local nb = math.floor(now / width)
local b, dreq, dfail = abucket, 0, 0
if nb - abucket >= buckets then
  -- Admitted before the window: counted again, with its outcome, where it
  -- ends; else a failure slower than the window (a timeout) never counts.
  if kind == 'x' then return {st, gen, 0} end
  b, dreq = nb, 1
  if kind == 'f' then dfail = 1 end
elseif kind == 'x' then
  dreq = -1
elseif kind == 'f' then
  dfail = 1
else
  return {st, gen, 0} -- a success: its admission counted it
end
local bi = b % buckets
local req, fail = 0, 0
local g, vb, vr, vf = slot(h[4 + bi])
if g == gen and vb == b then
  req, fail = vr, vf
elseif dreq < 1 then
  return {st, gen, 0} -- its bucket is gone (another window length): nothing to adjust
end
req = math.max(req + dreq, 0)
fail = math.min(fail + dfail, req)
local nv = fmt(gen) .. ':' .. fmt(b) .. ':' .. fmt(req) .. ':' .. fmt(fail)
w.set('w' .. fmt(bi), nv)

-- the window as it is with this outcome
local treq, tfail = 0, 0
for i = 0, buckets - 1 do
  local v = h[4 + i]
  if i == bi then v = nv end
  local g, vb, vr, vf = slot(v)
  if g == gen and nb - vb < buckets then treq, tfail = treq + vr, tfail + vf end
end
if treq >= minReq and tfail >= minFail and tfail >= ratio * treq then return open() end
w.flush(false)
return {st, gen, 0}
`)

// result is what a script returned: a code or state, a gen, a number.
type result struct {
	code  int64
	state State
	gen   int64
	x     int64
}

// parseAllow reads allowScript's reply.
func parseAllow(v any) (result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 4 {
		return result{}, fmt.Errorf("unexpected script reply %v", v)
	}
	code, ok1 := a[0].(int64)
	st, ok2 := parseState(a[1])
	gen, ok3 := a[2].(int64)
	x, ok4 := a[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return result{}, fmt.Errorf("unexpected script reply %v", v)
	}
	return result{code: code, state: st, gen: gen, x: x}, nil
}

// parseRecord reads recordScript's reply.
func parseRecord(v any) (result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 3 {
		return result{}, fmt.Errorf("unexpected script reply %v", v)
	}
	st, ok1 := parseState(a[0])
	gen, ok2 := a[1].(int64)
	if !ok1 || !ok2 {
		return result{}, fmt.Errorf("unexpected script reply %v", v)
	}
	return result{state: st, gen: gen}, nil
}

func parseState(v any) (State, bool) {
	s, _ := v.(string)
	switch s {
	case "closed":
		return StateClosed, true
	case "half":
		return StateHalfOpen, true
	case "open":
		return StateOpen, true
	}
	return 0, false
}

// read returns the stored state, gen and end of the open time (ms) of the
// named breaker; a missing one reads closed.
func (s *Store) read(ctx context.Context, name string) (st State, gen, until int64, err error) {
	v, err := s.rdb.HMGet(ctx, s.key(name), "st", "gen", "until").Result()
	if err != nil {
		return 0, 0, 0, err
	}
	if v[0] == nil {
		return StateClosed, 0, 0, nil
	}
	st, ok := parseState(v[0])
	if !ok {
		return 0, 0, 0, errors.New("unexpected state " + fmt.Sprint(v[0]))
	}
	num := func(x any) int64 {
		str, _ := x.(string)
		n, _ := strconv.ParseInt(str, 10, 64)
		return n
	}
	return st, num(v[1]), num(v[2]), nil
}

// tokens are unique per process (a random prefix) and per trial (a counter):
// cheaper than a random token per Allow, most of which need none.
var (
	tokenPrefix = newTokenPrefix()
	tokenSeq    atomic.Uint64
)

func newTokenPrefix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newToken() string {
	return tokenPrefix + "-" + strconv.FormatUint(tokenSeq.Add(1), 36)
}

// Status is a breaker's shared state as a reader outside the calls sees
// it.
type Status struct {
	Name  string
	State State
	// OpenUntil is when an open breaker lets a trial through; zero
	// otherwise.
	OpenUntil time.Time
}

// Peek reads the named breakers' shared states in one round trip, in the
// order of names, and changes nothing: a breaker never used (or idle past
// its TTL) reads closed, and an open one past its open time half-open, as
// Breaker.State reads them.
func (s *Store) Peek(ctx context.Context, now time.Time, names []string) ([]Status, error) {
	ctx, cancel := context.WithTimeout(ctx, s.OpTimeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(names))
	for i, n := range names {
		cmds[i] = pipe.HMGet(ctx, s.key(n), "st", "until")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("breaker: peek: %w", err)
	}
	out := make([]Status, len(names))
	for i, n := range names {
		out[i] = Status{Name: n, State: StateClosed}
		v, err := cmds[i].Result()
		if err != nil || len(v) < 2 || v[0] == nil {
			continue
		}
		st, ok := parseState(v[0])
		if !ok {
			continue
		}
		str, _ := v[1].(string)
		ms, _ := strconv.ParseInt(str, 10, 64)
		if st == StateOpen {
			if now.UnixMilli() >= ms {
				st = StateHalfOpen
			} else {
				out[i].OpenUntil = time.UnixMilli(ms)
			}
		}
		out[i].State = st
	}
	return out, nil
}
