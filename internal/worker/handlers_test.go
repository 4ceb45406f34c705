package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

var dates3 = []string{"2023-01-01", "2023-03-01", "2024-05-01"}

// endTimeout bounds how long a test waits for a job to end; retries take
// one to two seconds each (1 s delay, 1 s forwarding).
const endTimeout = 20 * time.Second

func TestHappyPath(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{})
	j := hs.submit(dates3, time.Minute)
	evs := hs.follow(j.ID, endTimeout)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusCompleted)
	if got.Error != "" {
		t.Errorf("job error %q, want none", got.Error)
	}
	if errs := got.View().Errors; len(errs) != 0 {
		t.Errorf("view errors %q, want none", errs)
	}
	if evs[0].Type != events.JobAccepted {
		t.Errorf("first event %s, want job.accepted", evs[0].Type)
	}

	// Snapshots: one start and one completion each, text = streamed pieces.
	started := byIndex(t, evs, timetravel.EventSnapshotStarted)
	completed := byIndex(t, evs, timetravel.EventSnapshotCompleted)
	deltas := byIndex(t, evs, timetravel.EventSnapshotDelta)
	if n := len(ofType(evs, timetravel.EventSnapshotFailed)); n != 0 {
		t.Errorf("%d snapshot.failed events, want 0", n)
	}
	for i, s := range got.Members {
		want := snapshotText(dates3[i])
		if s.Status != job.MemberCompleted || s.Text != want || s.Attempts != 1 || s.Model != snapModel || s.Error != "" {
			t.Errorf("snapshot %d = %+v; want completed, 1 attempt, model %s, text %q", i, s, snapModel, want)
		}
		if len(started[i]) != 1 || started[i][0].Attempt != 1 {
			t.Errorf("snapshot %d: started events %+v, want one with attempt 1", i, started[i])
		}
		if len(completed[i]) != 1 {
			t.Fatalf("snapshot %d: %d snapshot.completed events, want 1", i, len(completed[i]))
		}
		if c := completed[i][0]; c.Text != want || c.Date != dates3[i] || c.Model != snapModel || c.Label != s.Label {
			t.Errorf("snapshot %d: snapshot.completed %+v, want text %q", i, c, want)
		}
		var streamed strings.Builder
		for _, d := range deltas[i] {
			streamed.WriteString(d.Text)
		}
		if streamed.String() != want {
			t.Errorf("snapshot %d: deltas add up to %q, want %q", i, streamed.String(), want)
		}
		if len(deltas[i]) < 2 {
			t.Errorf("snapshot %d: %d deltas; want the first piece sent on its own, then the rest", i, len(deltas[i]))
		}
	}
	if fan := hs.fanIn(j.ID); fan != "3" {
		t.Errorf("fan-in counter %s, want 3", fan)
	}

	// Aggregation: after every snapshot, key changes parsed from the JSON
	// answer, narrative streamed.
	aggBegan := slices.IndexFunc(evs, func(e events.Event) bool {
		return strings.HasPrefix(e.Type, "key_changes.") || strings.HasPrefix(e.Type, "narrative.")
	})
	if aggBegan < 0 {
		t.Fatalf("no aggregation events: %v", typesOf(evs))
	}
	for _, e := range evs[aggBegan:] {
		if strings.HasPrefix(e.Type, "snapshot.") {
			t.Errorf("%s after the aggregation began; events: %v", e.Type, typesOf(evs))
		}
	}
	agg := aggOf(t, got)
	if agg == nil {
		t.Fatal("no aggregate")
	}
	if agg.KeyChangesError != "" || agg.NarrativeError != "" {
		t.Errorf("aggregate errors %q / %q, want none", agg.KeyChangesError, agg.NarrativeError)
	}
	if len(agg.KeyChanges) != 2 {
		t.Fatalf("key changes %+v, want 2", agg.KeyChanges)
	}
	for i, kc := range agg.KeyChanges {
		from, to := dates3[i], dates3[i+1]
		if kc.From != from || kc.To != to || kc.FromLabel != got.Members[i].Label || kc.ToLabel != got.Members[i+1].Label ||
			!slices.Equal(kc.Changes, []string{changeText(from, to)}) {
			t.Errorf("key change %d = %+v, want %s -> %s with %q", i, kc, from, to, changeText(from, to))
		}
	}
	kcEvents := ofType(evs, timetravel.EventKeyChangesCompleted)
	if len(kcEvents) != 1 {
		t.Fatalf("%d key_changes.completed events, want 1", len(kcEvents))
	}
	var kcData struct {
		KeyChanges []timetravel.KeyChange `json:"key_changes"`
	}
	if err := json.Unmarshal(kcEvents[0].Data, &kcData); err != nil || len(kcData.KeyChanges) != 2 || kcData.KeyChanges[1].To != dates3[2] {
		t.Errorf("key_changes.completed data %s (%v)", kcEvents[0].Data, err)
	}
	if agg.Narrative != narrativeText() {
		t.Errorf("narrative %q, want %q", agg.Narrative, narrativeText())
	}
	nd := ofType(evs, timetravel.EventNarrativeDelta)
	if len(nd) == 0 {
		t.Error("no narrative.delta events")
	}
	var streamed strings.Builder
	for _, e := range nd {
		streamed.WriteString(decode[events.DeltaData](t, e).Text)
	}
	if streamed.String() != narrativeText() {
		t.Errorf("narrative deltas add up to %q, want %q", streamed.String(), narrativeText())
	}
	nc := ofType(evs, timetravel.EventNarrativeCompleted)
	if len(nc) != 1 || decode[events.DeltaData](t, nc[0]).Text != narrativeText() {
		t.Errorf("narrative.completed events %v, want one with the narrative", nc)
	}

	tm := got.Timings()
	for name, v := range map[string]*int64{
		"queue_wait": tm.QueueWaitMS, "snapshots": tm.MembersMS, "fan_in": tm.FanInMS,
		"key_changes": partMS(tm, timetravel.PartKeyChanges), "narrative": partMS(tm, timetravel.PartNarrative), "total": tm.TotalMS,
	} {
		if v == nil || *v < 0 {
			t.Errorf("timing %s = %v, want set", name, v)
		}
	}
	if len(tm.MemberMS) != 3 {
		t.Errorf("per-snapshot timings %v, want 3", tm.MemberMS)
	}

	// The model saw each step once, with the right request shape.
	calls := hs.model.Calls()
	if len(calls) != 5 {
		t.Errorf("model calls %+v, want 5", calls)
	}
	for _, c := range calls {
		switch c.Kind {
		case kindSnapshot:
			if c.Method != "Stream" || c.JSON || !slices.Contains(dates3, c.Date) || c.N != 1 {
				t.Errorf("snapshot call %+v", c)
			}
		case kindKeyChanges:
			if c.Method != "Complete" || !c.JSON || !slices.Equal(c.Dates, dates3) {
				t.Errorf("key-changes call %+v, want Complete in JSON mode with %v", c, dates3)
			}
		case kindNarrative:
			if c.Method != "Stream" || c.JSON || !slices.Equal(c.Dates, dates3) {
				t.Errorf("narrative call %+v", c)
			}
		default:
			t.Errorf("unexpected call %+v", c)
		}
	}
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	hs.wantQueueStats(tasks.QueueSnapshot, 3, 0)
	hs.wantQueueStats(tasks.QueueAggregate, 1, 0)
}

