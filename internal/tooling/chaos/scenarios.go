package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/tooling/bench"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// Settings the scenarios share.
const (
	// shortDeadline is the JOB_DEADLINE of the scenarios whose fault
	// leaves the jobs time to end normally: well above a job's normal
	// duration (2-6 s here) and the recovery the issue asks for (10 s).
	shortDeadline = 30 * time.Second
	// recoveryTarget is the time within which a dead worker's jobs must
	// end (p95).
	recoveryTarget = 10 * time.Second
	// settleAfterKill bounds, from a fault, the wait for asynq's own
	// recovery of the tasks left active (lease 30 s, cutoff 30 s, a
	// recoverer tick each minute: 60-120 s), so that a late re-run shows
	// in the streams if it double-counts.
	settleAfterKill = 125 * time.Second
	// redisOutage is how long Redis stays down in the AOF scenarios.
	redisOutage = 3 * time.Second
	// aimTimeout bounds the wait for the calls a fault is aimed at.
	aimTimeout = 30 * time.Second
)

func scenarios() []scenario {
	return []scenario{
		workerKillSnapshot(1),
		workerKillSnapshot(2),
		workerKillAggregate(),
		apiKill(),
		redisStop("redis-shutdown", false),
		redisStop("redis-kill", true),
		redisEmpty(),
		redisFailover("sentinel"),
		redisFailover("cluster"),
		workerDrain(),
		// A deadline twice the outage: the aggregation runs a quarter of
		// the job's time (at most 30 s) before the deadline with what it
		// has, which leaves time after the outage.
		providerOutage(time.Minute, 2*time.Minute),
		providerOutage(2*time.Minute, 4*time.Minute),
	}
}

// killRecovery is the recovery definition of the SIGKILL scenarios.
const killRecovery = "for each job the dead worker was working on (a call in flight through its tap; with one worker, " +
	"also a task asynq held active), its end minus the kill (p50/p95)"

func workerKillSnapshot(workers int) scenario {
	// The same 20 jobs (80 snapshots) whatever the number of workers: a
	// load the surviving worker's 32 slots absorb in a few seconds, so
	// that the recovery measured is the dead worker's tasks running again,
	// not the time one worker needs for twice the work (with 40 jobs,
	// 160 snapshots of 2 s, one worker needs 10 s after the kill even if
	// the dead one's tasks were back at once).
	jobs := 20
	desc := fmt.Sprintf("SIGKILL of the only worker while %d jobs' snapshots (2 s each) are in flight; a new worker starts at once. JOB_DEADLINE 30 s.", jobs)
	if workers > 1 {
		desc = fmt.Sprintf("SIGKILL of one of %d workers while %d jobs' snapshots (2 s each) are in flight. JOB_DEADLINE 30 s.", workers, jobs)
	}
	return scenario{
		Name:        fmt.Sprintf("worker-kill-snapshot-%dw", workers),
		Description: desc,
		Recovery:    killRecovery,
		Config: clusterConfig{Workers: workers, Deadline: shortDeadline, SnapshotLatency: 2 * time.Second,
			NarrativeLatency: 500 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			c.submitBurst(ctx, jobs, 8, 0, nil)
			// Aimed at a worker whose every snapshot slot is in a call:
			// then no task it claimed is anywhere but at the tap.
			victim, err := c.aim(ctx, modelSnapshot, snapshotConcurrency)
			if err != nil {
				return nil, err
			}
			return c.killWorker(ctx, victim, workers == 1)
		},
	}
}

func workerKillAggregate() scenario {
	return scenario{
		Name: "worker-kill-aggregate",
		Description: "SIGKILL of one of 2 workers while it writes narratives (a slow narrative model, 4 s) for 20 jobs. " +
			"JOB_DEADLINE 30 s.",
		Recovery: killRecovery,
		Config: clusterConfig{Workers: 2, Deadline: shortDeadline, SnapshotLatency: time.Second,
			NarrativeLatency: 4 * time.Second},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			c.submitBurst(ctx, 20, 8, 0, nil)
			victim, err := c.aim(ctx, modelNarrative, 4)
			if err != nil {
				return nil, err
			}
			return c.killWorker(ctx, victim, false)
		},
	}
}

