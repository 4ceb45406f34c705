package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// HandleWarm warms the cache for the configured questions: each becomes a
// time-travel warming job (default time points, model and complexity, as a
// request that names only the question gets) that computes
// only what the caches lack, on the warm queue and within warming's share
// of provider capacity. A question wholly cached, or being warmed already,
// costs nothing. It fails, to be tried again, only when a job could not be
// queued.
func (h *Handlers) HandleWarm(ctx context.Context, _ *asynq.Task) error {
	if h.caching.Intake == nil {
		return nil
	}
	var errs []error
	started := 0
	for _, q := range h.caching.WarmQuestions {
		// The time-travel request of the question alone: its defaults
		// resolved as of now.
		spec, ferr := timetravel.Submission{Question: &q}.Validate(time.Now())
		if ferr != nil {
			// Checked at start-up; a question cannot turn bad later.
			h.log.Error("warm question refused", "question", q, "err", ferr)
			continue
		}
		out, err := h.caching.Intake.Warm(ctx, spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("warm %q: %w", q, err))
			continue
		}
		if !out.Cached && !out.Joined {
			started++
		}
	}
	h.log.Info("cache warming queued", "questions", len(h.caching.WarmQuestions), "jobs", started)
	return errors.Join(errs...)
}

// background runs next as background work: its LLM calls use only
// warming's share of provider capacity (llm.WithBackground).
func background(next asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		return next(llm.WithBackground(ctx), t)
	}
}

// StartWarming registers the periodic warming task on asynq's Scheduler
// and starts it; nil when there are no questions to warm. Every worker runs
// one: a tick that enqueues a second warming task in the same period is
// refused as a duplicate, and a second warming run would only find the
// answers cached or being warmed. The caller shuts it down.
func StartWarming(rdb redis.UniversalClient, schedule string, questions []string, log *slog.Logger) (*asynq.Scheduler, error) {
	if len(questions) == 0 {
		return nil, nil
	}
	s := asynq.NewSchedulerFromRedisClient(rdb, &asynq.SchedulerOpts{
		Logger: asynqLogger{log}, LogLevel: asynq.WarnLevel,
		PostEnqueueFunc: func(info *asynq.TaskInfo, err error) {
			if err != nil && !errors.Is(err, asynq.ErrDuplicateTask) {
				log.Warn("could not enqueue cache warming", "err", err)
			}
		},
	})
	_, err := s.Register(schedule, asynq.NewTask(tasks.TypeWarm, nil),
		asynq.Queue(tasks.QueueWarm), asynq.Unique(time.Minute), asynq.MaxRetry(3), asynq.Timeout(5*time.Minute))
	if err != nil {
		return nil, fmt.Errorf("CACHE_WARM_SCHEDULE: %w", err)
	}
	if err := s.Start(); err != nil {
		return nil, fmt.Errorf("start the warming scheduler: %w", err)
	}
	return s, nil
}