func TestRetryableErrorThenSuccess(t *testing.T) {
	t.Parallel()
	flaky := dates3[1]
	hs := newHarness(t, options{script: func(c call) *answer {
		if c.Kind == kindSnapshot && c.Date == flaky && c.N == 1 {
			// Some text, then the provider fails: the retry starts over.
			return &answer{Pieces: []string{"lost ", "text"}, Err: statusErr(503)}
		}
		return nil
	}})
	j := hs.submit(dates3, time.Minute)
	evs := hs.follow(j.ID, endTimeout)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusCompleted)

	s := got.Members[1]
	if s.Status != job.MemberCompleted || s.Attempts != 2 || s.Text != snapshotText(flaky) || s.Error != "" {
		t.Errorf("flaky snapshot = %+v; want completed after 2 attempts with text %q, no error", s, snapshotText(flaky))
	}
	started := byIndex(t, evs, timetravel.EventSnapshotStarted)
	if a := started[1]; len(a) != 2 || a[0].Attempt != 1 || a[1].Attempt != 2 {
		t.Errorf("flaky snapshot started events %+v, want attempts 1 and 2", a)
	}
	completed := byIndex(t, evs, timetravel.EventSnapshotCompleted)
	for i := range dates3 {
		if len(completed[i]) != 1 {
			t.Errorf("snapshot %d: %d snapshot.completed events, want 1", i, len(completed[i]))
		}
		if i != 1 && (len(started[i]) != 1 || got.Members[i].Attempts != 1) {
			t.Errorf("snapshot %d: %d starts, %d attempts; want 1", i, len(started[i]), got.Members[i].Attempts)
		}
	}
	if n := len(ofType(evs, timetravel.EventSnapshotFailed)); n != 0 {
		t.Errorf("%d snapshot.failed events, want 0", n)
	}
	if fan := hs.fanIn(j.ID); fan != "3" {
		t.Errorf("fan-in counter %s, want 3 (counted once per snapshot)", fan)
	}
	if n := hs.model.count(kindSnapshot, flaky); n != 2 {
		t.Errorf("%d model calls for %s, want 2", n, flaky)
	}
	// One aggregation.
	if kc, nr := hs.model.count(kindKeyChanges, ""), hs.model.count(kindNarrative, ""); kc != 1 || nr != 1 {
		t.Errorf("%d key-changes and %d narrative calls, want 1 each", kc, nr)
	}
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	hs.wantQueueStats(tasks.QueueSnapshot, 4, 1)
	hs.wantQueueStats(tasks.QueueAggregate, 1, 0)
}