// aim waits until one live worker has at least n calls of model in
// flight and returns it.
func (c *cluster) aim(ctx context.Context, model string, n int) (*worker, error) {
	var victim *worker
	err := c.waitCalls(ctx, aimTimeout, fmt.Sprintf("worker with %d %s calls in flight", n, model), func() bool {
		for _, w := range c.liveWorkers() {
			if w.tap.Count(model) >= n {
				victim = w
				return true
			}
		}
		return false
	})
	return victim, err
}

// killWorker SIGKILLs victim, names the jobs it had calls in flight for
// (the dead worker's jobs), optionally starts a replacement, and returns
// the SIGKILL judgement. When the victim was the only worker, every task
// asynq holds as active after the kill was the victim's too, calling or
// not: their jobs count as the dead worker's as well.
func (c *cluster) killWorker(ctx context.Context, victim *worker, restart bool) (func(*Row), error) {
	tokens := inFlightTokens(victim)
	calls := len(victim.tap.InFlight())
	at := time.Now()
	c.markFault(at)
	victim.proc.Kill()
	c.log.printf("SIGKILL %s: %d calls of %d jobs were in flight", victim.proc.Name, calls, len(tokens))
	var active map[string]bool
	if len(c.liveWorkers()) == 0 {
		var err error
		if active, err = c.activeJobs(); err != nil {
			return nil, fmt.Errorf("read the dead worker's active tasks: %w", err)
		}
	}
	if restart {
		if _, err := c.startWorker(ctx); err != nil {
			return nil, fmt.Errorf("start a worker after the kill: %w", err)
		}
	}
	return func(row *Row) {
		dead := c.jobs.byTokens(tokens)
		if extra := c.jobs.byIDs(active, dead); len(extra) > 0 {
			row.note("%d jobs had a task active on the dead worker without a call in flight", len(extra))
			dead = append(dead, extra...)
		}
		def := row.Recovery.Definition
		row.Recovery = endsSince(dead, at)
		row.Recovery.Definition = def
		ok, got := p95Within(dead, at, recoveryTarget)
		row.check(fmt.Sprintf("the dead worker's jobs end within %s of the kill (p95)", seconds(recoveryTarget)), ok, "%s", got)
		ok, got = allCompleted(dead)
		row.check("none of them ends partial or failed (the deadline allows)", ok, "%s", got)
	}, nil
}

func apiKill() scenario {
	const posts, killAfter = 120, 30
	return scenario{
		Name: "api-kill",
		Description: fmt.Sprintf("SIGKILL of one of 2 api replicas after %d of a burst of %d POSTs (12 clients, each POST "+
			"retried on the other replica with the same Idempotency-Key). JOB_DEADLINE 30 s.", killAfter, posts),
		Recovery: "for each POST that failed on the dead replica, its acceptance minus its first attempt: the delay its client saw (p50/p95)",
		Config:   clusterConfig{Workers: 2, Deadline: shortDeadline, SnapshotLatency: 500 * time.Millisecond, NarrativeLatency: 300 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			victim := c.st.APIList()[0]
			var accepted atomic.Int64
			fire := make(chan struct{})
			var once sync.Once
			killed := make(chan time.Time, 1)
			go func() {
				select {
				case <-fire:
				case <-ctx.Done():
					close(killed)
					return
				}
				at := time.Now()
				c.markFault(at)
				victim.Kill()
				c.log.printf("SIGKILL %s after %d accepted POSTs", victim.Name, accepted.Load())
				killed <- at
			}()
			c.submitBurst(ctx, posts, 12, 100*time.Millisecond, func(*trackedJob) {
				if accepted.Add(1) == killAfter {
					once.Do(func() { close(fire) })
				}
			})
			at, ok := <-killed
			if !ok {
				return nil, ctx.Err()
			}
			return func(row *Row) {
				var retried []*trackedJob
				replayed := 0
				for _, j := range c.jobs.all() {
					if j.Attempts > 1 && j.Accepted.After(at) { // failed on the dead replica
						retried = append(retried, j)
					}
					if j.Replayed {
						replayed++
					}
				}
				var ds []time.Duration
				for _, j := range retried {
					ds = append(ds, j.Accepted.Sub(j.Submitted))
				}
				def := row.Recovery.Definition
				row.Recovery = durationsRecovery(ds, "no POST had to be retried")
				row.Recovery.Definition = def
				row.info(fmt.Sprintf("every POST accepted within %s of retries", seconds(postRetryFor)), row.Accepted == posts,
					"%d of %d", row.Accepted, posts)
				ok, got := allCompleted(c.jobs.all())
				row.info("every accepted job completed", ok, "%s", got)
				row.note("%d POSTs retried after the kill; %d answered with the job an unanswered POST had made", len(retried), replayed)
			}, nil
		},
	}
}

