package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Summary is what a listing shows of a job, as its caller sees it (the
// same as Resolve, without the members' texts and the result): a handle
// shows the work it joined under its own id, owner and creation time; a
// caller that detached sees its job canceled when it detached.
type Summary struct {
	ID     string
	Owner  string
	Kind   string
	Status job.Status
	// Question is the job's question (for a job stored by reference, read
	// from its result record).
	Question   string
	CreatedAt  time.Time
	FinishedAt time.Time // zero until the job ends
	// Cached is job.Job.Cached: the whole job was served from the caches.
	Cached bool
	// Warm marks a cache-warming job.
	Warm bool
}

// summaryScript: KEYS[1] a job's hash (a job or a handle), ARGV[1] the id
// whose detachment counts (field d:<id>). Reads what a Summary needs,
// without the members' texts or the result: {} when there is no such
// hash, else {status, owner, of, spec, created, finished, ref, detached,
// cached ("1" or empty)}. cached is worked out here, from the result's and
// the members' records, so that none of them travels: a job stored by
// reference is cached by construction; a handle's is its work's.
var summaryScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'owner', 'of', 'spec', 'created', 'finished', 'ref', 'd:' .. ARGV[1], 'agg', 'n')
if not v[1] and not v[3] then return {} end
local cached = ''
if v[7] then
  cached = '1'
elseif v[1] and v[9] then
  local ok, r = pcall(cjson.decode, v[9])
  if ok and r.cached == true then
    cached = '1'
    for i = 0, (tonumber(v[10]) or 0) - 1 do
      local raw = redis.call('HGET', KEYS[1], 's:' .. i)
      local ok2, s = pcall(cjson.decode, raw or '')
      if not ok2 or s.cached ~= true then cached = ''; break end
    end
  end
