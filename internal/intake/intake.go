// Package intake turns a validated request of any kind into the job that
// answers it: served at once from the caches, joined to an identical job in
// flight, or created with the cached answers it can reuse and only its
// missing work queued. The job's kind (package jobkind) plans its members,
// names their cache keys and the identity of its result; the intake knows
// no kind. The api uses it for submissions, the worker for cache warming.
package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// Options wire an Intake.
type Options struct {
	Store     *store.Store
	Enqueuer  *tasks.Enqueuer
	Inspector tasks.Inspector
	// Cache serves and keeps answers; nil turns caching off.
	Cache *cache.Cache
	// Inflight deduplicates identical requests; nil turns that off.
	Inflight *cache.Inflight
	// Lifecycle queues the webhook of a job served whole from the caches,
	// which ends as it is created; nil: one on Store and Enqueuer.
	Lifecycle *lifecycle.Lifecycle
	// Kinds are the job kinds served (kinds.Registry()): a spec's kind
	// plans its job.
	Kinds *jobkind.Registry
	// Env is what the kinds' plans depend on besides the request: the
	// configured models and the providers that serve them (cache keys
	// name them). The api and the workers must build it alike (EnvOf),
	// or they name different keys for one answer.
	Env jobkind.Env
	// Deadline bounds each job.
	Deadline time.Duration
	// Admit, when set, is asked before a caller's job (or handle) is
	// stored: runs says whether it will run (a new or joined job) or has
	// ended already (served from the caches). Its error refuses the
	// request and is returned as is (quotas).
	Admit func(ctx context.Context, j *job.Job, runs bool) error
	// Backlog, when set, is asked before a caller's new job is stored and
	// its member calls queued, once Admit let it run (not for a job
	// served from the caches, a request that joins a job in flight, nor a
	// warming job): calls is how many member calls it queues (0 when the
	// cache answered them all). It returns how long those calls are
	// expected to wait (nil: unknown), which the job's job.accepted
	// carries, or an error that refuses the request, returned as is (an
	// overloaded service); a refused job is neither stored nor queued.
	// Unless it refused, its settle is called once the job's calls are
	// queued (true) or will not be (false).
	Backlog func(ctx context.Context, j *job.Job, calls int) (wait *time.Duration, settle func(queued bool), err error)
	Log     *slog.Logger
}

// EnvOf is the Env that cfg describes: its default, extraction and
// narrative models, each served by the provider cfg routes it to
// (config.LLM.ProviderIdentity).
func EnvOf(cfg config.LLM) jobkind.Env {
	return jobkind.Env{
		Model: cfg.Model, Extraction: cfg.ExtractionModel, Narrative: cfg.NarrativeModel,
		ProviderOf: cfg.ProviderIdentity,
	}
}

// FromConfig returns the Intake that cfg describes on the process's objects
// in o (Store, Enqueuer, Inspector, Inflight, Lifecycle, Kinds, Env, Log,
// Admit, Backlog): the answer caches (made on the store's Redis) when
// caching is on, o.Inflight only when deduplication is on, and cfg's job
// deadline.
func FromConfig(cfg config.Config, o Options) *Intake {
	o.Cache = nil
	if cfg.Cache.Caching {
		o.Cache = cache.New(o.Store.Redis(), cache.TTLs{Past: cfg.Cache.PastTTL, Today: cfg.Cache.TodayTTL})
	}
	if !cfg.Cache.Dedup {
		o.Inflight = nil
	}
	o.Deadline = cfg.JobDeadline
	return New(o)
}

// Cache returns the caches the intake serves answers from; nil when
// caching is off.
func (in *Intake) Cache() *cache.Cache { return in.o.Cache }

// Intake is safe for concurrent use.
type Intake struct {
	o   Options
	now func() time.Time
}

// New returns an Intake.
func New(o Options) *Intake {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Lifecycle == nil {
		o.Lifecycle = lifecycle.New(lifecycle.Options{Store: o.Store, Webhooks: o.Enqueuer, Inspector: o.Inspector, Inflight: o.Inflight, Log: o.Log})
	}
	return &Intake{o: o, now: time.Now}
}

// Outcome is how a request is served.
type Outcome struct {
	// Job is the job that answers the request: the one created, or, when
	// Joined, the job in flight as it was read.
	Job *job.Job
	// Joined is set when the request joined an identical job in flight.
	Joined bool
	// Cached is set when the whole job was served from the caches: it has
	// ended already, with all its events.
	Cached bool
	// CachedMembers counts the members answered from the member cache.
	CachedMembers int
}

