// Package intake turns a validated request into the job that answers it:
// served at once from the caches, joined to an identical job in flight, or
// created with the cached answers it can reuse and only its missing work
// queued. The api uses it for submissions, the worker for cache warming.
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/webhook"
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
	// Models are the configured models (for cache keys).
	Models timetravel.Models
	// ProviderOf names the provider that serves each model (for cache
	// keys); nil names none.
	ProviderOf ProviderOf
	// Deadline bounds each job.
	Deadline time.Duration
	// Admit, when set, is asked before a caller's job (or handle) is
	// stored: runs says whether it will run (a new or joined job) or has
	// ended already (served from the caches). Its error refuses the
	// request and is returned as is (quotas).
	Admit func(ctx context.Context, j *job.Job, runs bool) error
	Log   *slog.Logger
}

// FromConfig wires the Intake cfg describes: caching and deduplication on
// or off, the configured models and job deadline.
func FromConfig(cfg config.Config, rdb redis.UniversalClient, st *store.Store, enq *tasks.Enqueuer, insp tasks.Inspector, log *slog.Logger) *Intake {
	o := Options{
		Store: st, Enqueuer: enq, Inspector: insp, ProviderOf: cfg.LLM.ProviderIdentity,
		Models:   timetravel.Models{Snapshot: cfg.LLM.Model, Extraction: cfg.LLM.ExtractionModel, Narrative: cfg.LLM.NarrativeModel},
		Deadline: cfg.JobDeadline, Log: log,
	}
	if cfg.Cache.Caching {
		o.Cache = cache.New(rdb, cache.TTLs{Past: cfg.Cache.PastTTL, Today: cfg.Cache.TodayTTL})
	}
	if cfg.Cache.Dedup {
		o.Inflight = cache.NewInflight(rdb)
	}
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
	// CachedSnapshots counts the snapshots answered from the cache.
	CachedSnapshots int
}

// createGrace is how long a fingerprint's holder may be missing from the
// store before it counts as dead: its creator claims the fingerprint just
// before it stores the job.
const createGrace = 10 * time.Second

