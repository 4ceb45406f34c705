package quota

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// admitScript admits a member to a capped sorted set whose scores are the
// members' expiry times (ms). KEYS[1] is the set; ARGV: now (ms), the cap
// (0: none), the member, its expiry (ms), "1" to list the members when
// refused, then members to remove first (they ended).
//
// Members that expired are dropped first; a member already there stays
// (its expiry updated), whatever the count: a second admission of one job
// is the same job. The set expires with its last member, so that owners
// who went quiet leave nothing behind; the expiry is relative to the
// caller's now, the clock of the scores, not the server's.
//
// It returns {1, count, earliest expiry, added} when admitted, and
// {0, count, earliest expiry, members...} when refused.
var admitScript = redis.NewScript(`
local key, now, cap, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 6, #ARGV do
  redis.call('ZREM', key, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[1])
local n = redis.call('ZCARD', key)
local added = 0
if not redis.call('ZSCORE', key, member) then
  if cap > 0 and n >= cap then
    local res = {0, n, redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or '0'}
    if ARGV[5] == '1' then
      for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        res[#res + 1] = m
      end
    end
    return res
  end
  n = n + 1
  added = 1
end
redis.call('ZADD', key, ARGV[4], member)
local last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIRE', key, math.max(math.floor(last - now), 1))
return {1, n, redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2], added}
`)

// admission is the result of admitScript.
type admission struct {
	allowed bool
	added   bool // the member was not there before
	count   int64
	// earliest is the expiry of the member that expires first (zero time
	// for an empty set).
	earliest time.Time
	// members are the set's members, when refused and asked for.
	members []string
}

func (q *Quota) admit(ctx context.Context, key, member string, limit int, until time.Time, listMembers bool, remove []string) (admission, error) {
	list := "0"
	if listMembers {
		list = "1"
	}
	args := make([]any, 0, 5+len(remove))
	args = append(args, q.now().UnixMilli(), max(limit, 0), member, until.UnixMilli(), list)
	for _, r := range remove {
		args = append(args, r)
	}
	res, err := admitScript.Run(ctx, q.rdb, []string{key}, args...).Slice()
	if err != nil {
		return admission{}, err
	}
	if len(res) < 3 {
		return admission{}, fmt.Errorf("unexpected reply %v", res)
	}
	a := admission{allowed: toInt(res[0]) == 1, count: toInt(res[1])}
	if ms := toInt(res[2]); ms > 0 {
		a.earliest = time.UnixMilli(ms)
	}
	if a.allowed {
		a.added = len(res) > 3 && toInt(res[3]) == 1
		return a, nil
	}
	for _, m := range res[3:] {
		if s, ok := m.(string); ok {
			a.members = append(a.members, s)
		}
	}
	return a, nil
}

// decision is a's Decision for the limit name of value limit (0: none).
func (a admission) decision(name string, limit int, now time.Time) Decision {
	d := Decision{Allowed: a.allowed, Limit: name}
	if limit <= 0 {
		d.Allowed = true
		return d
	}
	d.Quota = int64(limit)
	d.Remaining = max(int64(limit)-a.count, 0)
	if !a.earliest.IsZero() {
		// The earliest expiry frees a unit at the latest; one may free
		// sooner (a job that ends), which nobody can tell ahead.
		d.Reset = max(a.earliest.Sub(now), 0)
	}
	if !a.allowed {
		d.RetryAfter = max(d.Reset, time.Second)
	}
	return d
}

// toInt reads an integer of a script's reply: an integer, or a score (a
// string, possibly with a fraction).
func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n
		}
		f, _ := strconv.ParseFloat(x, 64)
		return int64(f)
	}
	return 0
}