// createGrace is how long a fingerprint's holder may be missing from the
// store before it counts as dead: its creator claims the fingerprint just
// before it stores the job.
const createGrace = 10 * time.Second

// Submit serves spec, planned by its kind. Cache trouble never fails a
// request (the job runs without the cache); an error means no job answers
// the request.
func (in *Intake) Submit(ctx context.Context, spec job.Spec) (Outcome, error) {
	kind, err := in.o.Kinds.Of(spec)
	if err != nil {
		return Outcome{}, err
	}
	spec.Kind = kind.Name()
	env := in.o.Env
	plan, err := kind.Plan(spec, env)
	if err != nil {
		return Outcome{}, fmt.Errorf("plan the %s job: %w", kind.Name(), err)
	}
	if len(plan) == 0 {
		return Outcome{}, fmt.Errorf("plan the %s job: no %s to compute", kind.Name(), kind.Noun().Plural())
	}
	now := in.now().Truncate(time.Millisecond) // as stored: every reader sees the same instant
	id, err := uuid.NewV7()
	if err != nil {
		return Outcome{}, fmt.Errorf("make a job id: %w", err)
	}
	j := &job.Job{
		ID: id.String(), Spec: spec, Noun: kind.Noun(), Status: job.StatusQueued,
		CreatedAt: now, Deadline: now.Add(in.o.Deadline),
	}
	j.Members = make([]job.Member, len(plan))
	for i, m := range plan {
		j.Members[i] = job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberPending}
	}
	acc, err := kind.Accepted(spec, j.Members)
	if err != nil {
		return Outcome{}, fmt.Errorf("the accepted fields of the %s job: %w", kind.Name(), err)
	}
	if j.Accepted, err = json.Marshal(acc); err != nil {
		return Outcome{}, fmt.Errorf("encode the accepted fields of the %s job: %w", kind.Name(), err)
	}
	log := in.o.Log.With("job_id", j.ID)

	hits := make([]*cache.Answer, len(plan))
	var result *job.Result
	if in.o.Cache != nil && spec.ReadsCache() {
		hits, result = in.lookup(ctx, kind, j, plan, log)
	}
	n := 0
	for _, h := range hits {
		if h != nil {
			n++
		}
	}
	total := len(plan)
	if in.o.Cache != nil && spec.ReadsCache() && !spec.Warm {
		// Warming's lookups would blur the hit rate of people's requests.
		res := metrics.CacheMiss
		switch {
		case result != nil:
			res = metrics.CacheHit
		case n > 0:
			res = metrics.CachePartial
		}
		metrics.CacheLookups.WithLabelValues(metrics.CacheScopeJob, res).Inc()
	}
	if result != nil {
		if spec.Warm {
			return Outcome{Job: j, Cached: true, CachedMembers: n}, nil // nothing to warm
		}
		if err := in.admit(ctx, j, false); err != nil {
			return Outcome{}, err
		}
		return in.serveCached(ctx, kind, j, hits, result)
	}
	if err := in.admit(ctx, j, true); err != nil {
		return Outcome{}, err
	}

	// A request with a callback URL never joins another job, nor is it
	// joined: the one webhook of a shared job would name another caller's
	// job. A kind whose members or result it does not identify takes no
	// part either (an empty fingerprint).
	if in.o.Inflight != nil && spec.CallbackURL == "" {
		if fp := in.fingerprint(kind, spec, plan); fp != "" {
			holder, err := in.claim(ctx, fp, j, log)
			if err != nil {
				return Outcome{}, err
			}
			if holder != nil {
				h := &job.Job{ID: j.ID, Spec: spec, Noun: j.Noun, Status: holder.Status, CreatedAt: now, Deadline: holder.Deadline}
				err := in.o.Store.CreateHandle(ctx, h, holder.ID)
				switch {
				case err == nil:
					metrics.JobsJoined.Inc()
					log.Info("request joined a job in flight", "joined", holder.ID)
					return Outcome{Job: holder.SeenBy(h), Joined: true}, nil
				case errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrNotFound):
					// The job ended in between: this request runs its own,
					// without deduplication.
					log.Debug("job in flight ended before it could be joined", "holder", holder.ID)
				default:
					return Outcome{}, err
				}
			}
		}
	}

	fillMembers(j, hits, now)
	settle := func(bool) {}
	if in.o.Backlog != nil && !spec.Warm {
		wait, settled, err := in.o.Backlog(ctx, j, total-n)
		if err != nil {
			in.release(ctx, j)
			return Outcome{}, err
		}
		j.ExpectedWait = wait
		if settled != nil {
			settle = settled
		}
	}
	err = in.accept(ctx, j, plan, n == total)
	settle(err == nil)
	if err != nil {
		in.release(ctx, j)
		return Outcome{}, err
	}
	metrics.CacheCallsSaved.WithLabelValues(string(j.Noun)).Add(float64(n))
	log.Debug("job accepted", "cached_"+j.Noun.Plural(), n, "of", total)
	return Outcome{Job: j, CachedMembers: n}, nil
}

