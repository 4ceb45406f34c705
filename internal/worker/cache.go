package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
)

// Caching is what the handlers use of package cache; every part is
// optional.
type Caching struct {
	// Cache serves snapshots and results computed by other jobs since this
	// one was accepted, and keeps what the handlers compute.
	Cache *cache.Cache
	// Inflight is released when a job ends, so that identical requests
	// start a job of their own from then on.
	Inflight *cache.Inflight
	// Intake creates the jobs of cache warming.
	Intake *intake.Intake
	// WarmQuestions are the questions the periodic warming task warms.
	WarmQuestions []string
	// ProviderOf names the provider that serves each model, for the cache
	// keys; it must name them as the intake's does (both from
	// config.LLM.ProviderIdentity), or the worker and the api read and
	// write different entries.
	ProviderOf intake.ProviderOf
}

// SetCaching turns on the caches' use. Call it before the servers start.
func (h *Handlers) SetCaching(c Caching) { h.caching = c }

// cachingFromConfig is the caching cfg turns on: the intake of warming
// jobs (queued with enq) and the caches it reads, the in-flight registry,
// and the warm questions.
func cachingFromConfig(cfg config.Config, rdb redis.UniversalClient, st *store.Store, enq *tasks.Enqueuer, insp tasks.Inspector, log *slog.Logger) Caching {
	in := intake.FromConfig(cfg, rdb, st, enq, insp, log)
	return Caching{
		Intake: in, Cache: in.Cache(), Inflight: cache.NewInflight(rdb), WarmQuestions: cfg.Cache.Questions(),
		ProviderOf: cfg.LLM.ProviderIdentity,
	}
}

// snapshotID is the cache identity of a snapshot task's answer by model,
// at the provider that serves it.
func (h *Handlers) snapshotID(p tasks.SnapshotPayload, model string) cache.SnapshotID {
	return cache.SnapshotID{
		Question: p.Question, Model: model, Provider: h.caching.ProviderOf.Of(model),
		Date: p.Date, Label: p.Label, Complexity: job.Complexity(p.Complexity),
	}
}

// cachedSnapshot returns the cached answer of the snapshot, when the job
// reads the cache and one is there; cache trouble reads as a miss.
func (h *Handlers) cachedSnapshot(ctx context.Context, p tasks.SnapshotPayload, model string, log *slog.Logger) *cache.Snapshot {
	c := h.caching.Cache
	if c == nil || p.NoCacheRead {
		return nil
	}
	hits, err := c.Snapshots(ctx, []cache.SnapshotID{h.snapshotID(p, model)})
	if err != nil {
		log.Warn("snapshot cache unreadable; calling the model", "err", err)
		return nil
	}
	result := metrics.CacheMiss
	if hits[0] != nil {
		result = metrics.CacheHit
	}
	metrics.CacheLookups.WithLabelValues(metrics.CacheScopeSnapshot, result).Inc()
	return hits[0]
}

