package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/timetravel-ai/timetravel/internal/job"
)

// Cache configures the answer caches, the deduplication of identical
// requests, idempotency keys and cache warming.
type Cache struct {
	// Enabled turns the snapshot and result caches on. Off, nothing is read
	// from them or written to them.
	Caching bool `env:"CACHE_ENABLED" envDefault:"true"`
	// PastTTL is how long a snapshot of a past date (and a result made only
	// of such snapshots) is kept: the past does not change.
	PastTTL time.Duration `env:"CACHE_PAST_TTL" envDefault:"720h"`
	// TodayTTL is how long a snapshot of today's date (and any result that
	// includes one) is kept.
	TodayTTL time.Duration `env:"CACHE_TODAY_TTL" envDefault:"1h"`
	// Dedup makes a request identical to a job in flight join that job.
	Dedup bool `env:"DEDUP_ENABLED" envDefault:"true"`
	// IdempotencyTTL is how long an Idempotency-Key keeps its job.
	IdempotencyTTL time.Duration `env:"IDEMPOTENCY_TTL" envDefault:"24h"`

	// WarmQuestions are warmed on WarmSchedule, one per line, each with the
	// default time points, model and complexity. Empty: no periodic warming.
	WarmQuestions []string `env:"CACHE_WARM_QUESTIONS" envSeparator:"\n"`
	// WarmSchedule is a cron spec ("0 * * * *") or "@every <duration>".
	WarmSchedule string `env:"CACHE_WARM_SCHEDULE" envDefault:"@every 1h"`
	// WarmShare is the share of each provider's in-flight cap that warming
	// may use, across the cluster (at least one request).
	WarmShare float64 `env:"CACHE_WARM_SHARE" envDefault:"0.25"`
	// WarmConcurrency caps the warming tasks one worker process runs at once.
	WarmConcurrency int `env:"CACHE_WARM_CONCURRENCY" envDefault:"2"`
}

// SnapshotTaskTimeout bounds one run of a snapshot task: the longest model
// call (LLM_TIMEOUT) plus time to record its outcome.
func (c Config) SnapshotTaskTimeout() time.Duration { return c.LLM.Timeout + 30*time.Second }

// MaxWarmQuestions bounds the questions warmed at once, from configuration
// or from one POST /api/cache/warm.
const MaxWarmQuestions = 100

// Questions returns the warm questions without blank lines and with
// surrounding white space trimmed.
func (c Cache) Questions() []string {
	var out []string
	for _, q := range c.WarmQuestions {
		if q = strings.TrimSpace(q); q != "" {
			out = append(out, q)
		}
	}
	return out
}

func (c Cache) validate() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	if c.PastTTL < time.Minute {
		bad("CACHE_PAST_TTL", "must be at least 1m, got %s", c.PastTTL)
	}
	if c.TodayTTL < time.Second {
		bad("CACHE_TODAY_TTL", "must be at least 1s, got %s", c.TodayTTL)
	}
	if c.PastTTL >= time.Minute && c.TodayTTL > c.PastTTL {
		bad("CACHE_TODAY_TTL", "must not be longer than the past dates' TTL (%s), got %s", c.PastTTL, c.TodayTTL)
	}
	if c.IdempotencyTTL < time.Minute {
		bad("IDEMPOTENCY_TTL", "must be at least 1m, got %s", c.IdempotencyTTL)
	}
	if _, err := cron.ParseStandard(c.WarmSchedule); err != nil {
		bad("CACHE_WARM_SCHEDULE", "%q is not a cron spec or @every <duration>: %v", c.WarmSchedule, err)
	}
	if c.WarmShare <= 0 || c.WarmShare > 1 {
		bad("CACHE_WARM_SHARE", "must be more than 0 and at most 1, got %g", c.WarmShare)
	}
	if c.WarmConcurrency < 1 {
		bad("CACHE_WARM_CONCURRENCY", "must be at least 1, got %d", c.WarmConcurrency)
	}
	qs := c.Questions()
	if len(qs) > MaxWarmQuestions {
		bad("CACHE_WARM_QUESTIONS", "at most %d questions, got %d", MaxWarmQuestions, len(qs))
	}
	for i, q := range qs {
		if _, ferr := job.ValidQuestion(&q); ferr != nil {
			bad("CACHE_WARM_QUESTIONS", "question %d: %s", i+1, ferr.Message)
		}
	}
	return errs
}
