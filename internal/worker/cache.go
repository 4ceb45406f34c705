package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// Caching is what the handlers use of package cache; every part is
// optional.
type Caching struct {
	// Cache serves members' answers and results computed by other jobs
	// since this one was accepted, and keeps what the handlers compute.
	// Its keys come from the job's kind (the member task's CacheKey, the
	// kind's ResultKey), so that the worker and the api read and write the
	// same entries.
	Cache *cache.Cache
	// Intake creates the jobs of cache warming.
	Intake *intake.Intake
	// WarmQuestions are the questions the periodic warming task warms.
	WarmQuestions []string
}

// SetCaching turns on the caches' use. Call it before the servers start.
func (h *Handlers) SetCaching(c Caching) { h.caching = c }

// cachedMember returns the cached answer of the member, when the job reads
// the cache, the member has a cache key and one is there; cache trouble
// reads as a miss.
func (h *Handlers) cachedMember(ctx context.Context, p tasks.MemberPayload, noun job.Noun, log *slog.Logger) *cache.Answer {
	c := h.caching.Cache
	if c == nil || p.NoCacheRead || p.CacheKey == "" {
		return nil
	}
	hits, err := c.Members(ctx, []string{p.CacheKey})
	if err != nil {
		log.Warn(string(noun)+" cache unreadable; calling the model", "err", err)
		return nil
	}
	result := metrics.CacheMiss
	if hits[0] != nil {
		result = metrics.CacheHit
	}
	// The scope of a member lookup is the kind's noun ("snapshot").
	metrics.CacheLookups.WithLabelValues(string(noun), result).Inc()
	return hits[0]
}

// serveCachedMember records the cached answer as the member's outcome,
// with the events a model call would have made, and starts the aggregation
// when it was the last member.
func (h *Handlers) serveCachedMember(ctx context.Context, p tasks.MemberPayload, noun job.Noun, hit *cache.Answer, log *slog.Logger) error {
	owner := uuid.NewString()
	_, fan, err := h.startMember(ctx, p, owner, hit.Model)
	switch {
	case notWrittenYet(err, p):
		return fmt.Errorf("%s %d of job %s: %w", noun, p.Index, p.JobID, errJobNotWritten)
	case errors.Is(err, store.ErrMemberDone):
		if fan.Last() {
			return h.promote(p)
		}
		return nil
	case stopQuietly(err):
		return nil
	case err != nil:
		return err
	}
	if err := h.store.AppendMemberText(ctx, p.JobID, p.Index, owner, 1, hit.Text); err != nil {
		if stopQuietly(err) {
			return nil
		}
		return err
	}
	fan, err = h.store.FinishMember(ctx, p.JobID, p.Index, owner, store.MemberOutcome{Text: hit.Text, Model: hit.Model, Cached: true})
	switch {
	case errors.Is(err, store.ErrMemberDone):
		// Recorded already (by this call, whose reply was lost, or a
		// duplicate): the fan-in may still be this one's to finish.
		if fan.Last() {
			return h.promote(p)
		}
		return nil
	case stopQuietly(err):
		return nil
	case err != nil:
		return err
	}
	metrics.CacheCallsSaved.WithLabelValues(string(noun)).Inc()
	log.Info(string(noun)+" served from cache", "done", fan.Done, "of", fan.Total)
	if fan.Last() {
		return h.promote(p)
	}
	return nil
}

// keepMember caches a member's answer under its cache key, for the short
// TTL when the member is volatile. Only an answer of the model the member
// asked is kept: the key names that model, and a fallback's answer is not
// interchangeable with its. Failures are only logged: the job has its
// answer.
func (h *Handlers) keepMember(ctx context.Context, p tasks.MemberPayload, answeredBy, text string, log *slog.Logger) {
	c := h.caching.Cache
	asked := p.Request.Model
	if answeredBy == "" {
		answeredBy = asked
	}
	if c == nil || text == "" || p.CacheKey == "" || answeredBy != asked {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := c.PutMember(ctx, p.CacheKey, cache.Answer{Text: text, Model: answeredBy}, p.Volatile); err != nil {
		log.Warn("could not cache the answer", "err", err)
	}
}

// readsResultCache reports whether j's aggregation may be served from the
// result cache: the job reads the cache and every member completed.
func (h *Handlers) readsResultCache(j *job.Job, done []job.Member) bool {
	return h.caching.Cache != nil && j.Spec.ReadsCache() && len(done) == len(j.Members)
}

// cachedResult returns the cached result of key, when the key is set and
// one is there; cache trouble reads as a miss.
func (h *Handlers) cachedResult(ctx context.Context, key string, log *slog.Logger) *job.Result {
	c := h.caching.Cache
	if c == nil || key == "" {
		return nil
	}
	r, err := c.Result(ctx, key)
	if err != nil {
		log.Warn("result cache unreadable; calling the models", "err", err)
		return nil
	}
	result := metrics.CacheMiss
	if r != nil {
		result = metrics.CacheHit
	}
	metrics.CacheLookups.WithLabelValues(metrics.CacheScopeAggregate, result).Inc()
	return r
}

// serveCachedResult emits the cached result's parts as the aggregation's,
// each with cached:true, and fills res. The parts are emitted in the
// kind's order (parts); hit has every one of them.
func (h *Handlers) serveCachedResult(ctx context.Context, j *job.Job, owner string, parts []jobkind.Part, hit *job.Result, res *job.Result) error {
	for _, pp := range parts {
		p := *hit.Part(pp.Name)
		p.Error, p.LLMAttempts, p.MS = "", 0, 0
		if len(p.Value) == 0 && p.Text != "" {
			// A streamed part's text goes out as one delta, as the
			// model's would have.
			if err := h.store.AppendPartText(ctx, j.ID, owner, p.Name, 1, p.Text); err != nil {
				return err
			}
		}
		if err := h.store.EmitPart(ctx, j.ID, owner, p, true); err != nil {
			return err
		}
		res.Set(p)
		if pp.Fixed == nil {
			metrics.CacheCallsSaved.WithLabelValues(pp.Name).Inc()
		}
	}
	res.Cached = true
	return nil
}

// hasParts reports whether r has a part of each name of parts.
func hasParts(r *job.Result, parts []jobkind.Part) bool {
	for _, p := range parts {
		if r.Part(p.Name) == nil {
			return false
		}
	}
	return true
}

// keepResult caches a complete result (every part succeeded) under key,
// for the short TTL when a member it was made from is volatile. Failures
// are only logged.
func (h *Handlers) keepResult(ctx context.Context, kind jobkind.Kind, j *job.Job, key string, done []job.Member, res *job.Result, log *slog.Logger) {
	c := h.caching.Cache
	if c == nil || key == "" || res.Cached || res.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := c.PutResult(ctx, key, *res, h.volatile(kind, j, done)); err != nil {
		log.Warn("could not cache the result", "err", err)
	}
}

// volatile reports whether a result made from done may change soon: when
// the plan of the job, as of now, says so of one of them. When the plan
// cannot be made it says yes, the safe side.
func (h *Handlers) volatile(kind jobkind.Kind, j *job.Job, done []job.Member) bool {
	plan, err := kind.Plan(j.Spec, h.env)
	if err != nil {
		return true
	}
	for _, m := range done {
		if m.Index < 0 || m.Index >= len(plan) || plan[m.Index].Volatile {
			return true
		}
	}
	return false
}