// serveCachedSnapshot records the cached answer as the snapshot's outcome,
// with the events a model call would have made, and starts the aggregation
// when it was the last snapshot.
func (h *Handlers) serveCachedSnapshot(ctx context.Context, p tasks.SnapshotPayload, hit *cache.Snapshot, log *slog.Logger) error {
	owner := uuid.NewString()
	_, fan, err := h.store.StartSnapshot(ctx, p.JobID, p.Index, owner, hit.Model)
	switch {
	case notWrittenYet(err, p):
		return fmt.Errorf("snapshot %d of job %s: %w", p.Index, p.JobID, errJobNotWritten)
	case errors.Is(err, store.ErrSnapshotDone):
		if fan.Last() {
			return h.promote(p)
		}
		return nil
	case stopQuietly(err):
		return nil
	case err != nil:
		return err
	}
	if err := h.store.AppendSnapshotText(ctx, p.JobID, p.Index, owner, 1, hit.Text); err != nil {
		if stopQuietly(err) {
			return nil
		}
		return err
	}
	fan, err = h.store.FinishSnapshot(ctx, p.JobID, p.Index, owner, store.SnapshotOutcome{Text: hit.Text, Model: hit.Model, Cached: true})
	switch {
	case errors.Is(err, store.ErrSnapshotDone):
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
	metrics.CacheCallsSaved.WithLabelValues(metrics.StageSnapshot).Inc()
	log.Info("snapshot served from cache", "done", fan.Done, "of", fan.Total)
	if fan.Last() {
		return h.promote(p)
	}
	return nil
}

// keepSnapshot caches a snapshot's answer by the model that gave it.
// Failures are only logged: the job has its answer.
func (h *Handlers) keepSnapshot(ctx context.Context, p tasks.SnapshotPayload, model, text string, log *slog.Logger) {
	c := h.caching.Cache
	if c == nil || text == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := c.PutSnapshot(ctx, h.snapshotID(p, model), cache.Snapshot{Text: text, Model: model}); err != nil {
		log.Warn("could not cache the snapshot", "err", err)
	}
}

// aggregateID is the result-cache identity of j's aggregation from done.
func (h *Handlers) aggregateID(j *job.Job, done []job.Snapshot) cache.AggregateID {
	return intake.AggregateID(h.models, h.caching.ProviderOf, j.Spec, done)
}

// cachedAggregate returns the cached result made from done, when the job
// reads the cache, every snapshot completed, and one is there.
func (h *Handlers) cachedAggregate(ctx context.Context, j *job.Job, done []job.Snapshot, log *slog.Logger) *cache.Aggregate {
	c := h.caching.Cache
	if c == nil || !j.Spec.ReadsCache() || len(done) != len(j.Snapshots) {
		return nil
	}
	a, err := c.Aggregate(ctx, h.aggregateID(j, done))
	if err != nil {
		log.Warn("result cache unreadable; calling the models", "err", err)
		return nil
	}
	result := metrics.CacheMiss
	if a != nil {
		result = metrics.CacheHit
	}
	metrics.CacheLookups.WithLabelValues(metrics.CacheScopeAggregate, result).Inc()
	return a
}

// serveCachedAggregate emits the cached result's events as the
// aggregation's and fills agg.
func (h *Handlers) serveCachedAggregate(ctx context.Context, j *job.Job, owner string, done []job.Snapshot, hit *cache.Aggregate, agg *job.Aggregate) error {
	agg.KeyChanges, agg.Narrative, agg.Cached = hit.KeyChanges, hit.Narrative, true
	agg.KeyChangesModel, agg.NarrativeModel = hit.KeyChangesModel, hit.NarrativeModel
	if err := h.emitKeyChanges(ctx, j.ID, owner, agg, nil); err != nil {
		return err
	}
	if err := h.store.AppendNarrativeText(ctx, j.ID, owner, 1, agg.Narrative); err != nil {
		return err
	}
	rec, _ := json.Marshal(narrativeRecord{Text: agg.Narrative, Model: agg.NarrativeModel})
	if err := h.store.EmitAggregatePart(ctx, j.ID, owner, partNarrative, events.NarrativeCompleted, events.NarrativeData{Text: agg.Narrative, Cached: true}, rec); err != nil {
		return err
	}
	if len(done) >= 2 {
		metrics.CacheCallsSaved.WithLabelValues(metrics.StageKeyChanges).Inc()
	}
	metrics.CacheCallsSaved.WithLabelValues(metrics.StageNarrative).Inc()
	return nil
}

// keepAggregate caches a complete result (both parts succeeded). Failures
// are only logged.
func (h *Handlers) keepAggregate(ctx context.Context, j *job.Job, done []job.Snapshot, agg *job.Aggregate, log *slog.Logger) {
	c := h.caching.Cache
	if c == nil || agg.Cached || agg.KeyChangesError != "" || agg.NarrativeError != "" || agg.Narrative == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := c.PutAggregate(ctx, h.aggregateID(j, done), cache.Aggregate{
		KeyChanges: agg.KeyChanges, Narrative: agg.Narrative,
		KeyChangesModel: agg.KeyChangesModel, NarrativeModel: agg.NarrativeModel,
	})
	if err != nil {
		log.Warn("could not cache the result", "err", err)
	}
}

// releaseInflight frees the ended job's in-flight entry.
func (h *Handlers) releaseInflight(ctx context.Context, j *job.Job) {
	if h.caching.Inflight == nil || j == nil || j.Fingerprint == "" {
		return
	}
	if err := h.caching.Inflight.Release(ctx, j.Fingerprint, j.ID); err != nil {
		h.log.Warn("release the job's in-flight entry", "job_id", j.ID, "err", err)
	}
}