// durationsRecovery summarises durations as a recovery.
func durationsRecovery(ds []time.Duration, none string) Recovery {
	if len(ds) == 0 {
		return Recovery{Text: none}
	}
	s := bench.Summarize(ds)
	return Recovery{Summary: &s, Text: fmt.Sprintf("p50 %.1f s / p95 %.1f s (n=%d)", s.P50/1000, s.P95/1000, s.N)}
}

func redisStop(name string, kill bool) scenario {
	how := "stopped with SHUTDOWN"
	if kill {
		how = "killed with SIGKILL"
	}
	return scenario{
		Name: name,
		Description: fmt.Sprintf("Redis (AOF, appendfsync always) %s for %s while 100 jobs run, each followed live over SSE "+
			"(reconnecting with Last-Event-ID through the other replica), then restarted with its data. JOB_DEADLINE 30 s.",
			how, seconds(redisOutage)),
		Recovery: "Redis back → the first job completing",
		Config: clusterConfig{Workers: 2, AOF: true, Deadline: shortDeadline, SnapshotLatency: time.Second,
			NarrativeLatency: 500 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			if err := c.underRedisLoad(ctx); err != nil {
				return nil, err
			}
			down := time.Now()
			c.markFault(down)
			if kill {
				c.st.Redis.Kill()
			} else {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.st.Redis.Shutdown(sctx)
				cancel()
				if err != nil {
					return nil, err
				}
			}
			c.log.printf("Redis %s", how)
			if err := sleepUntil(ctx, down.Add(redisOutage)); err != nil {
				return nil, err
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := c.st.Redis.Restart(rctx)
			cancel()
			if err != nil {
				return nil, err
			}
			up := time.Now()
			c.log.printf("Redis back after %s", seconds(up.Sub(down)))
			return func(row *Row) {
				jobs := c.jobs.all()
				row.Recovery.Text = firstCompletion(jobs, up)
				if resumed, ok := firstEventAfter(jobs, up); ok {
					row.note("first event written after Redis returned: +%s", seconds(resumed))
				}
				checkRedisFault(row, jobs, down)
			}, nil
		},
	}
}

func redisEmpty() scenario {
	return scenario{
		Name: "redis-empty",
		Description: "Redis stopped while 20 jobs run (each followed over SSE) and started again empty, api and workers " +
			"running on; then one new job is submitted and timed against one timed before. JOB_DEADLINE 30 s.",
		Recovery: "the next job's POST → job.completed, against the same before the fault",
		Config: clusterConfig{Workers: 2, Deadline: shortDeadline, SnapshotLatency: time.Second,
			NarrativeLatency: 500 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			normal, status, err := c.timedJob(ctx)
			if err != nil {
				return nil, fmt.Errorf("job before the fault: %w", err)
			}
			if status != "completed" {
				return nil, fmt.Errorf("job before the fault ended %s", status)
			}
			c.submitBurst(ctx, 20, 8, 0, c.follow)
			if err := c.waitCalls(ctx, aimTimeout, "16 snapshot calls in flight", func() bool {
				return c.totalCalls(modelSnapshot) >= 16
			}); err != nil {
				return nil, err
			}
			before := c.jobs.all()
			at := time.Now()
			c.markFault(at)
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := c.st.Redis.Shutdown(sctx); err != nil {
				return nil, err
			}
			if err := c.st.Redis.RestartEmpty(sctx); err != nil {
				return nil, err
			}
			c.log.printf("Redis restarted empty after %s", seconds(time.Since(at)))
			next, nextStatus, nextErr := c.timedJob(ctx)
			c.log.printf("next job: %s in %s (normal %s)", nextStatusText(nextStatus, nextErr), seconds(next), seconds(normal))
			return func(row *Row) {
				limit := max(2*normal, normal+2*time.Second)
				if nextErr != nil {
					row.Recovery.Text = "next job: " + nextErr.Error()
				} else {
					row.Recovery.Text = fmt.Sprintf("next job %s (normal %s)", seconds(next), seconds(normal))
				}
				row.check(fmt.Sprintf("the next job completes in normal time (≤ %s)", seconds(limit)),
					nextErr == nil && nextStatus == "completed" && next <= limit, "%s, %s", nextStatusText(nextStatus, nextErr), seconds(next))
				lost := 0
				var other []string
				for _, j := range before {
					if j.Lost {
						lost++
					} else if len(other) < 3 {
						other = append(other, j.Status)
					}
				}
				got := fmt.Sprintf("%d of %d", lost, len(before))
				if len(other) > 0 {
					got += " (others: " + strings.Join(other, ", ") + ")"
				}
				row.check("the jobs of the lost data answer 404", lost == len(before), "%s", got)
			}, nil
		},
	}
}

func nextStatusText(status string, err error) string {
	if err != nil {
		return "no end: " + err.Error()
	}
	return status
}

// timedJob submits one job and times its POST → job.completed.
func (c *cluster) timedJob(ctx context.Context) (time.Duration, string, error) {
	start := time.Now()
	j, err := c.submit(ctx, 0)
	if err != nil {
		return 0, "", err
	}
	status, at, err := c.waitEnd(ctx, j, c.cfg.Deadline+10*time.Second)
	if err != nil {
		return time.Since(start), "", err
	}
	return at.Sub(start), status, nil
}

func workerDrain() scenario {
	const shutdown = 5 * time.Second
	return scenario{
		Name: "worker-drain",
		Description: fmt.Sprintf("SIGTERM to one of 2 workers while 40 jobs' snapshots (2 s each) are in flight "+
			"(SHUTDOWN_TIMEOUT %s): it must turn unready, finish or hand back its work, and exit. JOB_DEADLINE 30 s.", seconds(shutdown)),
		Recovery: "SIGTERM → the worker's exit, and the ends of the jobs it had calls in flight for (p95)",
		Config: clusterConfig{Workers: 2, Deadline: shortDeadline, SnapshotLatency: 2 * time.Second,
			NarrativeLatency: 500 * time.Millisecond, ShutdownTimeout: shutdown},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			c.submitBurst(ctx, 40, 8, 0, nil)
			victim, err := c.aim(ctx, modelSnapshot, snapshotConcurrency)
			if err != nil {
				return nil, err
			}
			tokens := inFlightTokens(victim)
			at := time.Now()
			c.markFault(at)
			if err := victim.proc.Signal(syscall.SIGTERM); err != nil {
				return nil, err
			}
			c.log.printf("SIGTERM %s with %d jobs in flight", victim.proc.Name, len(tokens))
			unready := pollUnready(ctx, "http://"+victim.proc.Addr+"/readyz", victim.proc.Done())
			exitErr := victim.proc.Wait()
			exited := time.Now()
			c.log.printf("%s exited after %s (%v)", victim.proc.Name, seconds(exited.Sub(at)), exitErr)
			return func(row *Row) {
				drained := c.jobs.byTokens(tokens)
				ends := endsSince(drained, at)
				row.Recovery.Summary = ends.Summary
				row.Recovery.Text = fmt.Sprintf("exit %s; its jobs %s", seconds(exited.Sub(at)), ends.Text)
				if unready.IsZero() {
					row.check("/readyz answers 503 while draining", false, "200 until it exited")
				} else {
					row.check("/readyz answers 503 while draining", true, "503 after %s", seconds(unready.Sub(at)))
				}
				row.info(fmt.Sprintf("exits cleanly within SHUTDOWN_TIMEOUT + 2 s (%s)", seconds(shutdown+2*time.Second)),
					exitErr == nil && exited.Sub(at) <= shutdown+2*time.Second, "%s, %s", seconds(exited.Sub(at)), exitText(exitErr))
				ok, got := allCompleted(drained)
				row.info("the jobs it had in flight complete", ok, "%s", got)
			}, nil
		},
	}
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// pollUnready polls a readiness URL until done is closed and returns when
// it first answered something other than 200 (zero if it never did).
func pollUnready(ctx context.Context, url string, done <-chan struct{}) time.Time {
	hc := &http.Client{Timeout: 300 * time.Millisecond}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return time.Time{}
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return time.Now()
			}
		}
		select {
		case <-done:
			return time.Time{}
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}