// release frees the fingerprint j claimed, if any, for a job that is not
// stored after all.
func (in *Intake) release(ctx context.Context, j *job.Job) {
	if j.Fingerprint == "" {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = in.o.Inflight.Release(rctx, j.Fingerprint, j.ID)
}

// fingerprint is the identity of spec's request for deduplication (see
// cache.Fingerprint): its kind, its members' cache keys, the identity of
// its result beyond them, whether it bypasses the cache, warms, and its
// callback URL. Empty: the request takes no part in deduplication.
func (in *Intake) fingerprint(kind jobkind.Kind, spec job.Spec, plan []jobkind.Member) string {
	keys := make([]string, len(plan))
	for i, m := range plan {
		keys[i] = m.CacheKey
	}
	return cache.Fingerprint(kind.Name(), keys, kind.ResultKey(spec, in.o.Env, nil), !spec.ReadsCache(), spec.Warm, spec.CallbackURL)
}

// admit asks the Admit hook to let j be stored (and, when runs, run);
// warming jobs are the service's own and pass.
func (in *Intake) admit(ctx context.Context, j *job.Job, runs bool) error {
	if in.o.Admit == nil || j.Spec.Warm {
		return nil
	}
	return in.o.Admit(ctx, j, runs)
}

// Warm submits spec as a cache-warming job: its tasks run on the warm
// lane, within warming's share of provider capacity, and compute only what
// the caches lack. When every answer is cached already no job is made: the
// Outcome is Cached, with a Job that was never stored.
func (in *Intake) Warm(ctx context.Context, spec job.Spec) (Outcome, error) {
	spec.Warm = true
	spec.Cache, spec.CallbackURL, spec.Owner = job.CacheUse, "", job.SystemOwner
	return in.Submit(ctx, spec)
}

// lookup reads the cached answers of j's members (by the plan's cache
// keys) and, when all are there, the cached result made from them (by the
// kind's result key).
func (in *Intake) lookup(ctx context.Context, kind jobkind.Kind, j *job.Job, plan []jobkind.Member, log *slog.Logger) ([]*cache.Answer, *job.Result) {
	keys := make([]string, len(plan))
	for i, m := range plan {
		keys[i] = m.CacheKey
	}
	hits, err := in.o.Cache.Members(ctx, keys)
	if err != nil || len(hits) != len(plan) {
		log.Warn("member cache unreadable; the job runs without it", "err", err)
		return make([]*cache.Answer, len(plan)), nil
	}
	done := make([]job.Member, 0, len(hits))
	for i, h := range hits {
		if h == nil {
			return hits, nil
		}
		m := j.Members[i]
		m.Status, m.Text, m.Model, m.Cached = job.MemberCompleted, h.Text, h.Model, true
		done = append(done, m)
	}
	r, err := in.o.Cache.Result(ctx, kind.ResultKey(j.Spec, in.o.Env, done))
	if err != nil {
		log.Warn("result cache unreadable; the job runs without it", "err", err)
		return hits, nil
	}
	return hits, r
}

// fillMembers completes j's members answered from the cache.
func fillMembers(j *job.Job, hits []*cache.Answer, now time.Time) {
	for i := range j.Members {
		if h := hits[i]; h != nil {
			m := &j.Members[i]
			m.Status, m.Text, m.Model, m.Cached = job.MemberCompleted, h.Text, h.Model, true
			m.StartedAt, m.CompletedAt = now.UnixMilli(), now.UnixMilli()
		}
	}
}

// serveCached stores j as ended, made wholly of cached answers and the
// cached result r, and queues its webhook. The job's other end effects
// (lifecycle.Ended) do not apply: it held no in-flight entry, and its
// timings, all zero, would only blur those of the jobs that ran.
func (in *Intake) serveCached(ctx context.Context, kind jobkind.Kind, j *job.Job, hits []*cache.Answer, r *job.Result) (Outcome, error) {
	now := j.CreatedAt
	fillMembers(j, hits, now)
	j.Status, j.FinishedAt = job.StatusCompleted, now
	j.Result = &job.Result{Parts: r.Parts, StartedAt: now.UnixMilli(), Cached: true}
	if _, err := in.o.Store.Create(ctx, j); err != nil {
		return Outcome{}, err
	}
	n := len(j.Members)
	metrics.CacheCallsSaved.WithLabelValues(string(j.Noun)).Add(float64(n))
	for _, part := range in.calledParts(kind, j) {
		metrics.CacheCallsSaved.WithLabelValues(part).Inc()
	}
	if j.Spec.CallbackURL != "" {
		if err := in.o.Lifecycle.QueueWebhook(ctx, j.ID, j); err != nil {
			// The job stays answered; the client can read it. Its
			// webhook is the one thing lost, so say so loudly.
			in.o.Log.Error("could not queue the webhook of a cached job", "job_id", j.ID, "err", err)
		}
	}
	in.o.Log.Debug("job served from cache", "job_id", j.ID, j.Noun.Plural(), n)
	return Outcome{Job: j, Cached: true, CachedMembers: n}, nil
}

// calledParts names the parts of j's cached result that would have needed
// a call: those the kind does not fix without one (time travel's key
// changes of a single snapshot). When the kind cannot say, every part of
// the result.
func (in *Intake) calledParts(kind jobkind.Kind, j *job.Job) []string {
	var names []string
	parts, err := kind.Parts(j.Spec, in.o.Env, j.Completed())
	if err != nil {
		for _, p := range j.Result.Parts {
			names = append(names, p.Name)
		}
		return names
	}
	for _, p := range parts {
		if p.Fixed == nil {
			names = append(names, p.Name)
		}
	}
	return names
}

// claim makes j the holder of fp, or returns the live job that holds it.
// A holder that has ended (or never came to be) is replaced.
func (in *Intake) claim(ctx context.Context, fp string, j *job.Job, log *slog.Logger) (*job.Job, error) {
	ttl := in.o.Deadline + time.Minute
	for range 3 {
		h, ok, err := in.o.Inflight.Claim(ctx, fp, j.ID, ttl)
		if err != nil {
			return nil, err
		}
		if ok {
			j.Fingerprint = fp
			return nil, nil
		}
		holder, err := in.holder(ctx, h)
		if err != nil {
			return nil, err
		}
		if holder != nil {
			return holder, nil
		}
		log.Debug("in-flight entry of an ended job replaced", "holder", h.JobID)
		if err := in.o.Inflight.Release(ctx, fp, h.JobID); err != nil {
			return nil, err
		}
	}
	// Claims keep racing with ending jobs: run this one on its own.
	log.Warn("could not claim the request's fingerprint; the job runs without deduplication")
	return nil, nil
}

// holder returns the job of h if it is still running, waiting briefly for
// a holder that is being created; nil when it has ended or is gone.
func (in *Intake) holder(ctx context.Context, h cache.Holder) (*job.Job, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		j, err := in.o.Store.Get(ctx, h.JobID)
		switch {
		case err == nil:
			if j.Status.Terminal() {
				return nil, nil
			}
			return j, nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		case time.Since(h.Since) > createGrace || time.Now().After(deadline):
			return nil, nil
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// accept stores the job and enqueues its tasks (one per member of plan
// that the cache did not answer). The order is what keeps every job
// ending: the aggregation, scheduled at the deadline, goes first, so that
// a crash after any later step still ends the job at its deadline. A job
// whose members all came from the cache has its aggregation started at
// once.
func (in *Intake) accept(ctx context.Context, j *job.Job, plan []jobkind.Member, allCached bool) error {
	if err := in.o.Enqueuer.EnqueueAggregate(ctx, j); err != nil {
		return err
	}
	lane := tasks.LaneOf(j.Spec.Warm)
	// The job is written last, after every task it needs is queued: a
	// process that dies half-way leaves tasks without a job (they find
	// none and end), never a job without its tasks. A member task that
	// runs before the job is written goes back to its queue until it is.
	undo := func() {
		_ = tasks.Withdraw(in.o.Inspector, lane, j.ID, indexes(len(plan)), true)
	}
	if !allCached {
		if err := in.o.Enqueuer.EnqueueMembers(ctx, j, plan); err != nil {
			undo()
			return err
		}
	}
	if _, err := in.o.Store.Create(ctx, j); err != nil {
		if !errors.Is(err, store.ErrExists) {
			undo()
		}
		return err
	}
	if allCached {
		if err := tasks.Promote(in.o.Inspector, lane, j.ID); err != nil {
			// The deadline still starts it.
			in.o.Log.Warn("could not start the aggregation of a job with all "+j.Noun.Plural()+" cached; it runs at the deadline", "job_id", j.ID, "err", err)
		}
	}
	return nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
