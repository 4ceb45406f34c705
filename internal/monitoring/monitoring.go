// Package monitoring keeps the stage durations of recently finished jobs in
// Redis, so that every api replica computes the same statistics, breakdown
// and alerts from them.
//
// Each finished job is one JSON entry at the head of a capped list
// (MaxJobs), written by the process that ended the job in one pipelined
// round trip (LPUSH, LTRIM, EXPIRE). Readers take the list and keep the
// entries of their window.
package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/metrics"
)

// Key is the Redis list of recent jobs' timings.
const Key = "tt:monitoring:jobs"

// MaxJobs bounds the list; older entries are dropped.
const MaxJobs = 1000

// keyTTL drops the list when no job ended for this long.
const keyTTL = 24 * time.Hour

// Sample is one finished job's stage durations in milliseconds. Stages
// holds the stages it went through, by name (job.Timings.Stages:
// queue_wait, <noun>s, fan_in, each part of its aggregation, total);
// Members holds each finished member's own duration, the stage named Noun
// (MemberStage).
type Sample struct {
	JobID  string           `json:"job_id"`
	Status string           `json:"status"`
	At     int64            `json:"at_ms"`
	Stages map[string]int64 `json:"stages"`
	// Noun is what the job's kind calls its members ("snapshot"); empty
	// in samples recorded before kinds existed, which were time travel's.
	Noun    string  `json:"noun,omitempty"`
	Members []int64 `json:"members,omitempty"`
}

type sampleJSON Sample