// Submit serves spec. Cache trouble never fails a request (the job runs
// without the cache); an error means no job answers the request.
func (in *Intake) Submit(ctx context.Context, spec job.Spec) (Outcome, error) {
	now := in.now().Truncate(time.Millisecond) // as stored: every reader sees the same instant
	id, err := uuid.NewV7()
	if err != nil {
		return Outcome{}, fmt.Errorf("make a job id: %w", err)
	}
	j := &job.Job{
		ID: id.String(), Spec: spec, Status: job.StatusQueued,
		CreatedAt: now, Deadline: now.Add(in.o.Deadline),
	}
	log := in.o.Log.With("job_id", j.ID)
	model := in.o.Models.SnapshotModel(spec)

	hits := make([]*cache.Snapshot, len(spec.TimePoints))
	var agg *cache.Aggregate
	if in.o.Cache != nil && spec.ReadsCache() {
		hits, agg = in.lookup(ctx, j, model, log)
	}
	n := 0
	for _, h := range hits {
		if h != nil {
			n++
		}
	}
	total := len(spec.TimePoints)
	if in.o.Cache != nil && spec.ReadsCache() && !spec.Warm {
		// Warming's lookups would blur the hit rate of people's requests.
		result := metrics.CacheMiss
		switch {
		case agg != nil:
			result = metrics.CacheHit
		case n > 0:
			result = metrics.CachePartial
		}
		metrics.CacheLookups.WithLabelValues(metrics.CacheScopeJob, result).Inc()
	}
	if agg != nil {
		if spec.Warm {
			return Outcome{Job: j, Cached: true, CachedSnapshots: n}, nil // nothing to warm
		}
		if err := in.admit(ctx, j, false); err != nil {
			return Outcome{}, err
		}
		return in.serveCached(ctx, j, hits, agg)
	}
	if err := in.admit(ctx, j, true); err != nil {
		return Outcome{}, err
	}

	// A request with a callback URL never joins another job, nor is it
	// joined: the one webhook of a shared job would name another caller's
	// job.
	if in.o.Inflight != nil && spec.CallbackURL == "" {
		fp := cache.Fingerprint(spec, model, in.o.ProviderOf.Of(model))
		holder, err := in.claim(ctx, fp, j, log)
		if err != nil {
			return Outcome{}, err
		}
		if holder != nil {
			h := &job.Job{ID: j.ID, Spec: spec, Status: holder.Status, CreatedAt: now, Deadline: holder.Deadline}
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

	fillSnapshots(j, hits, now)
	if err := in.accept(ctx, j, n == total); err != nil {
		if j.Fingerprint != "" {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = in.o.Inflight.Release(rctx, j.Fingerprint, j.ID)
			cancel()
		}
		return Outcome{}, err
	}
	metrics.CacheCallsSaved.WithLabelValues(metrics.StageSnapshot).Add(float64(n))
	log.Debug("job accepted", "cached_snapshots", n, "of", total)
	return Outcome{Job: j, CachedSnapshots: n}, nil
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
	spec.Cache, spec.ForceTimeTravel, spec.CallbackURL, spec.Owner = job.CacheUse, false, "", job.SystemOwner
	return in.Submit(ctx, spec)
}

// lookup reads the cached snapshots of j's time points and, when all are
// there, the cached result made from them.
func (in *Intake) lookup(ctx context.Context, j *job.Job, model string, log *slog.Logger) ([]*cache.Snapshot, *cache.Aggregate) {
	spec := j.Spec
	ids := make([]cache.SnapshotID, len(spec.TimePoints))
	provider := in.o.ProviderOf.Of(model)
	for i, tp := range spec.TimePoints {
		ids[i] = cache.SnapshotID{Question: spec.Question, Model: model, Provider: provider, Date: tp.Date, Label: tp.Label, Complexity: spec.Complexity}
	}
	hits, err := in.o.Cache.Snapshots(ctx, ids)
	if err != nil {
		log.Warn("snapshot cache unreadable; the job runs without it", "err", err)
		return make([]*cache.Snapshot, len(ids)), nil
	}
	snaps := make([]job.Snapshot, 0, len(hits))
	for i, h := range hits {
		if h == nil {
			return hits, nil
		}
		tp := spec.TimePoints[i]
		snaps = append(snaps, job.Snapshot{Index: i, Date: tp.Date, Label: tp.Label, Text: h.Text})
	}
	agg, err := in.o.Cache.Aggregate(ctx, AggregateID(in.o.Models, in.o.ProviderOf, spec, snaps))
	if err != nil {
		log.Warn("result cache unreadable; the job runs without it", "err", err)
		return hits, nil
	}
	return hits, agg
}

// AggregateID is the result-cache identity of the aggregation of spec made
// from snaps (completed, in chronological order) with the models of m, at
// the providers that providerOf names.
func AggregateID(m timetravel.Models, providerOf ProviderOf, spec job.Spec, snaps []job.Snapshot) cache.AggregateID {
	extraction, narrative := m.Extraction, m.NarrativeModel(spec)
	return cache.AggregateID{
		Question: spec.Question, Complexity: spec.Complexity,
		ExtractionModel: extraction, ExtractionProvider: providerOf.Of(extraction),
		NarrativeModel: narrative, NarrativeProvider: providerOf.Of(narrative),
		Snapshots: snaps,
	}
}

// fillSnapshots gives j its snapshots, the cached ones completed.
func fillSnapshots(j *job.Job, hits []*cache.Snapshot, now time.Time) {
	j.Snapshots = make([]job.Snapshot, len(j.Spec.TimePoints))
	for i, tp := range j.Spec.TimePoints {
		s := job.Snapshot{Index: i, Date: tp.Date, Label: tp.Label, Status: job.SnapshotPending}
		if h := hits[i]; h != nil {
			s.Status, s.Text, s.Model, s.Cached = job.SnapshotCompleted, h.Text, h.Model, true
			s.StartedAt, s.CompletedAt = now.UnixMilli(), now.UnixMilli()
		}
		j.Snapshots[i] = s
	}
}

// serveCached stores j as ended, made wholly of cached answers, and queues
// its webhook.
func (in *Intake) serveCached(ctx context.Context, j *job.Job, hits []*cache.Snapshot, agg *cache.Aggregate) (Outcome, error) {
	now := j.CreatedAt
	fillSnapshots(j, hits, now)
	j.Status, j.FinishedAt = job.StatusCompleted, now
	j.Aggregate = &job.Aggregate{
		KeyChanges: agg.KeyChanges, Narrative: agg.Narrative, StartedAt: now.UnixMilli(),
		KeyChangesModel: agg.KeyChangesModel, NarrativeModel: agg.NarrativeModel, Cached: true,
	}
	if _, err := in.o.Store.Create(ctx, j); err != nil {
		return Outcome{}, err
	}
	n := len(j.Snapshots)
	metrics.CacheCallsSaved.WithLabelValues(metrics.StageSnapshot).Add(float64(n))
	if n >= 2 {
		metrics.CacheCallsSaved.WithLabelValues(metrics.StageKeyChanges).Inc()
	}
	metrics.CacheCallsSaved.WithLabelValues(metrics.StageNarrative).Inc()
	if j.Spec.CallbackURL != "" {
		if err := in.queueWebhook(ctx, j.ID); err != nil {
			// The job stays answered; the client can read it. Its
			// webhook is the one thing lost, so say so loudly.
			in.o.Log.Error("could not queue the webhook of a cached job", "job_id", j.ID, "err", err)
		}
	}
	in.o.Log.Debug("job served from cache", "job_id", j.ID, "snapshots", n)
	return Outcome{Job: j, Cached: true, CachedSnapshots: n}, nil
}

func (in *Intake) queueWebhook(ctx context.Context, jobID string) error {
	if err := in.o.Enqueuer.EnqueueWebhook(ctx, jobID, webhook.MaxRetries); err != nil {
		return err
	}
	return in.o.Store.WebhookQueued(ctx, jobID)
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

// accept stores the job and enqueues its tasks. The order is what keeps
// every job ending: the aggregation, scheduled at the deadline, goes first,
// so that a crash after any later step still ends the job at its deadline.
// A job whose snapshots all came from the cache has its aggregation
// started at once.
func (in *Intake) accept(ctx context.Context, j *job.Job, allCached bool) error {
	if err := in.o.Enqueuer.EnqueueAggregate(ctx, j); err != nil {
		return err
	}
	lane := tasks.LaneOf(j.Spec.Warm)
	// The job is written last, after every task it needs is queued: a
	// process that dies half-way leaves tasks without a job (they find
	// none and end), never a job without its tasks. A snapshot task that
	// runs before the job is written goes back to its queue until it is.
	undo := func() {
		_ = tasks.Withdraw(in.o.Inspector, lane, j.ID, indexes(len(j.Spec.TimePoints)), true)
	}
	if !allCached {
		if err := in.o.Enqueuer.EnqueueSnapshots(ctx, j); err != nil {
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
			in.o.Log.Warn("could not start the aggregation of a job with all snapshots cached; it runs at the deadline", "job_id", j.ID, "err", err)
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

// SetAdmit sets the Admit hook (see Options.Admit); call it before the
// Intake serves requests.
func (in *Intake) SetAdmit(f func(ctx context.Context, j *job.Job, runs bool) error) { in.o.Admit = f }