// outcome is what a failure test gets to check.
type outcome struct {
	hs  *harness
	job *job.Job
	evs []events.Event
}

func TestFailures(t *testing.T) {
	t.Parallel()
	bad := dates3[1]
	snapshotFails := func(err error) func(call) *answer {
		return func(c call) *answer {
			if c.Kind == kindSnapshot && c.Date == bad {
				return &answer{Err: err}
			}
			return nil
		}
	}
	cases := []struct {
		name     string
		script   func(call) *answer
		maxRetry int
		status   job.Status
		// snapshot queue: processed and failed task runs
		processed, failed int
		check             func(t *testing.T, o outcome)
	}{
		{
			name:   "permanent snapshot error",
			script: snapshotFails(statusErr(400)),
			status: job.StatusPartial, processed: 3, failed: 0,
			check: func(t *testing.T, o outcome) {
				if n := o.hs.model.count(kindSnapshot, bad); n != 1 {
					t.Errorf("%d model calls for %s, want 1 (no retry)", n, bad)
				}
				s := o.job.Members[1]
				want := statusErr(400).Error()
				if s.Status != job.MemberFailed || s.Attempts != 1 || s.Error != want {
					t.Errorf("snapshot = %+v; want failed after 1 attempt with error %q", s, want)
				}
				failed := byIndex(t, o.evs, timetravel.EventSnapshotFailed)
				if len(failed) != 1 || len(failed[1]) != 1 || failed[1][0].Error != want || failed[1][0].Date != bad {
					t.Errorf("snapshot.failed events %+v, want one for index 1 with %q", failed, want)
				}
				if !strings.Contains(o.job.Error, "1 of 3 snapshots missing: "+s.Label+" failed") {
					t.Errorf("job error %q, want it to name the missing snapshot", o.job.Error)
				}
				wantErr := "snapshot " + s.Label + ": " + want
				if errs := o.job.View().Errors; !slices.Contains(errs, wantErr) {
					t.Errorf("view errors %q, want %q among them", errs, wantErr)
				}
				// The aggregation used the two snapshots there are.
				if kc := aggOf(t, o.job).KeyChanges; len(kc) != 1 || kc[0].From != dates3[0] || kc[0].To != dates3[2] {
					t.Errorf("key changes %+v, want one, %s -> %s", kc, dates3[0], dates3[2])
				}
				if aggOf(t, o.job).Narrative != narrativeText() {
					t.Errorf("narrative %q", aggOf(t, o.job).Narrative)
				}
			},
		},
		{
			name:     "retryable snapshot error on every attempt",
			script:   snapshotFails(statusErr(503)),
			maxRetry: 1,
			status:   job.StatusPartial, processed: 4, failed: 1,
			check: func(t *testing.T, o outcome) {
				if n := o.hs.model.count(kindSnapshot, bad); n != 2 {
					t.Errorf("%d model calls for %s, want 2 (1 retry)", n, bad)
				}
				s := o.job.Members[1]
				want := statusErr(503).Error()
				if s.Status != job.MemberFailed || s.Attempts != 2 || s.Error != want {
					t.Errorf("snapshot = %+v; want failed after 2 attempts with error %q", s, want)
				}
				if started := byIndex(t, o.evs, timetravel.EventSnapshotStarted); len(started[1]) != 2 {
					t.Errorf("%d snapshot.started events for index 1, want 2", len(started[1]))
				}
				if failed := byIndex(t, o.evs, timetravel.EventSnapshotFailed); len(failed[1]) != 1 {
					t.Errorf("%d snapshot.failed events for index 1, want 1", len(failed[1]))
				}
				if !strings.Contains(o.job.Error, "1 of 3 snapshots missing") {
					t.Errorf("job error %q", o.job.Error)
				}
			},
		},
		{
			name: "every snapshot fails",
			script: func(c call) *answer {
				if c.Kind == kindSnapshot {
					return &answer{Err: statusErr(400)}
				}
				return nil
			},
			status: job.StatusFailed, processed: 3, failed: 0,
			check: func(t *testing.T, o outcome) {
				if o.job.Error != "all snapshots failed" {
					t.Errorf("job error %q, want %q", o.job.Error, "all snapshots failed")
				}
				for _, c := range o.hs.model.Calls() {
					if c.Kind != kindSnapshot {
						t.Errorf("model call %+v after every snapshot failed", c)
					}
				}
				if n := o.hs.model.count(kindSnapshot, ""); n != 3 {
					t.Errorf("%d snapshot calls, want 3", n)
				}
				if n := len(ofType(o.evs, timetravel.EventSnapshotFailed)); n != 3 {
					t.Errorf("%d snapshot.failed events, want 3", n)
				}
				for _, e := range o.evs {
					if strings.HasPrefix(e.Type, "key_changes.") || strings.HasPrefix(e.Type, "narrative.") {
						t.Errorf("unexpected %s event", e.Type)
					}
				}
			},
		},
		{
			name: "malformed key changes",
			script: func(c call) *answer {
				if c.Kind == kindKeyChanges {
					return &answer{Pieces: []string{"not json"}}
				}
				return nil
			},
			status: job.StatusPartial, processed: 3, failed: 0,
			check: func(t *testing.T, o outcome) {
				agg := aggOf(t, o.job)
				if agg.KeyChangesError == "" || len(agg.KeyChanges) != 0 {
					t.Errorf("key changes %+v, error %q; want none and an error", agg.KeyChanges, agg.KeyChangesError)
				}
				f := ofType(o.evs, timetravel.EventKeyChangesFailed)
				if len(f) != 1 || decode[events.ErrorData](t, f[0]).Error != agg.KeyChangesError {
					t.Errorf("key_changes.failed events %v, want one with %q", f, agg.KeyChangesError)
				}
				if n := len(ofType(o.evs, timetravel.EventKeyChangesCompleted)); n != 0 {
					t.Errorf("%d key_changes.completed events, want 0", n)
				}
				if agg.Narrative != narrativeText() || len(ofType(o.evs, timetravel.EventNarrativeCompleted)) != 1 {
					t.Errorf("narrative %q, want %q and its event", agg.Narrative, narrativeText())
				}
				if o.job.Error != "part of the aggregation failed" {
					t.Errorf("job error %q", o.job.Error)
				}
			},
		},
		{
			name: "narrative error",
			script: func(c call) *answer {
				if c.Kind == kindNarrative {
					return &answer{Err: statusErr(500)}
				}
				return nil
			},
			status: job.StatusPartial, processed: 3, failed: 0,
			check: func(t *testing.T, o outcome) {
				agg := aggOf(t, o.job)
				want := statusErr(500).Error()
				if agg.NarrativeError != want || agg.Narrative != "" {
					t.Errorf("narrative %q, error %q; want none and %q", agg.Narrative, agg.NarrativeError, want)
				}
				f := ofType(o.evs, timetravel.EventNarrativeFailed)
				if len(f) != 1 || decode[events.ErrorData](t, f[0]).Error != want {
					t.Errorf("narrative.failed events %v, want one with %q", f, want)
				}
				if n := len(ofType(o.evs, timetravel.EventNarrativeCompleted)); n != 0 {
					t.Errorf("%d narrative.completed events, want 0", n)
				}
				if len(agg.KeyChanges) != 2 || agg.KeyChangesError != "" || len(ofType(o.evs, timetravel.EventKeyChangesCompleted)) != 1 {
					t.Errorf("key changes %+v (error %q), want 2 and their event", agg.KeyChanges, agg.KeyChangesError)
				}
				if n := o.hs.model.count(kindNarrative, ""); n != 1 {
					t.Errorf("%d narrative calls, want 1", n)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t, options{script: tc.script, maxRetry: tc.maxRetry})
			j := hs.submit(dates3, time.Minute)
			evs := hs.follow(j.ID, endTimeout)
			got := hs.job(j.ID)
			wantEnded(t, evs, got, tc.status)
			// Every snapshot has exactly one outcome, counted once.
			for i := range dates3 {
				n := len(byIndex(t, evs, timetravel.EventSnapshotCompleted)[i]) + len(byIndex(t, evs, timetravel.EventSnapshotFailed)[i])
				if n != 1 {
					t.Errorf("snapshot %d: %d outcome events, want 1", i, n)
				}
			}
			if fan := hs.fanIn(j.ID); fan != "3" {
				t.Errorf("fan-in counter %s, want 3", fan)
			}
			if aggOf(t, got) == nil {
				t.Fatal("no aggregate")
			}
			tc.check(t, outcome{hs: hs, job: got, evs: evs})
			hs.waitTasksGone(j.ID, 3, 5*time.Second)
			hs.wantQueueStats(tasks.QueueSnapshot, tc.processed, tc.failed)
			hs.wantQueueStats(tasks.QueueAggregate, 1, 0)
		})
	}
}