func providerOutage(outage, deadline time.Duration) scenario {
	rule := llmsim.FaultRule{Model: llmsim.AnyModel, Faults: []llmsim.Fault{
		{Kind: llmsim.FaultServerError, Rate: 0.4}, {Kind: llmsim.FaultUnavailable, Rate: 0.4}, {Kind: llmsim.FaultHang, Rate: 0.2},
	}}
	return scenario{
		Name: "provider-outage-" + strconv.Itoa(int(outage.Seconds())) + "s",
		Description: fmt.Sprintf("The simulator fails every request (500 40 %%, 503 40 %%, hang until the client gives up 20 %%) "+
			"for %s from the moment 20 jobs are submitted; JOB_DEADLINE %s leaves time to finish after it.", seconds(outage), seconds(deadline)),
		Recovery: "outage end → every breaker closed and a job completing (the later of the two)",
		Config: clusterConfig{Workers: 2, Deadline: deadline, SnapshotLatency: time.Second,
			NarrativeLatency: 500 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			if _, err := c.sim.SetFaults(ctx, rule); err != nil {
				return nil, err
			}
			start := time.Now()
			c.markFault(start)
			c.submitBurst(ctx, 20, 8, 0, nil)
			c.log.printf("provider down for %s", seconds(outage))
			if err := sleepUntil(ctx, start.Add(outage)); err != nil {
				return nil, err
			}
			if _, err := c.sim.ClearFaults(ctx); err != nil {
				return nil, err
			}
			end := time.Now()
			during, err := c.sim.Stats(ctx)
			if err != nil {
				return nil, err
			}
			c.log.printf("provider back")
			return func(row *Row) {
				jobs := c.jobs.all()
				first, done := firstCompletedAt(jobs, end)
				b := row.Breaker
				row.note("%d provider calls during the outage, %d after it", during.Total.Requests, row.ProviderCalls-during.Total.Requests)
				switch {
				case !done:
					row.Recovery.Text = "no job completed after the outage"
				case b.Opened && b.ClosedAt.IsZero():
					row.Recovery.Text = "breaker still open at the end"
				default:
					rec := first.Sub(end)
					if b.Opened {
						rec = max(rec, b.ClosedAt.Sub(end))
					}
					row.Recovery.Text = fmt.Sprintf("%s (breaker closed %s, first completion %s)", seconds(max(rec, 0)),
						closedText(b, end), seconds(first.Sub(end)))
				}
				row.note("breaker (the state each worker last saw; it changes only when a request is tried): %s", breakerText(b, start))
				ok, got := allCompleted(jobs)
				row.check("every job completed (the deadline leaves time after the outage)", ok, "%s", got)
			}, nil
		},
	}
}