end
return {v[1] or '', v[2] or '', v[3] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '', v[8] or '', cached}
`)

// questionScript: KEYS[1] a result record. Returns {question}, or {} when
// there is no such record: only the question travels, not the answers.
var questionScript = redis.NewScript(`
local raw = redis.call('GET', KEYS[1])
if not raw then return {} end
local ok, r = pcall(cjson.decode, raw)
if not ok or type(r.question) ~= 'string' then return {} end
return {r.question}
`)

// summaryRecord is what summaryScript read of one hash.
type summaryRecord struct {
	status, owner, of, spec, created, finished, ref, detached string
	cached                                                    bool
}

// scriptCall is one script run of a pipeline.
type scriptCall struct {
	sc   *redis.Script
	keys []string
	args []any
}

// runScripts runs calls in one pipeline (one round trip) and returns their
// replies in order. Scripts are sent by digest; when the server does not
// know one (a restarted or new Redis), they are loaded and the pipeline is
// sent again.
func (s *Store) runScripts(ctx context.Context, calls []scriptCall) ([][]any, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	for try := 0; ; try++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			cmds[i] = c.sc.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx) // each command's error is read below
		out := make([][]any, len(calls))
		missing := false
		for i, cmd := range cmds {
			res, err := cmd.Slice()
			if err != nil {
				if redis.HasErrorPrefix(err, "NOSCRIPT") && try == 0 {
					missing = true
					break
				}
				return nil, err
			}
			out[i] = res
		}
		if !missing {
			return out, nil
		}
		seen := map[*redis.Script]bool{}
		for _, c := range calls {
			if !seen[c.sc] {
				seen[c.sc] = true
				if err := c.sc.Load(ctx, s.rdb).Err(); err != nil {
					return nil, err
				}
			}
		}
	}
}

func decodeSummaryRecord(res []any) (summaryRecord, bool) {
	if len(res) < 9 {
		return summaryRecord{}, false
	}
	str := func(i int) string { s, _ := res[i].(string); return s }
	return summaryRecord{
		status: str(0), owner: str(1), of: str(2), spec: str(3), created: str(4), finished: str(5),
		ref: str(6), detached: str(7), cached: str(8) == "1",
	}, true
}

// Summaries returns, for each of ids (jobs or handles), its Summary, or nil
// when it is gone (expired, never stored, or a handle whose work is gone).
// It reads in a fixed number of round trips, whatever the number of ids:
// one pipeline for the ids, one more for the works that handles joined and
// the questions of the jobs stored by reference (and, only should a work
// itself be stored by reference, a third for its question). It never
// reads a member's text or a result.
func (s *Store) Summaries(ctx context.Context, ids []string) ([]*Summary, error) {
	calls := make([]scriptCall, len(ids))
	for i, id := range ids {
		calls[i] = scriptCall{summaryScript, []string{JobKey(id)}, []any{id}}
	}
	replies, err := s.runScripts(ctx, calls)
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	own := make([]summaryRecord, len(ids))
	found := make([]bool, len(ids))
	for i, res := range replies {
		own[i], found[i] = decodeSummaryRecord(res)
	}

	// The works of handles, and the questions of jobs stored by reference.
	var more []scriptCall
	work := make([]int, len(ids)) // index in more of the work's summary, -1 none
	refs := map[string]int{}      // result ref -> index in more
	askRef := func(ref string) {
		if _, ok := refs[ref]; !ok {
			refs[ref] = len(more)
			more = append(more, scriptCall{questionScript, []string{ResultKey(ref)}, nil})
		}
	}
	for i, r := range own {
		work[i] = -1
		switch {
		case !found[i]:
		case r.of != "":
			work[i] = len(more)
			more = append(more, scriptCall{summaryScript, []string{JobKey(r.of)}, []any{ids[i]}})
		case r.ref != "":
			askRef(r.ref)
		}
	}
	replies, err = s.runScripts(ctx, more)
	if err != nil {
		return nil, fmt.Errorf("read jobs: %w", err)
	}
	works := map[int]summaryRecord{}
	var later []string // refs of works, not asked yet
	for i := range ids {
		if work[i] < 0 {
			continue
		}
		w, ok := decodeSummaryRecord(replies[work[i]])
		if !ok || w.status == "" {
			found[i] = false // the work is gone
			continue
		}
		works[i] = w
		if _, asked := refs[w.ref]; w.ref != "" && !asked {
			later = append(later, w.ref)
		}
	}
	questions := map[string]string{}
	gone := map[string]bool{}
	readQuestions := func(rs []string, replies [][]any, at func(string) int) {
		for _, ref := range rs {
			res := replies[at(ref)]
			if len(res) == 0 {
				gone[ref] = true
				continue
			}
			questions[ref], _ = res[0].(string)
		}
	}
	var asked []string
	for ref := range refs {
		asked = append(asked, ref)
	}
	readQuestions(asked, replies, func(ref string) int { return refs[ref] })
	if len(later) > 0 {
		calls := make([]scriptCall, len(later))
		at := map[string]int{}
		for i, ref := range later {
			at[ref] = i
			calls[i] = scriptCall{questionScript, []string{ResultKey(ref)}, nil}
		}
		replies, err := s.runScripts(ctx, calls)
		if err != nil {
			return nil, fmt.Errorf("read jobs: %w", err)
		}
		readQuestions(later, replies, func(ref string) int { return at[ref] })
	}

	out := make([]*Summary, len(ids))
	for i, id := range ids {
		if !found[i] {
			continue
		}
		r := own[i]
		// The record whose state the caller sees: the job's own, or the
		// work's, whose d:<handle> was read for the handle.
		seen := r
		if w, ok := works[i]; ok {
			seen = w
		}
		if seen.status == "" || (seen.ref != "" && gone[seen.ref]) {
			continue // a job must not show without what it has (Get)
		}
		var spec job.Spec
		if err := json.Unmarshal([]byte(seen.spec), &spec); err != nil {
			return nil, fmt.Errorf("decode job %s spec: %w", id, err)
		}
		if seen.ref != "" {
			spec.Question = questions[seen.ref]
		}
		owner := r.owner
		if owner == "" {
			owner = spec.Owner
		}
		sum := &Summary{
			ID: id, Owner: owner, Kind: spec.Kind, Status: job.Status(seen.status), Question: spec.Question,
			CreatedAt: msTime(r.created), FinishedAt: msTime(seen.finished), Cached: seen.cached, Warm: spec.Warm,
		}
		if seen.detached != "" {
			ms, _, _ := strings.Cut(seen.detached, " ")
			sum.Status, sum.FinishedAt, sum.Cached = job.StatusCanceled, msTime(ms), false
		}
		out[i] = sum
	}
	return out, nil
}