// releaseBound is how soon a blocked model call must see its context end
// after the job closed: generous, the point is "promptly, not at the task
// timeout" (a minute).
const releaseBound = 5 * time.Second

// byJobClosing tells a context cause set by the handlers when the job closed
// from the others: the task's timeout (a minute) and asynq's own
// cancellation (shutdown), whose causes are the plain context errors.
func byJobClosing(cause error) bool {
	return cause != nil && !errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled)
}

func TestCancelWhileSnapshotsRun(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{script: func(c call) *answer {
		if c.Kind == kindSnapshot {
			return &answer{Block: true}
		}
		return nil
	}})
	j := hs.submit(dates3, time.Minute)
	hs.model.waitBlocked(t, 3, 10*time.Second)

	// Cancel as the api does.
	ctx := context.Background()
	canceledAt := time.Now()
	if err := hs.store.Finish(ctx, j.ID, job.StatusCanceled, "canceled by the client", nil); err != nil {
		t.Fatal(err)
	}
	if err := tasks.Withdraw(hs.insp, tasks.UserLane, j.ID, []int{0, 1, 2}, true); err != nil {
		t.Fatal(err)
	}
	for _, r := range hs.model.waitReleased(t, 3, releaseBound) {
		if !byJobClosing(r.Cause) {
			t.Errorf("call %+v ended with cause %v, want the job closing", r.Call, r.Cause)
		}
		t.Logf("snapshot %s released after %s (cause: %v)", r.Call.Date, r.At.Sub(canceledAt), r.Cause)
	}

	// Nothing of the job is left in asynq, and nothing was put up for retry.
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	hs.wantQueueStats(tasks.QueueSnapshot, 3, 0)

	evs := hs.events(j.ID)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusCanceled)
	if got.Error != "canceled by the client" {
		t.Errorf("job error %q", got.Error)
	}
	for _, e := range evs {
		switch e.Type {
		case timetravel.EventSnapshotCompleted, timetravel.EventSnapshotFailed, timetravel.EventKeyChangesCompleted, timetravel.EventKeyChangesFailed,
			timetravel.EventNarrativeCompleted, timetravel.EventNarrativeFailed, timetravel.EventNarrativeDelta:
			t.Errorf("unexpected %s after cancel; events: %v", e.Type, typesOf(evs))
		}
	}
	if n := len(ofType(evs, timetravel.EventSnapshotStarted)); n != 3 {
		t.Errorf("%d snapshot.started events, want 3", n)
	}
	if calls := hs.model.Calls(); len(calls) != 3 {
		t.Errorf("model calls %+v, want the 3 snapshot calls only", calls)
	}
}