// UnmarshalJSON reads a sample, also as recorded before kinds existed
// (the snapshots' durations under "snapshots").
func (s *Sample) UnmarshalJSON(b []byte) error {
	var v struct {
		sampleJSON
		Snapshots []int64 `json:"snapshots"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Sample(v.sampleJSON)
	if s.Members == nil && v.Snapshots != nil {
		s.Members = v.Snapshots
	}
	return nil
}

// MemberStage is the stage of each member's own duration: the kind's noun
// (metrics.StageSnapshot for time travel and for samples without a noun).
func (s Sample) MemberStage() string {
	if s.Noun == "" {
		return metrics.StageSnapshot
	}
	return s.Noun
}

// membersStage is the stage of all the members, first start to last end.
func (s Sample) membersStage() string { return job.Noun(s.MemberStage()).Plural() }

// FromJob returns the sample of an ended job of any kind, from its
// timings. A job without a noun (stored before kinds existed) is time
// travel's.
func FromJob(j *job.Job) Sample {
	noun := j.Noun
	if noun == "" {
		noun = job.Noun(metrics.StageSnapshot)
	}
	t := j.Timings()
	s := Sample{JobID: j.ID, Status: string(j.Status), At: j.FinishedAt.UnixMilli(), Stages: t.Stages(noun), Noun: string(noun)}
	if j.FinishedAt.IsZero() {
		s.At = time.Now().UnixMilli()
	}
	for _, ms := range t.MemberMS {
		if ms > 0 {
			s.Members = append(s.Members, ms)
		}
	}
	return s
}

// Observe records s on the Prometheus metrics of package metrics.
func (s Sample) Observe() { metrics.ObserveJob(s.Status, s.Stages, s.MemberStage(), s.Members) }

// Store reads and writes the samples.
type Store struct {
	rdb redis.UniversalClient
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb} }

// Record adds s, in one pipelined round trip, keeping the MaxJobs newest.
func (st *Store) Record(ctx context.Context, s Sample) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = st.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, Key, b)
		p.LTrim(ctx, Key, 0, MaxJobs-1)
		p.Expire(ctx, Key, keyTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record job timings: %w", err)
	}
	return nil
}

// Recent returns the samples of jobs that ended within window before now,
// newest first.
func (st *Store) Recent(ctx context.Context, now time.Time, window time.Duration) ([]Sample, error) {
	raw, err := st.rdb.LRange(ctx, Key, 0, MaxJobs-1).Result()
	if err != nil {
		return nil, fmt.Errorf("read job timings: %w", err)
	}
	since := now.Add(-window).UnixMilli()
	out := make([]Sample, 0, len(raw))
	for _, r := range raw {
		var s Sample
		if json.Unmarshal([]byte(r), &s) != nil || s.At < since {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// Stats summarizes each stage over samples, each member's own duration
// under its sample's MemberStage; stages without samples are left out.
func Stats(samples []Sample) map[string]Summary {
	values := map[string][]float64{}
	for _, s := range samples {
		for stage, ms := range s.Stages {
			values[stage] = append(values[stage], float64(ms))
		}
		for _, ms := range s.Members {
			values[s.MemberStage()] = append(values[s.MemberStage()], float64(ms))
		}
	}
	out := map[string]Summary{}
	for stage, v := range values {
		out[stage] = Summarize(v)
	}
	return out
}

// Share is one stage's part of the jobs' total time.
type Share struct {
	Stage  string  `json:"stage"`
	MeanMS float64 `json:"mean_ms"`
	// Percent is the stage's mean over the mean total, in percent. The
	// sequential stages (queue_wait, <noun>s, fan_in and the aggregation)
	// add up to about 100; the parts of the aggregation (time travel's
	// key_changes and narrative) run side by side, so the aggregation's
	// share is the largest of theirs.
	Percent float64 `json:"percent"`
}

// Breakdown is the per-stage share of the total for samples that have a
// total.
type Breakdown struct {
	Jobs        int     `json:"jobs"`
	MeanTotalMS float64 `json:"mean_total_ms"`
	Stages      []Share `json:"stages"`
}

// LatencyBreakdown computes the mean of each stage over the jobs that have
// a total, and its share of the mean total. The stages are those the jobs
// went through (a stage a job skipped counts as 0 for it), in the order of
// a job: queue_wait, the members (<noun>s, by name when kinds are mixed),
// fan_in, then the parts of the aggregation by name.
func LatencyBreakdown(samples []Sample) Breakdown {
	sums := map[string]float64{}
	members := map[string]bool{}
	exclude := map[string]bool{metrics.StageTotal: true}
	n := 0
	for _, s := range samples {
		if _, ok := s.Stages[metrics.StageTotal]; !ok {
			continue
		}
		n++
		members[s.membersStage()] = true
		exclude[s.MemberStage()] = true
		for stage, ms := range s.Stages {
			sums[stage] += float64(ms)
		}
	}
	b := Breakdown{Jobs: n, Stages: []Share{}}
	if n == 0 {
		return b
	}
	b.MeanTotalMS = sums[metrics.StageTotal] / float64(n)
	rank := func(stage string) int {
		switch {
		case stage == metrics.StageQueueWait:
			return 0
		case members[stage]:
			return 1
		case stage == metrics.StageFanIn:
			return 2
		}
		return 3
	}
	var stages []string
	for stage := range sums {
		if !exclude[stage] {
			stages = append(stages, stage)
		}
	}
	sort.Slice(stages, func(a, c int) bool {
		if ra, rc := rank(stages[a]), rank(stages[c]); ra != rc {
			return ra < rc
		}
		return stages[a] < stages[c]
	})
	for _, stage := range stages {
		mean := sums[stage] / float64(n)
		pct := 0.0
		if b.MeanTotalMS > 0 {
			pct = math.Round(mean/b.MeanTotalMS*1000) / 10
		}
		b.Stages = append(b.Stages, Share{Stage: stage, MeanMS: mean, Percent: pct})
	}
	return b
}

// Severity of an alert.
const (
	Warning  = "warning"
	Critical = "critical"
)

// Thresholds are the p95 limits of the alerts; zero turns one off.
type Thresholds struct {
	TotalP95Warning    time.Duration
	TotalP95Critical   time.Duration
	SnapshotP95Warning time.Duration
}

// Alert is a threshold crossed.
type Alert struct {
	Name        string  `json:"name"`
	Severity    string  `json:"severity"`
	Stage       string  `json:"stage"`
	ValueMS     float64 `json:"value_ms"`
	ThresholdMS float64 `json:"threshold_ms"`
	Samples     int     `json:"samples"`
	Message     string  `json:"message"`
}

// Alerts returns the thresholds that stats cross: the total's p95 (critical
// over warning: one alert) and the snapshot stage's p95.
func Alerts(stats map[string]Summary, th Thresholds, window time.Duration) []Alert {
	out := []Alert{}
	check := func(name, stage, severity string, limit time.Duration) bool {
		s, ok := stats[stage]
		if !ok || s.Count == 0 || limit <= 0 || s.P95 <= float64(limit.Milliseconds()) {
			return false
		}
		out = append(out, Alert{
			Name: name, Severity: severity, Stage: stage, ValueMS: s.P95,
			ThresholdMS: float64(limit.Milliseconds()), Samples: s.Count,
			Message: fmt.Sprintf("%s p95 over the last %s is %s, above %s", stage, window,
				time.Duration(s.P95*float64(time.Millisecond)).Round(time.Millisecond), limit),
		})
		return true
	}
	if !check("JobTotalP95Critical", metrics.StageTotal, Critical, th.TotalP95Critical) {
		check("JobTotalP95High", metrics.StageTotal, Warning, th.TotalP95Warning)
	}
	check("SnapshotP95High", metrics.StageSnapshot, Warning, th.SnapshotP95Warning)
	return out
}
