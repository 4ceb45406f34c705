package store

import "github.com/redis/go-redis/v9"

// The scripts keep each state change and the event that announces it in one
// atomic step, so that a client never sees an event for a change that did not
// happen, or a change without its event. Every script takes
// KEYS[1] = the job hash, KEYS[2] = the job's event stream, and
// ARGV[1] = the announcement channel, ARGV[2] = the job id.
//
// Statuses that accept member work: queued, running.
// Terminal statuses: completed, partial, failed, canceled.
//
// The scripts know no kind. Member events are named by the hash's field
// noun ("snapshot" when absent: a job stored before jobs had kinds), and
// their payloads are built from the member record's ref (see
// memberRecord): the member's identity as its events carry it.

// luaIdentity defines identity(s): a new table holding the identity of
// the member record s (its ref; for a record stored before records had
// one, its fields that are not state), to which an event adds its own
// fields.
const luaIdentity = `
local state = {status = true, text = true, model = true, attempts = true, llm_attempts = true, error = true,
  started_at_ms = true, completed_at_ms = true, cached = true}
local function identity(s)
  local d = {}
  if s.ref then
    for k, x in pairs(s.ref) do d[k] = x end
  else
    for k, x in pairs(s) do if not state[k] then d[k] = x end end
  end
  return d
end
`

// createScript: ARGV[3] ttl ms, ARGV[4] the number E of events, ARGV[5 ..
// 4+2E] their type/data pairs (job.accepted first), then the hash's
// field/value pairs. Returns the first event's id, or error "EXISTS".
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS') end
local e = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 5 + 2 * e))
local id
for i = 0, e - 1 do
  local x = redis.call('XADD', KEYS[2], '*', 't', ARGV[5 + 2 * i], 'd', ARGV[6 + 2 * i])
  if i == 0 then id = x end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return id
`)

// luaAppend defines append(typ, data): it appends the event typ with its
// JSON data to the job's stream (KEYS[2]) and announces it on ARGV[1] with
// the event itself and the id of the entry before it, in the form
// events.ParseAnnouncement reads (ARGV[2] is the job id), so that
// followers that are caught up deliver it without reading the stream.
// Returns the entry id.
const luaAppend = `
local function append(typ, data)
  local before = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  local prev = ''
  if before[1] then prev = before[1][1] end
  local id = redis.call('XADD', KEYS[2], '*', 't', typ, 'd', data)
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. '\n' .. prev .. '\n' .. id .. '\n' .. typ .. '\n' .. data)
  return id
end
`

// memberStartScript: ARGV[3] index, ARGV[4] owner, ARGV[5] now ms, ARGV[6]
// model. Claims the member for this attempt (the newest attempt wins) and
// appends <noun>.started (identity + attempt). Idempotent for the owner
// that holds the claim: a call repeated after a lost reply changes nothing
// and announces nothing.
// Returns {'ok', attempt} | {'done', done, n} | {'closed', status} | {'gone'}.
var memberStartScript = redis.NewScript(luaIdentity + luaAppend + `
local v = redis.call('HMGET', KEYS[1], 'status', 'noun')
local st = v[1]
if not st then return {'gone'} end
if st ~= 'queued' and st ~= 'running' then return {'closed', st} end
local f = 's:' .. ARGV[3]
local raw = redis.call('HGET', KEYS[1], f)
if not raw then return redis.error_reply('NO_MEMBER') end
local s = cjson.decode(raw)
if s.status == 'completed' or s.status == 'failed' then
  local w = redis.call('HMGET', KEYS[1], 'done', 'n')
  return {'done', tonumber(w[1]), tonumber(w[2])}
end
if redis.call('HGET', KEYS[1], 'o:' .. ARGV[3]) == ARGV[4] then return {'ok', s.attempts or 1} end
s.status = 'running'
s.attempts = (s.attempts or 0) + 1
if not s.started_at_ms then s.started_at_ms = tonumber(ARGV[5]) end
s.model = ARGV[6]
redis.call('HSET', KEYS[1], f, cjson.encode(s), 'o:' .. ARGV[3], ARGV[4], 'q:' .. ARGV[3], 0)
if st == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running') end
local d = identity(s)
d.attempt = s.attempts
append((v[2] or 'snapshot') .. '.started', cjson.encode(d))
return {'ok', s.attempts}
`)

// memberFinishScript: ARGV[3] index, ARGV[4] owner, ARGV[5] outcome
// (completed | failed | retry), ARGV[6] now ms, ARGV[7] text, ARGV[8] error,
// ARGV[9] the model that answered (empty: unchanged), ARGV[10] the LLM
// requests of this attempt (added to the member's llm_attempts), ARGV[11]
// "1" when the text came from the member cache.
// Records the outcome once for the owning attempt; completed and failed
// count towards fan-in, and append <noun>.completed (identity + model,
// text, duration_ms, cached) or <noun>.failed (identity + error). Returns
// {'ok', done, n} | {'stale'} | {'done', done, n} | {'closed', status} |
// {'gone'}.
var memberFinishScript = redis.NewScript(luaIdentity + luaAppend + `
local v = redis.call('HMGET', KEYS[1], 'status', 'o:' .. ARGV[3], 's:' .. ARGV[3], 'n', 'noun')
if not v[1] then return {'gone'} end
if v[1] ~= 'queued' and v[1] ~= 'running' then return {'closed', v[1]} end
if v[2] ~= ARGV[4] then return {'stale'} end
local s = cjson.decode(v[3])
if s.status == 'completed' or s.status == 'failed' then
  return {'done', tonumber(redis.call('HGET', KEYS[1], 'done')), tonumber(v[4])}