func TestDeadlineWithHungSnapshot(t *testing.T) {
	t.Parallel()
	hung := dates3[2]
	hs := newHarness(t, options{script: func(c call) *answer {
		if c.Kind == kindSnapshot && c.Date == hung {
			return &answer{Block: true}
		}
		return nil
	}})
	// Long enough for the aggregation's reserve (a quarter) to exceed
	// asynq's 1 s check of scheduled tasks.
	j := hs.submit(dates3, 6*time.Second)
	hs.model.waitBlocked(t, 1, 10*time.Second)
	evs := hs.follow(j.ID, endTimeout)
	got := hs.job(j.ID)
	wantEnded(t, evs, got, job.StatusPartial)

	// The aggregation came from its schedule ahead of the deadline, not
	// from a fan-in.
	if agg := aggOf(t, got); agg == nil || agg.StartedAt < tasks.AggregateAt(j).Add(-time.Second).UnixMilli() { // asynq schedules in whole seconds
		t.Errorf("aggregation started at %v, want at %v", aggOf(t, got), tasks.AggregateAt(j))
	}
	if !strings.Contains(got.Error, "1 of 3 snapshots missing") || !strings.Contains(got.Error, "unfinished at the deadline") {
		t.Errorf("job error %q, want one snapshot unfinished", got.Error)
	}
	if s := got.Members[2]; s.Status.Done() || s.Text != "" {
		t.Errorf("hung snapshot = %+v, want it unfinished", s)
	}
	for i := range 2 {
		if s := got.Members[i]; s.Status != job.MemberCompleted {
			t.Errorf("snapshot %d = %+v, want completed", i, s)
		}
	}
	if kc := aggOf(t, got).KeyChanges; len(kc) != 1 || kc[0].From != dates3[0] || kc[0].To != dates3[1] {
		t.Errorf("key changes %+v, want one over the two finished snapshots", kc)
	}
	if aggOf(t, got).Narrative != narrativeText() {
		t.Errorf("narrative %q", aggOf(t, got).Narrative)
	}

	// The hung call was stopped by the closed announcement, not by its
	// timeout (a minute).
	r := hs.model.waitReleased(t, 1, releaseBound)[0]
	if !byJobClosing(r.Cause) || r.Call.Date != hung {
		t.Errorf("released %+v (cause %v), want the hung call stopped by the job closing", r.Call, r.Cause)
	}
	// Its task does not linger, and was not put up for retry.
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	hs.wantQueueStats(tasks.QueueSnapshot, 3, 0)
	hs.wantQueueStats(tasks.QueueAggregate, 1, 0)
	if n := hs.model.count(kindSnapshot, hung); n != 1 {
		t.Errorf("%d calls for the hung snapshot, want 1", n)
	}
	if evs := hs.events(j.ID); len(ofType(evs, events.JobCompleted)) != 1 || !evs[len(evs)-1].Terminal() {
		t.Errorf("events after the end: %v", typesOf(evs))
	}
}

