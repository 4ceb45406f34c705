package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// The real api, worker and simulator run on a real Redis Cluster (three
// masters, one replica each) and on a real Sentinel group (master,
// replica, three sentinels): a job with SSE resume, the caches, cancel, an
// ensemble, a dedup join, an Idempotency-Key replay, a webhook, a quota, a
// breaker and the monitoring stats work on each as on one server, every
// process is a client of every master it needs, and no process logs a
// Redis error it survived.
func TestTopology(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start func(t *testing.T) *config.Redis
	}{
		{"cluster", func(t *testing.T) *config.Redis { return stack.ClusterTopology(redistest.Cluster(t)) }},
		{"sentinel", func(t *testing.T) *config.Redis { return stack.SentinelTopology(redistest.Sentinel(t)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topo := tt.start(t)
			hooks := newHookReceiver(t, whSecretA, nil)
			wh := webhookEnv(whSecretA, "")
			// Two failed calls open a breaker (of a model only the
			// breaker case asks for), with no retry to wait for.
			apiEnv := merged(merged(ensembleAPIEnv, wh), map[string]string{"SNAPSHOT_MAX_RETRY": "0"})
			workerEnv := merged(wh, map[string]string{"LLM_BREAKER_FAILURES": "2", "LLM_BREAKER_OPEN_FOR": "1m", "LLM_MAX_ATTEMPTS": "1", "SNAPSHOT_MAX_RETRY": "0"})
			e := startStack(t, 1, apiEnv, workerEnv, func(o *stack.Options) { o.Topology = topo })
			runTopologyCases(t, e, hooks)
			// A Redis error the service logs and survives (a CROSSSLOT
			// reply, say) would not fail a case above.
			for _, p := range append(e.stack.APIList(), e.stack.WorkerList()...) {
				b, err := os.ReadFile(p.LogPath)
				if err != nil {
					t.Fatal(err)
				}
				for l := range strings.SplitSeq(string(b), "\n") {
					if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "CROSSSLOT") {
						t.Errorf("%s logged: %s", p.Name, l)
					}
				}
			}
		})
	}
}

