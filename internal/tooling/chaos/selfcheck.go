package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// selfCheck proves, on a small service of its own, that the suite sees
// what it counts, through the same path as the scenarios: duplicates
// written into a finished job's stream after its job.completed (read back
// over SSE, past the terminal event), and a job that no worker runs, stuck
// past its deadline. A harness that cannot see a fault reports PASS for
// the wrong reason; this makes it an error instead.
func selfCheck(ctx context.Context, cfg Config, dir string) error {
	log := &progress{w: cfg.Log, name: "self-check", start: time.Now()}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err := startCluster(sctx, clusterConfig{Workers: 1, Deadline: 5 * time.Second,
		SnapshotLatency: 300 * time.Millisecond, NarrativeLatency: 300 * time.Millisecond,
		// The stuck job's tasks stay open for good: no wait for them.
		Settle: time.Second}, cfg.BinDir, dir, log)
	cancel()
	if err != nil {
		return fmt.Errorf("self-check: start: %w", err)
	}
	defer c.stop()

	a, err := c.submit(ctx, 0)
	if err != nil {
		return fmt.Errorf("self-check: submit: %w", err)
	}
	if _, _, err := c.waitEnd(ctx, a, time.Minute); err != nil {
		return fmt.Errorf("self-check: %w", err)
	}
	// Three duplicates: key changes, snapshot 0's end, the job's end. The
	// job's end comes last: a client resuming an ended job's stream gets
	// only what leads to a terminal event (else 204), so anything after
	// the last job.completed is out of every reader's sight.
	dups := []struct {
		name string
		data any
	}{
		{timetravel.EventKeyChangesCompleted, map[string]any{timetravel.PartKeyChanges: []any{}}},
		{timetravel.EventSnapshotCompleted, map[string]any{"index": 0, "text": "again"}},
		{events.JobCompleted, map[string]any{"job_id": a.ID, "status": "completed"}},
	}
	if err := c.inject(ctx, a.ID, func(add func(name string, data any) error) error {
		for _, d := range dups {
			if err := add(d.name, d.data); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("self-check: %w", err)
	}

	// No worker: the next job can only be stuck.
	for _, w := range c.liveWorkers() {
		w.proc.Kill()
	}
	if _, err := c.submit(ctx, 1); err != nil {
		return fmt.Errorf("self-check: submit: %w", err)
	}
	c.markFault(time.Now())
	c.collect(ctx)
	row := &Row{Ended: map[string]int{}}
	fill(ctx, c, row)
	if row.Duplicates != len(dups) || row.DuplicateKinds[DupKeyChanges] != 1 || row.DuplicateKinds[DupJobEnd] != 1 ||
		row.DuplicateKinds[DupSnapshotEnd] != 1 {
		return fmt.Errorf("self-check: the harness counted duplicates %v of the %d injected", row.DuplicateKinds, len(dups))
	}
	if row.Stuck != 1 {
		return fmt.Errorf("self-check: the harness counted %d stuck jobs, want the 1 no worker ran", row.Stuck)
	}
	log.printf("the harness sees the %d duplicates injected and the 1 stuck job", len(dups))
	return nil
}

// inject appends events to a job's stream in Redis, bypassing the
// service, with the field names the stream's own entries use (read from
// its first entry, so that the check does not hard-code the layout).
func (c *cluster) inject(ctx context.Context, jobID string, fn func(add func(name string, data any) error) error) error {
	key := events.StreamKey(jobID)
	first, err := c.rdb.XRangeN(ctx, key, "-", "+", 1).Result()
	if err != nil || len(first) == 0 {
		return fmt.Errorf("read the stream of %s: %v (%d entries)", jobID, err, len(first))
	}
	var typeField, dataField string
	for k, v := range first[0].Values {
		if v == events.JobAccepted {
			typeField = k
		} else {
			dataField = k
		}
	}
	if typeField == "" || dataField == "" || len(first[0].Values) != 2 {
		return fmt.Errorf("the first entry of %s is not a job.accepted with a type and a data field: %v", key, first[0].Values)
	}
	return fn(func(name string, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		return c.rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{typeField, name, dataField, string(b)}}).Err()
	})
}