// AdmitRunning records jobID among owner's running jobs until until (its
// deadline: a job that is never released stops counting then), if owner
// runs fewer than limit; limit <= 0 is no limit, and the job is recorded
// all the same, for Usage.
//
// Admitting a job already recorded allows it again (a redelivery of its
// task), whatever the count. When owner is at the limit, and only then,
// ended (if not nil) is asked which of the recorded jobs have ended
// without being released (a worker died, a release was lost); those are
// removed and the admission is tried once more. ended's error is returned.
func (q *Quota) AdmitRunning(ctx context.Context, owner, jobID string, limit int, until time.Time,
	ended func(ctx context.Context, ids []string) ([]bool, error)) (Decision, error) {
	if err := checkOwner(owner); err != nil {
		return Decision{}, err
	}
	key := runningKey(owner)
	a, err := q.admit(ctx, key, jobID, limit, until, ended != nil, nil)
	if err != nil {
		return Decision{}, fmt.Errorf("quota: admit running job %s of %s: %w", jobID, owner, err)
	}
	if !a.allowed && ended != nil && len(a.members) > 0 {
		done, err := ended(ctx, a.members)
		if err != nil {
			return Decision{}, fmt.Errorf("quota: which running jobs of %s ended: %w", owner, err)
		}
		if len(done) != len(a.members) {
			return Decision{}, fmt.Errorf("quota: which running jobs of %s ended: %d answers for %d jobs", owner, len(done), len(a.members))
		}
		var gone []string
		for i, id := range a.members {
			if done[i] {
				gone = append(gone, id)
			}
		}
		if len(gone) > 0 {
			a, err = q.admit(ctx, key, jobID, limit, until, false, gone)
			if err != nil {
				return Decision{}, fmt.Errorf("quota: admit running job %s of %s: %w", jobID, owner, err)
			}
		}
	}
	return a.decision(LimitRunning, limit, q.now()), nil
}

// ReleaseRunning removes jobIDs from owner's running jobs; ids that are
// not there are ignored.
func (q *Quota) ReleaseRunning(ctx context.Context, owner string, jobIDs ...string) error {
	return q.release(ctx, owner, runningKey(owner), "running", jobIDs)
}

// ReleaseStored removes jobIDs from owner's stored jobs and from the
// global ones (jobs deleted before they expired); ids that are not there
// are ignored.
func (q *Quota) ReleaseStored(ctx context.Context, owner string, jobIDs ...string) error {
	if err := q.release(ctx, owner, storedKey(owner), "stored", jobIDs); err != nil {
		return err
	}
	return q.release(ctx, owner, storedGlobalKey, "stored", jobIDs)
}

func (q *Quota) release(ctx context.Context, owner, key, what string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := checkOwner(owner); err != nil {
		return err
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	if err := q.rdb.ZRem(ctx, key, members...).Err(); err != nil {
		return fmt.Errorf("quota: release %s jobs of %s: %w", what, owner, err)
	}
	return nil
}

// AdmitStored records jobID among owner's stored jobs and among all
// stored jobs, until until (when the job expires), if owner stores fewer
// than perOwner and everybody fewer than global; 0 (or less) is no limit,
// and the job is recorded all the same. A job already recorded is allowed
// again. A refusal records nothing (the owner's record is taken back when
// the global cap refuses) and names the cap that refused; an allowed
// decision shows the cap with the least left.
func (q *Quota) AdmitStored(ctx context.Context, owner, jobID string, perOwner, global int, until time.Time) (Decision, error) {
	if err := checkOwner(owner); err != nil {
		return Decision{}, err
	}
	// Two scripts: the owner's set and the global one are in different
	// slots.
	own, err := q.admit(ctx, storedKey(owner), jobID, perOwner, until, false, nil)
	if err != nil {
		return Decision{}, fmt.Errorf("quota: admit stored job %s of %s: %w", jobID, owner, err)
	}
	ownD := own.decision(LimitStored, perOwner, q.now())
	if !own.allowed {
		return ownD, nil
	}
	all, err := q.admit(ctx, storedGlobalKey, jobID, global, until, false, nil)
	if err != nil || !all.allowed {
		if own.added {
			// Best effort: left behind, the record expires with the job
			// that will not exist.
			undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = q.rdb.ZRem(undo, storedKey(owner), jobID).Err()
			cancel()
		}
		if err != nil {
			return Decision{}, fmt.Errorf("quota: admit stored job %s globally: %w", jobID, err)
		}
	}
	allD := all.decision(LimitStoredGlobal, global, q.now())
	switch {
	case !all.allowed:
		return allD, nil
	case allD.Quota > 0 && (ownD.Quota == 0 || allD.Remaining < ownD.Remaining):
		return allD, nil
	}
	return ownD, nil
}
