// Package quota enforces the limits of each API key (an owner), across every
// process of the service, on Redis: submissions per minute (GCRA), jobs
// running and jobs stored at once, and provider tokens per UTC day; and,
// in the memory of one process, its server-sent-event connections.
//
// Every key of one owner carries the hash tag {<owner>}, so that an owner's
// keys live in one Redis Cluster slot; each script touches one key only,
// and the keys shared by all owners are written by commands of their own.
//
// Each check returns a Decision, which says which limit decided, how much
// of it is left and when it frees up, and writes that as the RateLimit
// header fields of the IETF draft (see Decision.SetHeaders).
package quota

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Names of the limits: Decision.Limit, and the policy names of the
// RateLimit header fields.
const (
	LimitSubmissions  = "submissions_per_minute"
	LimitRunning      = "running_jobs"
	LimitStored       = "stored_jobs"
	LimitStoredGlobal = "stored_jobs_global"
	LimitTokens       = "tokens_per_day"
	LimitSSE          = "sse_connections"
	LimitSSEProcess   = "sse_connections_process"
)

// ErrNoOwner: a quota was asked for without an owner. Keys of the empty
// owner would all hash to different slots, and mix everybody's usage.
var ErrNoOwner = errors.New("quota: no owner")

// Decision is the verdict of one check of one limit.
type Decision struct {
	// Allowed says the check passed (and, for admissions, took its unit).
	Allowed bool
	// Limit names the limit that decided (the Limit* constants).
	Limit string
	// Quota is the limit's value; 0 when there is no limit.
	Quota int64
	// Remaining is what is left of Quota after this check.
	Remaining int64
	// Window is the period over which Quota counts; 0 for limits on what
	// is held at once (running and stored jobs, connections).
	Window time.Duration
	// Reset is the time until the limit frees capacity: the bucket refills,
	// the day ends, the earliest held unit expires.
	Reset time.Duration
	// RetryAfter is, when refused, the time to wait before trying again.
	RetryAfter time.Duration
}

// SetHeaders writes d as the header fields of
// draft-ietf-httpapi-ratelimit-headers (structured fields):
//
//	RateLimit-Policy: "<limit>";q=<quota>;w=<window seconds>
//	RateLimit: "<limit>";r=<remaining>;t=<reset seconds, rounded up>
//
// and, when d refused, Retry-After in whole seconds, rounded up, at least
// 1. w is left out for limits without a window. A decision of no limit
// (Quota 0) that allowed writes nothing: there is no policy to advertise.
func (d Decision) SetHeaders(h http.Header) {
	if d.Quota > 0 {
		name := sfString(d.Limit)
		policy := name + ";q=" + strconv.FormatInt(d.Quota, 10)
		if d.Window > 0 {
			policy += ";w=" + strconv.FormatInt(ceilSeconds(d.Window), 10)
		}
		h.Set("RateLimit-Policy", policy)
		h.Set("RateLimit", name+";r="+strconv.FormatInt(max(d.Remaining, 0), 10)+";t="+strconv.FormatInt(ceilSeconds(d.Reset), 10))
	}
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10))
	}
}

// ceilSeconds is d in whole seconds, rounded up, never negative: a client
// that waits that long finds the capacity there.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}

// sfString is s as a structured-field string (RFC 8941).
func sfString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Quota checks and counts the limits of owners on Redis. It is safe for
// concurrent use; processes that share the Redis share the limits.
type Quota struct {
	rdb  redis.UniversalClient
	rate *redis_rate.Limiter
	// now is the clock of expiries and days (tests set it). The GCRA runs
	// on the Redis server's clock (redis_rate's script reads TIME).
	now func() time.Time
}

// New returns the quotas kept on rdb.
func New(rdb redis.UniversalClient) *Quota {
	return &Quota{rdb: rdb, rate: redis_rate.NewLimiter(rdb), now: time.Now}
}

