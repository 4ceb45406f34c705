package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redisproc"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// failoverJobs is the number of jobs running when the master dies.
const failoverJobs = 100

// failoverFollowers is how many of them a client follows live over SSE
// through the failover, resuming with Last-Event-ID.
const failoverFollowers = 10

// The master of a Sentinel group, and the master of a cluster that holds
// the snapshot queue, are killed with SIGKILL while 100 jobs run: the api
// and the workers find the promoted replica by themselves, every accepted
// job ends completed, the SSE clients that followed jobs through the
// failover resume with Last-Event-ID and see exactly the stored stream, no
// circuit breaker opens (a Redis outage is not a provider failure), and a
// job submitted after the kill completes. How soon it does (the issue's
// 15 s) is measured by `make chaos` (sentinel-failover, cluster-failover),
// not here.
func TestFailover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// start starts the topology and returns its configuration and
		// the function that kills its master (the one that holds the
		// snapshot queue) and waits for the failover.
		start func(t *testing.T) (*config.Redis, func(ctx context.Context, rdb redis.UniversalClient) error)
	}{
		{"sentinel", func(t *testing.T) (*config.Redis, func(context.Context, redis.UniversalClient) error) {
			g := redistest.Sentinel(t)
			return stack.SentinelTopology(g), func(ctx context.Context, _ redis.UniversalClient) error {
				g.Master().Kill()
				_, err := g.WaitFailover(ctx)
				return err
			}
		}},
		{"cluster", func(t *testing.T) (*config.Redis, func(context.Context, redis.UniversalClient) error) {
			c := redistest.Cluster(t)
			return stack.ClusterTopology(c), func(ctx context.Context, rdb redis.UniversalClient) error {
				victim, err := queueMaster(ctx, c, rdb)
				if err != nil {
					return err
				}
				victim.Kill()
				_, err = c.WaitFailover(ctx, victim.Addr)
				return err
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topo, kill := tt.start(t)
			env := map[string]string{"JOB_DEADLINE": "90s"}
			// 16 snapshot slots per worker: the 300 snapshot calls of the
			// burst queue up behind 32, so that the kill finds a backlog
			// and every slot busy however fast the jobs are submitted.
			wenv := map[string]string{"JOB_DEADLINE": "90s", "SNAPSHOT_CONCURRENCY": "16"}
			e := startStack(t, 2, env, wenv, func(o *stack.Options) { o.Topology = topo })
			runFailover(t, e, kill)
		})
	}
}

// queueMaster returns the master of c that serves asynq's snapshot queue:
// the one whose loss every member call feels.
func queueMaster(ctx context.Context, c *redisproc.Cluster, rdb redis.UniversalClient) (*redisproc.Server, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil, fmt.Errorf("client %T is not a cluster client", rdb)
	}
	m, err := cc.MasterForKey(ctx, "asynq:{snapshot}:pending")
	if err != nil {
		return nil, err
	}
	for _, s := range c.Masters() {
		if s.Addr == m.Options().Addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("the snapshot queue's master %s is not a master the cluster started", m.Options().Addr)
}

// follower follows one job over SSE to its end, reconnecting with
// Last-Event-ID whenever the stream breaks. Not client.Follow: it drops
// events whose id it has seen, and this test counts every event delivered.
type follower struct {
	id         string
	events     []client.Event
	reconnects int
	err        error
}