func closedText(b BreakerReport, end time.Time) string {
	if !b.Opened {
		return "never opened"
	}
	return fmt.Sprintf("%+.1f s", b.ClosedAt.Sub(end).Seconds())
}

// breakerText describes the breaker watch relative to the fault.
func breakerText(b BreakerReport, fault time.Time) string {
	if !b.Opened {
		return "never opened"
	}
	s := fmt.Sprintf("opened %d time(s), first %+.1f s after the fault", b.Opens, b.FirstOpen.Sub(fault).Seconds())
	if b.ClosedAt.IsZero() {
		return s + ", still open at the end"
	}
	return s + fmt.Sprintf(", closed for good %+.1f s after it", b.ClosedAt.Sub(fault).Seconds())
}

// firstCompletedAt returns the earliest end, at or after t, of a job that
// ended completed.
func firstCompletedAt(jobs []*trackedJob, t time.Time) (time.Time, bool) {
	var first time.Time
	for _, j := range jobs {
		if j.Status != "completed" || j.Finished.Before(t) {
			continue
		}
		if first.IsZero() || j.Finished.Before(first) {
			first = j.Finished
		}
	}
	return first, !first.IsZero()
}

// firstCompletion describes the first job completing at or after t.
func firstCompletion(jobs []*trackedJob, t time.Time) string {
	first, ok := firstCompletedAt(jobs, t)
	if !ok {
		return "no job completed after it"
	}
	return "+" + seconds(first.Sub(t))
}