end
local outcome = ARGV[5]
if ARGV[9] ~= '' then s.model = ARGV[9] end
local tries = tonumber(ARGV[10]) or 0
if tries > 0 then s.llm_attempts = (s.llm_attempts or 0) + tries end
if outcome == 'retry' then
  s.status = 'pending'
  s.error = ARGV[8]
  redis.call('HSET', KEYS[1], 's:' .. ARGV[3], cjson.encode(s))
  return {'ok', tonumber(redis.call('HGET', KEYS[1], 'done') or 0), tonumber(v[4])}
end
s.status = outcome
s.completed_at_ms = tonumber(ARGV[6])
local d = identity(s)
if outcome == 'completed' then
  s.text = ARGV[7]
  s.error = nil
  if ARGV[11] == '1' then s.cached = true; d.cached = true end
  d.model = s.model
  d.text = s.text
  d.duration_ms = s.completed_at_ms - (s.started_at_ms or s.completed_at_ms)
else
  s.error = ARGV[8]
  d.error = s.error
end
redis.call('HSET', KEYS[1], 's:' .. ARGV[3], cjson.encode(s))
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
append((v[5] or 'snapshot') .. '.' .. outcome, cjson.encode(d))
return {'ok', done, tonumber(v[4])}
`)

// aggBeginScript: ARGV[3] owner, ARGV[4] now ms, ARGV[5] closed channel.
// Moves the job to aggregating (closing it to member work) and makes this
// attempt the owner of the aggregation events. A new owner counts an
// aggregation attempt and announces it with aggregate.started {attempt}, so
// that clients drop the streamed text of an attempt that died; its parts'
// sequence numbers (fields q:agg:<part>) start again. The owner that holds
// the claim may call again (after a lost reply) without effect.
// Returns {'ok', attempt, the job's hash (HGETALL), as it then is} |
// {'closed', status} | {'gone'}: the aggregation reads the job in the same
// round trip.
var aggBeginScript = redis.NewScript(luaAppend + `
local v = redis.call('HMGET', KEYS[1], 'status', 'o:agg', 'agg_attempt')
local st = v[1]
if not st then return {'gone'} end
if st ~= 'queued' and st ~= 'running' and st ~= 'aggregating' then return {'closed', st} end
if v[2] == ARGV[3] then return {'ok', tonumber(v[3]) or 1, redis.call('HGETALL', KEYS[1])} end
local attempt = (tonumber(v[3]) or 0) + 1
redis.call('HSET', KEYS[1], 'status', 'aggregating', 'o:agg', ARGV[3], 'agg_attempt', attempt)
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, 6) == 'q:agg:' then redis.call('HDEL', KEYS[1], k) end
end
if st ~= 'aggregating' then
  redis.call('HSET', KEYS[1], 'agg_started', ARGV[4])
  redis.call('PUBLISH', ARGV[5], ARGV[2])
end
append('aggregate.started', cjson.encode({attempt = attempt}))
return {'ok', attempt, redis.call('HGETALL', KEYS[1])}
`)

// emitScript: ARGV[3] statuses allowed (comma-separated, with leading and
// trailing comma), ARGV[4] owner field, ARGV[5] owner value, ARGV[6] the
// field of the sequence numbers (empty: none), ARGV[7] the event type's
// prefix (empty: the job's noun), ARGV[8] its verb, ARGV[9] data, ARGV[10]
// sequence number (0: none), ARGV[11] part (empty: none), ARGV[12] the
// part's record. Appends the event <prefix>.<verb> only while the job is in
// an allowed status and the owner field holds the owner value.
// Exactly once, whatever the retries: a sequenced event (text deltas) is
// appended only if its number is above the last one in its sequence field
// (q:<index> of a member, q:agg:<part> of a part; reset when the claim
// changes hands); a part's event (its terminal event) only if no event of
// that part was appended before, by any owner; the part's record (field
// part:<part>) is kept for a later attempt to reuse. Returns {'ok', id} |
// {'dup'} | {'stale'} | {'closed', status} | {'gone'}.
var emitScript = redis.NewScript(luaAppend + `
local qf = ARGV[6]
if qf == '' then qf = 'q:' end -- no sequence: a field never written
local v = redis.call('HMGET', KEYS[1], 'status', ARGV[4], qf, 'noun')
if not v[1] then return {'gone'} end
if not string.find(ARGV[3], ',' .. v[1] .. ',', 1, true) then return {'closed', v[1]} end
if v[2] ~= ARGV[5] then return {'stale'} end
local seq = tonumber(ARGV[10]) or 0
if seq > 0 then
  if seq <= (tonumber(v[3]) or 0) then return {'dup'} end
  redis.call('HSET', KEYS[1], qf, seq)
