package deploy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/redisx"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// queueWebhook is the webhook queue's name.
const queueWebhook = tasks.QueueWebhook

// TestScaledObjectListsAreAsynqKeys checks that the Redis lists the KEDA
// triggers read are the ones asynq uses: it enqueues a different number of
// tasks on each queue in a real Redis and reads LLEN on exactly the listName
// strings of the rendered ScaledObject, first with the tasks pending, then
// with them running. The Redis is of the overlay's topology: one server, or
// for the Sentinel and Cluster overlays a real Sentinel group or Cluster,
// reached with the service's own client (redisx.NewClient) from the
// overlay's configuration with the test servers' addresses, so that the
// lists are read where asynq writes them on that topology (on a cluster,
// the node that serves the key's slot).
func TestScaledObjectListsAreAsynqKeys(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			m := render(t, dir)
			so := mustNamed[ScaledObject](t, m, "worker")
			var rdb redis.UniversalClient
			switch r := loadConfig(t, m).Redis; r.Topology() {
			case config.RedisSentinel:
				g := redistest.Sentinel(t, redisproc.SentinelOptions{MasterName: r.SentinelMaster, Password: "deploy-test", SentinelPassword: "deploy-test"})
				r.SentinelAddrs, r.ServerPassword, r.SentinelPassword = g.SentinelAddrs, g.Password, g.SentinelPassword
				rdb = topologyClient(t, r)
			case config.RedisCluster:
				c := redistest.Cluster(t, redisproc.ClusterOptions{Password: "deploy-test"})
				r.ClusterAddrs, r.ServerPassword = c.Addrs, c.Password
				rdb = topologyClient(t, r)
			default:
				rdb = redistest.New(t).Client
			}
			testListsAreAsynqKeys(t, so, rdb)
		})
	}
}

// topologyClient is the service's client for r, closed at the end of the
// test.
func topologyClient(t *testing.T, r config.Redis) redis.UniversalClient {
	t.Helper()
	rdb, err := redisx.NewClient(r, "deploy-test", 32, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func testListsAreAsynqKeys(t *testing.T, so *ScaledObject, rdb redis.UniversalClient) {
	type list struct{ trigger, queue, state, key string }
	var lists []list
	for _, tr := range so.Spec.Triggers {
		// Trigger names are <queue>_<state> (TestScaledObject).
		queue, state, ok := strings.Cut(tr.Name, "_")
		if !ok {
			t.Fatalf("trigger name %q is not <queue>_<state>", tr.Name)
		}
		lists = append(lists, list{tr.Name, queue, state, tr.Metadata["listName"]})
	}
	// Different counts, so that a list of the wrong queue shows.
	tasksOn := map[string]int{tasks.QueueSnapshot: 5, tasks.QueueAggregate: 3, queueWebhook: 2}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := asynq.NewClientFromRedisClient(rdb)
	for queue, n := range tasksOn {
		for i := range n {
			task := asynq.NewTask("deploy:test", []byte(fmt.Sprintf(`{"n":%d}`, i)))
			if _, err := client.EnqueueContext(ctx, task, asynq.Queue(queue)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// check reads every trigger's list and compares it with the tasks in
	// that state.
	check := func(inState string) error {
		var errs []string
		for _, l := range lists {
			want := 0
			if l.state == inState {
				want = tasksOn[l.queue]
			}
			got, err := rdb.LLen(ctx, l.key).Result()
			if err != nil {
				return err
			}
			if int(got) != want {
				errs = append(errs, fmt.Sprintf("trigger %s: LLEN %s = %d, want %d while the %d tasks of queue %s are %s",
					l.trigger, l.key, got, want, tasksOn[l.queue], l.queue, inState))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%s", strings.Join(errs, "; "))
		}
		return nil
	}
	if err := check("pending"); err != nil {
		t.Fatalf("tasks pending: %v", err)
	}

	// Run them: a server whose handler holds every task until released, so
	// that all are active at once.
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       16,
		Queues:            map[string]int{tasks.QueueSnapshot: 1, tasks.QueueAggregate: 1, queueWebhook: 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   5 * time.Second,
		LogLevel:          asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
		srv.Shutdown()
	}()

	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = check("active"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("tasks running: %v", err)
	}
	close(release)
	released = true
}