// Redelivered tasks of a job that has ended change nothing.
func TestRedeliveryAfterEndIsNoop(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{})
	j := hs.submit(dates3, time.Minute)
	hs.follow(j.ID, endTimeout)
	hs.waitTasksGone(j.ID, 3, 5*time.Second)
	before := hs.events(j.ID)
	calls := len(hs.model.Calls())
	ctx := context.Background()

	aggPayload, _ := json.Marshal(tasks.AggregatePayload{JobID: j.ID})
	if err := hs.h.HandleAggregate(ctx, asynq.NewTask(tasks.TypeAggregate, aggPayload)); err != nil {
		t.Errorf("aggregation of an ended job: %v, want nil", err)
	}
	for i := range j.Members {
		if err := hs.h.HandleMember(ctx, hs.memberTask(j, i)); err != nil {
			t.Errorf("snapshot %d of an ended job: %v, want nil", i, err)
		}
	}
	if after := hs.events(j.ID); len(after) != len(before) {
		t.Errorf("events grew from %d to %d: %v", len(before), len(after), typesOf(after[len(before):]))
	}
	if n := len(hs.model.Calls()); n != calls {
		t.Errorf("model calls grew from %d to %d", calls, n)
	}
	if got := hs.job(j.ID); got.Status != job.StatusCompleted {
		t.Errorf("job status %s, want completed", got.Status)
	}
}