// firstEventAfter returns how long after t the first event written at or
// after t was written, by its stream id (Redis' clock, in milliseconds).
func firstEventAfter(jobs []*trackedJob, t time.Time) (time.Duration, bool) {
	tm := t.UnixMilli()
	best := int64(-1)
	for _, j := range jobs {
		for _, ev := range j.Events {
			ms, _, ok := strings.Cut(ev.ID, "-")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(ms, 10, 64)
			if err == nil && n >= tm && (best < 0 || n < best) {
				best = n
			}
		}
	}
	if best < 0 {
		return 0, false
	}
	return time.Duration(best-tm) * time.Millisecond, true
}

// sleepUntil waits until t or the end of ctx. The scenarios sleep only to
// keep a fault in place for its stated time.
func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// failoverTarget is the time within which, after a Redis master is
// killed, a job submitted after the kill must have completed (issue 18).
const failoverTarget = 15 * time.Second

// redisFailover kills the master of a Sentinel group, or the cluster
// master that serves the snapshot queue, under 100 running jobs, and times
// a job submitted right after the kill.
func redisFailover(topology string) scenario {
	victim := "the master of a Sentinel group (one replica, three sentinels, down-after 1 s)"
	if topology == "cluster" {
		victim = "the master that serves the snapshot queue of a Redis Cluster (three masters, one replica each, node timeout 1 s)"
	}
	return scenario{
		Name: topology + "-failover",
		Description: fmt.Sprintf("SIGKILL to %s while 100 jobs run, each followed live over SSE; nobody restarts it: "+
			"the api and the workers must find the promoted replica by themselves. A job is submitted right after the kill "+
			"(retrying the POST while the api answers 503). JOB_DEADLINE 30 s.", victim),
		Recovery: "kill → the end of the job submitted after it (target 15 s); kill → promotion seen by the harness",
		Config: clusterConfig{Workers: 2, Topology: topology, Deadline: shortDeadline, SnapshotLatency: time.Second,
			NarrativeLatency: 500 * time.Millisecond},
		Run: func(ctx context.Context, c *cluster) (func(*Row), error) {
			if err := c.underRedisLoad(ctx); err != nil {
				return nil, err
			}
			wait, err := c.killMaster(ctx)
			if err != nil {
				return nil, err
			}
			down := time.Now()
			c.markFault(down)
			c.log.printf("Redis master killed")
			promoted := make(chan time.Duration, 1)
			go func() {
				if err := wait(ctx); err != nil {
					c.log.printf("failover: %v", err)
					close(promoted)
					return
				}
				promoted <- time.Since(down)
			}()
			took, status, err := c.timedJob(ctx)
			took = time.Since(down) // from the kill, not from the first POST attempt
			if err != nil {
				c.log.printf("job after the kill: %v", err)
			}
			promotion, promotedOK := <-promoted
			c.log.printf("promotion seen after %s; job after the kill %s after %s", seconds(promotion), status, seconds(took))
			return func(row *Row) {
				jobs := c.jobs.all()
				row.Recovery.Text = fmt.Sprintf("new job completed +%s; promotion +%s", seconds(took), seconds(promotion))
				row.check("the failover happened", promotedOK, "promotion seen after %s", seconds(promotion))
				row.check("a job submitted after the kill completed within 15 s", err == nil && status == "completed" && took <= failoverTarget,
					"%s after %s", nextStatusText(status, err), seconds(took))
				checkRedisFault(row, jobs, down)
			}, nil
		},
	}
}

