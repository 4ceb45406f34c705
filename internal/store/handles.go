package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// A job in flight may be shared: a request identical to it gets a handle
// (a job id of its own, owned by its caller) on the same work. The work's
// holders set lists the ids that still want it: the job's own and its
// handles'. A caller that cancels while others still want the work only
// detaches: the work goes on, and that caller's stream ends at a
// holder.detached marker. The last holder to cancel cancels the work.

// holdersKey is the set of ids that want jobID's work; it exists only once
// the job has been joined.
func holdersKey(jobID string) string { return "tt:{" + jobID + "}:holders" }

// Errors of shared jobs.
var (
	// ErrDetached: the caller has already let go of the job.
	ErrDetached = errors.New("already canceled by this caller")
)

// holdScript: KEYS[1] the work's hash, KEYS[2] its holders; ARGV[1] the
// work's id, ARGV[2] the handle's. Adds the handle to the holders (with the
// work itself, the first time). Returns 'ok' | 'closed' | 'gone'.
var holdScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'canceling')
if not v[1] then return 'gone' end
if v[2] or (v[1] ~= 'queued' and v[1] ~= 'running' and v[1] ~= 'aggregating') then return 'closed' end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SADD', KEYS[2], ARGV[1]) end
redis.call('SADD', KEYS[2], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'ok'
`)

// detachScript: KEYS[1] the work's hash, KEYS[2] its holders, KEYS[3] its
// stream; ARGV[1] channel, ARGV[2] the work's id, ARGV[3] the caller's id,
// ARGV[4] now ms. Returns {'cancel'} when the caller was the last holder
// (the work is marked canceling: nobody joins it any more, and the caller
// cancels it), {'detached', holders left} when others still want it,
// {'again'} when the caller had let go already, {'closed', status} or
// {'gone'}.
var detachScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'canceling')
if not v[1] then return {'gone'} end
if v[1] ~= 'queued' and v[1] ~= 'running' and v[1] ~= 'aggregating' then return {'closed', v[1]} end
if redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[3]) == 1 then return {'again'} end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then return {'again'} end
  redis.call('SREM', KEYS[2], ARGV[3])
  local n = redis.call('SCARD', KEYS[2])
  if n > 0 then
    local id = redis.call('XADD', KEYS[3], '*', 't', 'holder.detached', 'd', cjson.encode({holder = ARGV[3]}))
    redis.call('HSET', KEYS[1], 'd:' .. ARGV[3], ARGV[4] .. ' ' .. id)
    redis.call('PUBLISH', ARGV[1], ARGV[2])
    return {'detached', n}
  end
end
if v[2] then return {'again'} end
redis.call('HSET', KEYS[1], 'canceling', ARGV[4])
return {'cancel'}
`)

// CreateHandle stores h as a handle on the job workID, which must still be
// running: h gets its own id and owner, and shares the work (its state,
// its events). ErrClosed when the work has ended or is being canceled,
// ErrNotFound when it is gone: the caller then runs a job of its own.
func (s *Store) CreateHandle(ctx context.Context, h *job.Job, workID string) error {
	res, err := holdScript.Run(ctx, s.rdb, []string{JobKey(workID), holdersKey(workID)}, workID, h.ID).Text()
	if err != nil {
		return fmt.Errorf("join job %s: %w", workID, err)
	}
	switch res {
	case "gone":
		return ErrNotFound
	case "closed":
		return ErrClosed
	}
	spec, err := json.Marshal(h.Spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	ttl := time.Until(h.Deadline) + s.retention
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, JobKey(h.ID), "of", workID, "owner", h.Spec.Owner, "spec", string(spec),
			"created", h.CreatedAt.UnixMilli(), "deadline", h.Deadline.UnixMilli())
		p.PExpire(ctx, JobKey(h.ID), ttl)
		return nil
	})
	if err != nil {
		// The work counts the handle among its holders: it will not be
		// canceled by the others alone, and ends at its deadline at worst.
		return fmt.Errorf("create handle %s: %w", h.ID, err)
	}
	return nil
}