end
if ARGV[11] ~= '' then
  if redis.call('HSETNX', KEYS[1], 'part:' .. ARGV[11], ARGV[12]) == 0 then return {'dup'} end
end
local prefix = ARGV[7]
if prefix == '' then prefix = v[4] or 'snapshot' end
return {'ok', append(prefix .. '.' .. ARGV[8], ARGV[9])}
`)

// finishScript: ARGV[3] final status, ARGV[4] now ms, ARGV[5] error, ARGV[6]
// result JSON (job.Result; may be empty), ARGV[7] retention ms, ARGV[8] job.completed
// data, ARGV[9] closed channel, ARGV[10] the aggregation owner the end is
// fenced by (empty: none; a cancel or the deadline ends the job whoever
// owns it), ARGV[11] the status of members that never finished (canceled
// or expired). Ends a job that has not ended. Returns {'ok', id} |
// {'closed', status} | {'stale'} | {'gone'}.
var finishScript = redis.NewScript(luaAppend + `
local v = redis.call('HMGET', KEYS[1], 'status', 'o:agg', 'n')
local st = v[1]
if not st then return {'gone'} end
if st == 'completed' or st == 'partial' or st == 'failed' or st == 'canceled' then return {'closed', st} end
if ARGV[10] ~= '' and v[2] ~= ARGV[10] then return {'stale'} end
for i = 0, (tonumber(v[3]) or 0) - 1 do
  local f = 's:' .. i
  local raw = redis.call('HGET', KEYS[1], f)
  if raw then
    local s = cjson.decode(raw)
    if s.status ~= 'completed' and s.status ~= 'failed' then
      s.status = ARGV[11]
      redis.call('HSET', KEYS[1], f, cjson.encode(s))
    end
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished', ARGV[4], 'error', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'agg', ARGV[6]) end
local id = append('job.completed', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[9], ARGV[2])
return {'ok', id}
`)

// webhookQueuedScript: marks the job's webhook delivery pending unless it
// has a state already. Returns {'ok'} | {'gone'}.
var webhookQueuedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('HEXISTS', KEYS[1], 'webhook') == 0 then
  redis.call('HSET', KEYS[1], 'webhook', cjson.encode({status = 'pending', attempts = 0}))
end
return {'ok'}
`)

// webhookAttemptScript: ARGV[3] outcome (pending | delivered | failed),
// ARGV[4] now ms, ARGV[5] the receiver's status code (0: none), ARGV[6]
// error, ARGV[7] webhook id, ARGV[8] ms the job is kept at least while its
// delivery is pending. Counts one attempt of a delivery that has no outcome
// yet and records it; a final outcome appends webhook.<outcome> (after the
// job's terminal event), or, for a job stored by reference (field ref),
// which has no stream, keeps it in field wev (see Store.Events). Returns
// {'ok', attempts} | {'done', status} | {'gone'}.
var webhookAttemptScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'webhook', 'ref')
if not v[1] then return {'gone'} end
local w = {status = 'pending', attempts = 0}
if v[2] then w = cjson.decode(v[2]) end
if w.status == 'delivered' or w.status == 'failed' then return {'done', w.status} end
local outcome = ARGV[3]
local code = tonumber(ARGV[5]) or 0
w.attempts = (w.attempts or 0) + 1
w.status = outcome
if code > 0 then w.last_status_code = code else w.last_status_code = nil end
if outcome == 'delivered' then
  w.last_error = nil
  w.delivered_at_ms = tonumber(ARGV[4])
else
  w.last_error = ARGV[6]
end
redis.call('HSET', KEYS[1], 'webhook', cjson.encode(w))
if outcome == 'pending' and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[8]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
end
if outcome ~= 'pending' then
  local d = {webhook_id = ARGV[7], attempts = w.attempts}
  if code > 0 then d.status_code = code end
  if outcome == 'failed' then d.error = ARGV[6] end
  if v[3] then
    redis.call('HSET', KEYS[1], 'wev', cjson.encode({t = 'webhook.' .. outcome, d = cjson.encode(d), ms = tonumber(ARGV[4])}))
  else
    redis.call('XADD', KEYS[2], '*', 't', 'webhook.' .. outcome, 'd', cjson.encode(d))
  end
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return {'ok', w.attempts}
`)