func (f *follower) run(ctx context.Context, api *client.Client) {
	last := ""
	for {
		var err error
		last, err = api.Events(ctx, f.id, last, func(ev client.Event) error {
			f.events = append(f.events, ev)
			return nil
		})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			f.err = fmt.Errorf("events of %s: %w (last error %v)", f.id, ctx.Err(), err)
			return
		}
		f.reconnects++
		// The api answers 503 while its Redis is away: pace the
		// attempts, and stop with the context.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func runFailover(t *testing.T, e env, kill func(context.Context, redis.UniversalClient) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tps := []client.TimePoint{{Date: "2019-03-01"}, {Date: "2021-09-15"}, client.Today}
	jobs := make([]string, 0, failoverJobs)
	for i := range failoverJobs {
		acc, err := e.api.Submit(ctx, client.SubmitRequest{Question: fmt.Sprintf("What changed about failover question %d?", i), TimePoints: tps})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		jobs = append(jobs, acc.JobID)
	}
	var wg sync.WaitGroup
	followers := make([]*follower, failoverFollowers)
	for i := range followers {
		f := &follower{id: jobs[len(jobs)-1-i]} // the latest jobs: still running after the kill
		followers[i] = f
		wg.Go(func() { f.run(ctx, e.api) })
	}
	// Kill once the workers are busy with the burst.
	sim := llmsim.Control{BaseURL: e.stack.SimURL}
	waitUntil(t, time.Minute, func() bool {
		st, err := sim.Stats(ctx)
		return err == nil && st.Models[modelSnapshot].InFlight >= 24
	})
	if err := kill(ctx, e.rdb); err != nil {
		t.Fatalf("failover: %v", err)
	}

	// A job submitted after the failover completes. The api may answer
	// 503 until it has found the new master.
	var after string
	waitUntil(t, time.Minute, func() bool {
		acc, err := e.api.Submit(ctx, client.SubmitRequest{Question: "Is the new master serving?", TimePoints: tps})
		if err != nil {
			return false
		}
		after = acc.JobID
		return true
	})
	if s := terminalStatus(t, collect(t, e, after)); s != "completed" {
		t.Errorf("job submitted after the failover ended %s, want completed", s)
	}

	// Every accepted job ends, completed. (Within its deadline at the
	// latest, which a job lost to the failover would reach.)
	ended := map[string]int{}
	for _, id := range jobs {
		evs, err := endOf(ctx, e, id)
		if err != nil {
			t.Errorf("job %s: %v", id, err)
			continue
		}
		status := terminalStatus(t, evs)
		ended[status]++
		if status != "completed" {
			var seen []string
			for _, ev := range evs {
				seen = append(seen, ev.ID+" "+ev.Name)
			}
			t.Errorf("job %s ended %s: %s\nevents: %v", id, status, evs[len(evs)-1].Data, seen)
		}
	}
	if ended["completed"] != len(jobs) {
		t.Errorf("the %d jobs running at the kill ended %v, want all completed", len(jobs), ended)
	}

	// The live followers saw exactly the stored stream: no gap, no
	// duplicate, in order.
	wg.Wait()
	reconnects := 0
	for _, f := range followers {
		if f.err != nil {
			t.Error(f.err)
			continue
		}
		reconnects += f.reconnects
		full := collect(t, e, f.id)
		if got, want := fmt.Sprint(ids(f.events)), fmt.Sprint(ids(full)); got != want {
			t.Errorf("job %s: the live stream (%d reconnections) differs from the stored one:\n got %s\nwant %s", f.id, f.reconnects, got, want)
		}
		checkOrder(t, f.events, len(tps))
	}
	t.Logf("%d live followers reconnected %d times in all", len(followers), reconnects)

	// A Redis outage is not a provider failure: no breaker changed state.
	for _, p := range e.stack.WorkerList() {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(l, "circuit breaker changed state") {
				t.Errorf("%s: %s", p.Name, l)
			}
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the failover test ran out of time")
	}
}

// endOf reads a job's whole stream to its end; when the job has not ended
// by the end of ctx it says where the job stands.
func endOf(ctx context.Context, e env, id string) ([]client.Event, error) {
	var evs []client.Event
	_, err := e.api.Events(ctx, id, "", func(ev client.Event) error { evs = append(evs, ev); return nil })
	if err == nil {
		return evs, nil
	}
	var names []string
	for _, ev := range evs {
		names = append(names, ev.Name)
	}
	vctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, verr := e.api.Job(vctx, id)
	return nil, fmt.Errorf("no end (%w); events %v; job %+v (%v)", err, names, v, verr)
}