// Detach lets the caller callerID (the job's own id, or a handle's) go of
// the job workID. It returns true when the caller was the last one that
// wanted it: the job is then marked canceling and the caller must cancel
// it (Finish); false when the work goes on for others and only the caller's
// part ended. ErrDetached when the caller had let go already, ErrClosed
// when the job has ended, ErrNotFound when it is gone.
func (s *Store) Detach(ctx context.Context, workID, callerID string) (bool, error) {
	res, err := s.run(ctx, detachScript, []string{JobKey(workID), holdersKey(workID), events.StreamKey(workID)},
		events.Channel, workID, callerID, s.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("cancel job %s: %w", workID, err)
	}
	switch tag, _ := res[0].(string); tag {
	case "cancel":
		return true, nil
	case "detached":
		return false, nil
	case "again":
		return false, ErrDetached
	case "closed":
		return false, ErrClosed
	default:
		return false, ErrNotFound
	}
}

// Head is what the api needs to know of a job id before it serves it: who
// owns it, which job does its work, and where its caller's stream ends.
type Head struct {
	ID    string
	Owner string
	// Work is the job that does the work: ID itself, or the job a handle
	// joined.
	Work string
	// Status is the work's status, or canceled when the caller detached.
	Status job.Status
	// Marker is the id of the holder.detached event that ends the caller's
	// stream; empty unless it detached.
	Marker string
}

// Head returns the head of jobID (a job or a handle) in one or two short
// reads, or ErrNotFound.
func (s *Store) Head(ctx context.Context, jobID string) (Head, error) {
	v, err := s.rdb.HMGet(ctx, JobKey(jobID), "status", "owner", "of", "d:"+jobID).Result()
	if err != nil {
		return Head{}, fmt.Errorf("read job %s: %w", jobID, err)
	}
	str := func(x any) string { s, _ := x.(string); return s }
	h := Head{ID: jobID, Owner: str(v[1]), Work: jobID, Status: job.Status(str(v[0]))}
	detach := str(v[3])
	if of := str(v[2]); of != "" {
		h.Work = of
		w, err := s.rdb.HMGet(ctx, JobKey(of), "status", "d:"+jobID).Result()
		if err != nil {
			return Head{}, fmt.Errorf("read job %s: %w", of, err)
		}
		h.Status, detach = job.Status(str(w[0])), str(w[1])
	}
	if h.Status == "" {
		return Head{}, ErrNotFound
	}
	if detach != "" {
		h.Status = job.StatusCanceled
		_, h.Marker, _ = strings.Cut(detach, " ")
	}
	return h, nil
}

// Resolve returns jobID as its caller sees it: a job, or the work a handle
// joined under the handle's id and owner (job.SeenBy); ErrNotFound when
// either is gone.
func (s *Store) Resolve(ctx context.Context, jobID string) (*job.Job, error) {
	h, err := s.Get(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if h.Of == "" {
		return h.SeenBy(h), nil
	}
	w, err := s.Get(ctx, h.Of)
	if err != nil {
		return nil, err
	}
	return w.SeenBy(h), nil
}

// Settled reports, for each id (a job or a handle), whether its caller's
// job has ended: the work has ended, the caller detached, or it is gone.
func (s *Store) Settled(ctx context.Context, ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	for i, id := range ids {
		h, err := s.Head(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			out[i] = true
		case err != nil:
			return nil, err
		default:
			out[i] = h.Status.Terminal()
		}
	}
	return out, nil
}

// decodeDetached reads the d:<id> fields of a job's hash.
func decodeDetached(h map[string]string) map[string]job.Detach {
	var out map[string]job.Detach
	for k, v := range h {
		id, ok := strings.CutPrefix(k, "d:")
		if !ok {
			continue
		}
		ms, marker, _ := strings.Cut(v, " ")
		n, _ := strconv.ParseInt(ms, 10, 64)
		if out == nil {
			out = map[string]job.Detach{}
		}
		out[id] = job.Detach{At: time.UnixMilli(n), Marker: marker}
	}
	return out
}
