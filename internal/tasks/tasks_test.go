package tasks

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// After Redis lost its data, asynq's client no longer records queues in
// asynq:queues (once per process), and asynq's Inspector answers "queue not
// found" for them (hibiken/asynq#650): promoting an aggregation failed
// until the processes restarted. The Inspector here registers the queue
// again.
func TestPromoteAfterRedisLostItsQueues(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(db.Client)
	enq := NewEnqueuer(client, 1, time.Minute)
	now := time.Now()
	j := &job.Job{ID: "j1", CreatedAt: now, Deadline: now.Add(time.Hour)}
	if err := enq.EnqueueAggregate(ctx, j); err != nil {
		t.Fatal(err)
	}
	// Redis restarted empty, the client still thinks the queue known.
	if err := db.Client.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	j.ID = "j2"
	if err := enq.EnqueueAggregate(ctx, j); err != nil {
		t.Fatal(err)
	}
	plain := asynq.NewInspectorFromRedisClient(db.Client)
	if err := Promote(plain, UserLane, "j2"); !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatalf("asynq's own inspector: %v, want ErrQueueNotFound (else the upstream bug is fixed and this wrapper can go)", err)
	}
	if err := Promote(NewInspector(db.Client), UserLane, "j2"); err != nil {
		t.Fatalf("promote: %v", err)
	}
	info, err := plain.GetTaskInfo(QueueAggregate, AggregateTaskID("j2"))
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("aggregation task %+v, %v: want pending", info, err)
	}
	if err := Withdraw(NewInspector(db.Client), UserLane, "j2", []int{0}, true); err != nil {
		t.Fatalf("withdraw: %v", err)
	}
}

func TestAggregateAt(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		total, want time.Duration // job time; aggregation's offset from creation
	}{
		{4 * time.Second, 3 * time.Second},
		{2 * time.Minute, 90 * time.Second},
		{10 * time.Minute, 9*time.Minute + 30*time.Second}, // the reserve stops at 30 s
	}
	for _, tt := range tests {
		j := &job.Job{CreatedAt: now, Deadline: now.Add(tt.total)}
		if got := AggregateAt(j).Sub(now); got != tt.want {
			t.Errorf("job of %v: aggregation at +%v, want +%v", tt.total, got, tt.want)
		}
	}
}