// A duplicate delivery of a snapshot that is done, while the job still runs,
// calls no model and writes nothing; the duplicate of the last one promotes
// the aggregation again, harmlessly. The handlers are called directly (no
// servers), so the aggregation stays pending where the test can see it.
func TestDuplicateSnapshotBeforeAggregation(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, options{noServers: true})
	dates := dates3[:2]
	j := hs.submit(dates, time.Minute)
	ctx := context.Background()
	payload := func(i int) *asynq.Task { return hs.memberTask(j, i) }
	aggState := func() asynq.TaskState {
		info, err := hs.insp.GetTaskInfo(tasks.QueueAggregate, tasks.AggregateTaskID(j.ID))
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	noop := func(i int) {
		t.Helper()
		evs, calls := len(hs.events(j.ID)), len(hs.model.Calls())
		if err := hs.h.HandleMember(ctx, payload(i)); err != nil {
			t.Fatalf("duplicate of snapshot %d: %v", i, err)
		}
		if n := len(hs.events(j.ID)); n != evs {
			t.Errorf("duplicate of snapshot %d: events grew from %d to %d", i, evs, n)
		}
		if n := len(hs.model.Calls()); n != calls {
			t.Errorf("duplicate of snapshot %d: model calls grew from %d to %d", i, calls, n)
		}
	}

	if err := hs.h.HandleMember(ctx, payload(0)); err != nil {
		t.Fatal(err)
	}
	noop(0)
	if st := aggState(); st != asynq.TaskStateScheduled {
		t.Errorf("aggregation %s after 1 of 2 snapshots, want scheduled", st)
	}
	if err := hs.h.HandleMember(ctx, payload(1)); err != nil {
		t.Fatal(err)
	}
	if st := aggState(); st != asynq.TaskStatePending {
		t.Errorf("aggregation %s after the last snapshot, want pending (promoted)", st)
	}
	noop(1)
	noop(0)
	if st := aggState(); st != asynq.TaskStatePending {
		t.Errorf("aggregation %s after duplicates, want pending", st)
	}
	if fan := hs.fanIn(j.ID); fan != "2" {
		t.Errorf("fan-in counter %s, want 2", fan)
	}
	if got := hs.job(j.ID); got.Status != job.StatusRunning {
		t.Errorf("job status %s, want running", got.Status)
	}
}