// runTopologyCases runs the cases of TestTopology, in order, on e.
func runTopologyCases(t *testing.T, e env, hooks *hookReceiver) {
	ctx := context.Background()
	const q = "How do vaccines work?"
	tps := []client.TimePoint{{Date: "2020-01-01"}, {Date: "2022-06-15"}, client.Today}
	finished := 0 // jobs that ran to an end on the workers

	t.Run("completes over SSE, resumed with Last-Event-ID", func(t *testing.T) {
		// (The job and the caches it fills give the masters keys for the
		// spread check at the end.)
		id := submit(t, e, client.SubmitRequest{Question: q, TimePoints: tps})
		var got []client.Event
		stop := errors.New("disconnect")
		last := ""
		for _, after := range []int{1, 3, 6} {
			n := 0
			var err error
			last, err = e.api.Events(ctx, id, last, func(ev client.Event) error {
				got = append(got, ev)
				if n++; n == after {
					return stop
				}
				return nil
			})
			if err == nil {
				break
			}
			if !errors.Is(err, stop) {
				t.Fatalf("events: %v", err)
			}
		}
		if len(got) == 0 || got[len(got)-1].Name != client.EventJobCompleted {
			if _, err := e.api.Events(ctx, id, last, func(ev client.Event) error { got = append(got, ev); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		full := collect(t, e, id)
		if fmt.Sprint(ids(got)) != fmt.Sprint(ids(full)) {
			t.Fatalf("resumed stream differs from the full replay:\n got %v\nwant %v", ids(got), ids(full))
		}
		checkOrder(t, got, 3)
		if s := terminalStatus(t, got); s != "completed" {
			t.Fatalf("status %s, want completed", s)
		}
		finished++
	})

	t.Run("asked again: served from the caches", func(t *testing.T) {
		before := snapshotCalls(t, e)
		acc, err := e.api.Submit(ctx, client.SubmitRequest{Question: q, TimePoints: tps})
		if err != nil {
			t.Fatal(err)
		}
		if !acc.Cached {
			t.Errorf("second ask %+v, want cached", acc)
		}
		evs := collect(t, e, acc.JobID)
		if s := terminalStatus(t, evs); s != "completed" {
			t.Fatalf("status %s, want completed", s)
		}
		for _, ev := range evs {
			if ev.Name == client.EventSnapshotCompleted && !cachedFlag(t, ev) {
				t.Errorf("snapshot not from the cache: %s", ev.Data)
			}
		}
		if after := snapshotCalls(t, e); after != before {
			t.Errorf("snapshot calls %d → %d: the cached answer called the model", before, after)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "Will this be canceled?", Model: modelSlow})
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var evs []client.Event
		canceled := false
		_, err := e.api.Events(cctx, id, "", func(ev client.Event) error {
			evs = append(evs, ev)
			if ev.Name == client.EventSnapshotStarted && !canceled {
				canceled = true
				if _, err := e.api.Cancel(cctx, id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := terminalStatus(t, evs); s != "canceled" {
			t.Fatalf("status %s, want canceled", s)
		}
		// No task of the job is left on the queues (read through the
		// inspector on the same topology).
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		waitUntil(t, 15*time.Second, func() bool {
			for i := range 4 {
				if _, err := insp.GetTaskInfo(tasks.QueueSnapshot, tasks.MemberTaskID(id, i)); !errors.Is(err, asynq.ErrTaskNotFound) {
					return false
				}
			}
			_, err := insp.GetTaskInfo(tasks.QueueAggregate, tasks.AggregateTaskID(id))
			return errors.Is(err, asynq.ErrTaskNotFound)
		})
	})

	t.Run("ensemble", func(t *testing.T) {
		acc := ensemble(t, e, client.EnsembleRequest{Question: "Which language should a beginner learn?", Models: []string{ensAlpha, ensBeta}})
		evs := readResumed(t, e, acc.JobID, 2, 5)
		checkEnsembleOrder(t, evs, 2)
		if s := terminalStatus(t, evs); s != "completed" {
			t.Fatalf("status %s, want completed: %v", s, names(evs))
		}
		finished++
	})

	t.Run("an identical request in flight joins the first", func(t *testing.T) {
		body := `{"question":"Who leads in EV sales?","model":"sim-2s"}`
		var (
			wg     sync.WaitGroup
			status [2]int
			answer [2]accepted
		)
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				status[i], _, answer[i] = post(t, e, "/api/time-travel", body, nil)
			})
		}
		close(start)
		wg.Wait()
		if status[0] != http.StatusAccepted || status[1] != http.StatusAccepted || answer[0].JobID == answer[1].JobID {
			t.Fatalf("answers %d %+v, %d %+v", status[0], answer[0], status[1], answer[1])
		}
		if answer[0].Joined == answer[1].Joined {
			t.Fatalf("joined %v and %v: want exactly one of two to join", answer[0].Joined, answer[1].Joined)
		}
		for _, a := range answer {
			if s := terminalStatus(t, collect(t, e, a.JobID)); s != "completed" {
				t.Fatalf("job %s ended %s", a.JobID, s)
			}
		}
		if n := simStats(t, e).Models["sim-2s"].Requests; n != 4 {
			t.Errorf("%d calls of sim-2s, want 4 (one run for both)", n)
		}
		finished++
	})

	t.Run("Idempotency-Key replay", func(t *testing.T) {
		key := map[string]string{"Idempotency-Key": "topology-1"}
		body := `{"question":"What is the capital of Australia?","complexity":"brief"}`
		status, h, first := post(t, e, "/api/time-travel", body, key)
		if status != http.StatusAccepted || h.Get("Idempotent-Replayed") != "" {
			t.Fatalf("first: %d %+v", status, first)
		}
		status, h, again := post(t, e, "/api/time-travel", body, key)
		if status != http.StatusAccepted || again.JobID != first.JobID || h.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: %d %+v (replayed %q), want job %s replayed", status, again, h.Get("Idempotent-Replayed"), first.JobID)
		}
		if s := terminalStatus(t, collect(t, e, first.JobID)); s != "completed" {
			t.Fatalf("job ended %s", s)
		}
		finished++
	})

	t.Run("webhook delivered", func(t *testing.T) {
		id := submit(t, e, client.SubmitRequest{Question: "Where is the webhook?", Complexity: "brief", CallbackURL: hooks.url()})
		checkDelivered(t, e, hooks, id, job.StatusCompleted, 1)
		finished++
	})

	t.Run("quota of running jobs", func(t *testing.T) {
		key, _ := newKey(t, e, "running", auth.Limits{RunningJobs: 1})
		c := client.New(e.apiURL, client.WithAPIKey(key), client.WithHTTPClient(contractClient(t, e.apiURL)))
		first, err := c.Submit(ctx, client.SubmitRequest{Question: "What runs first?", Model: modelSlow})
		if err != nil {
			t.Fatal(err)
		}
		checkQuotaHeaders(t, call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"What runs second?"}`), "running_jobs")
		if _, err := c.Cancel(ctx, first.JobID); err != nil {
			t.Fatal(err)
		}
		if got := call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"What runs second?"}`); got.status != http.StatusAccepted {
			t.Fatalf("after the first ended: %d %s", got.status, got.body)
		}
	})

	t.Run("breaker opens for a failing model", func(t *testing.T) {
		faultNext(t, simControl(t, e), ensBad2, llmsim.FaultUnavailable, 0)
		id := submit(t, e, client.SubmitRequest{Question: "Which model is failing?", TimePoints: twoDates, Model: ensBad2})
		if s := terminalStatus(t, collect(t, e, id)); s != "failed" {
			t.Fatalf("job ended %s, want failed", s)
		}
		finished++
		waitUntil(t, 15*time.Second, func() bool {
			resp, err := http.Get(e.apiURL + "/api/monitoring/system")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var sys struct {
				Breakers []struct{ Model, State string }
			}
			if json.NewDecoder(resp.Body).Decode(&sys) != nil {
				return false
			}
			for _, br := range sys.Breakers {
				if br.Model == ensBad2 && br.State == "open" {
					return true
				}
			}
			return false
		})
	})

	t.Run("monitoring stats count the finished jobs", func(t *testing.T) {
		var jobs int
		waitUntil(t, 15*time.Second, func() bool {
			resp, err := http.Get(e.apiURL + "/api/monitoring/stats?window=15m")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var st struct{ Jobs int }
			if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &st) != nil {
				return false
			}
			jobs = st.Jobs
			return jobs >= finished
		})
		if jobs < finished || finished == 0 {
			t.Fatalf("stats count %d jobs, want at least %d", jobs, finished)
		}
	})

	t.Run("the processes ran on this topology", func(t *testing.T) {
		checkOnTopology(t, e)
	})
}

// checkOnTopology checks that the api and the worker are clients of the
// masters of e's Redis (the api, with its fixed pool, of every master) and
// that, on a cluster, the keys are spread over more than one master.
func checkOnTopology(t *testing.T, e env) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	withKeys, masters := 0, 0
	workerSeen := false
	each := func(ctx context.Context, c *redis.Client) error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		n, err := c.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		masters++
		if n > 0 {
			withKeys++
		}
		if !strings.Contains(list, "name=tt-api ") {
			return fmt.Errorf("master %s: no client named tt-api:\n%s", c.Options().Addr, list)
		}
		workerSeen = workerSeen || strings.Contains(list, "name=tt-worker ")
		return nil
	}
	var err error
	cluster, isCluster := e.rdb.(*redis.ClusterClient)
	switch c := e.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, each)
	case *redis.Client:
		err = each(ctx, c)
	default:
		t.Fatalf("client %T", e.rdb)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !workerSeen {
		t.Error("no master has a client named tt-worker")
	}
	if isCluster && (masters < 3 || withKeys < 2) {
		t.Errorf("cluster: %d masters, %d with keys; want 3, at least 2 (%v)", masters, withKeys, cluster.Options().Addrs)
	}
}