// Keys. The owner's hash tag keeps an owner's keys in one cluster slot.
func ownerPrefix(owner string) string    { return "tt:quota:{" + owner + "}:" }
func submissionsKey(owner string) string { return ownerPrefix(owner) + "submissions" }
func runningKey(owner string) string     { return ownerPrefix(owner) + "running" }
func storedKey(owner string) string      { return ownerPrefix(owner) + "stored" }
func tokensKey(owner, day string) string { return ownerPrefix(owner) + "tokens:" + day }
func tokensKeyAt(owner string, t time.Time) string {
	return tokensKey(owner, t.UTC().Format(time.DateOnly))
}

// storedGlobalKey holds every owner's stored jobs: a slot of its own.
const storedGlobalKey = "tt:quota:stored"

func checkOwner(owner string) error {
	if owner == "" {
		return ErrNoOwner
	}
	return nil
}

// AllowSubmission takes one submission of owner's perMinute (GCRA: a
// bucket of perMinute, refilled evenly over a minute), or refuses it with
// the wait until one fits. perMinute <= 0 is no limit: allowed, without a
// Redis call.
func (q *Quota) AllowSubmission(ctx context.Context, owner string, perMinute int) (Decision, error) {
	return q.submissions(ctx, owner, perMinute, 1)
}

// submissions runs the GCRA with cost n; n = 0 reads the state without
// taking anything.
func (q *Quota) submissions(ctx context.Context, owner string, perMinute, n int) (Decision, error) {
	d := Decision{Allowed: true, Limit: LimitSubmissions}
	if perMinute <= 0 {
		return d, nil
	}
	if err := checkOwner(owner); err != nil {
		return Decision{}, err
	}
	res, err := q.rate.AllowN(ctx, submissionsKey(owner), redis_rate.PerMinute(perMinute), n)
	if err != nil {
		return Decision{}, fmt.Errorf("quota: submissions of %s: %w", owner, err)
	}
	d.Quota, d.Window = int64(perMinute), time.Minute
	d.Remaining, d.Reset = int64(res.Remaining), max(res.ResetAfter, 0)
	if n > 0 && res.Allowed < n {
		d.Allowed, d.RetryAfter = false, max(res.RetryAfter, time.Millisecond)
	}
	return d, nil
}

// Usage is what an owner holds and has used now.
type Usage struct {
	// SubmissionsRemaining is what is left of the per-minute submissions;
	// -1 when there is no limit.
	SubmissionsRemaining int64
	// RunningJobs and StoredJobs count the jobs held, expired ones left
	// out.
	RunningJobs, StoredJobs int64
	// TokensToday is the tokens charged this UTC day, reservations of
	// requests still running included.
	TokensToday int64
}

// Usage reads owner's usage without taking anything: the submissions left
// of perMinute (a GCRA peek), the running and stored jobs that have not
// expired, and today's tokens.
func (q *Quota) Usage(ctx context.Context, owner string, perMinute int) (Usage, error) {
	if err := checkOwner(owner); err != nil {
		return Usage{}, err
	}
	u := Usage{SubmissionsRemaining: -1}
	if perMinute > 0 {
		d, err := q.submissions(ctx, owner, perMinute, 0)
		if err != nil {
			return Usage{}, err
		}
		u.SubmissionsRemaining = d.Remaining
	}
	now := q.now()
	from := strconv.FormatInt(now.UnixMilli(), 10)
	pipe := q.rdb.Pipeline()
	running := pipe.ZCount(ctx, runningKey(owner), from, "+inf")
	stored := pipe.ZCount(ctx, storedKey(owner), from, "+inf")
	tokens := pipe.Get(ctx, tokensKeyAt(owner, now))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Usage{}, fmt.Errorf("quota: usage of %s: %w", owner, err)
	}
	u.RunningJobs, u.StoredJobs = running.Val(), stored.Val()
	used, err := tokens.Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Usage{}, fmt.Errorf("quota: tokens of %s: %w", owner, err)
	}
	u.TokensToday = max(used, 0)
	return u, nil
}