// killMaster kills the master of the scenario's Sentinel group, or the
// cluster master that serves asynq's snapshot queue, with SIGKILL, and
// returns the function that waits until a replica has taken its place.
func (c *cluster) killMaster(ctx context.Context) (func(context.Context) error, error) {
	switch {
	case c.sentinel != nil:
		c.sentinel.Master().Kill()
		return func(ctx context.Context) error { _, err := c.sentinel.WaitFailover(ctx); return err }, nil
	case c.redisCluster != nil:
		cc, ok := c.rdb.(*redis.ClusterClient)
		if !ok {
			return nil, fmt.Errorf("chaos: client %T is not a cluster client", c.rdb)
		}
		m, err := cc.MasterForKey(ctx, "asynq:{snapshot}:pending")
		if err != nil {
			return nil, fmt.Errorf("chaos: the snapshot queue's master: %w", err)
		}
		for _, s := range c.redisCluster.Masters() {
			if s.Addr == m.Options().Addr {
				s.Kill()
				return func(ctx context.Context) error { _, err := c.redisCluster.WaitFailover(ctx, s.Addr); return err }, nil
			}
		}
		return nil, fmt.Errorf("chaos: %s is not a master the cluster started", m.Options().Addr)
	}
	return nil, errors.New("chaos: the scenario has no Sentinel group or cluster")
}

// underRedisLoad submits the 100 jobs of the Redis scenarios, each followed
// live over SSE, and returns once 32 of their snapshot calls are in flight:
// the moment to hit Redis.
func (c *cluster) underRedisLoad(ctx context.Context) error {
	c.submitBurst(ctx, 100, 16, 0, c.follow)
	return c.waitCalls(ctx, aimTimeout, "32 snapshot calls in flight", func() bool {
		return c.totalCalls(modelSnapshot) >= 32
	})
}

// checkRedisFault adds the criteria every Redis fault is held to: every
// job completed, no breaker opened by it (down is the fault's time), and
// every live SSE reader saw exactly the stored stream.
func checkRedisFault(row *Row, jobs []*trackedJob, down time.Time) {
	ok, got := allCompleted(jobs)
	row.check("every job completed", ok, "%s", got)
	row.check("no breaker opened", !row.Breaker.Opened, "%s", breakerText(row.Breaker, down))
	readers, exact, reconnects, sum := liveExactness(jobs)
	row.check("every SSE reader saw every event exactly once", readers > 0 && readers == exact,
		"%d of %d readers exact (duplicates %d, missing %d, phantom %d, reordered %v; %d reconnections)",
		exact, readers, sum.Duplicates, sum.Missing, sum.Phantom, sum.Reordered, reconnects)
}
