package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/intake"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/lifecycle"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// bundle is a lifecycle on a database of its own, with the intake that
// submits its jobs (sharing its in-flight registry, as the processes do)
// and the collaborators the tests look at.
type bundle struct {
	db       redistest.DB
	life     *lifecycle.Lifecycle
	in       *intake.Intake
	store    *store.Store
	insp     *asynq.Inspector
	inflight *cache.Inflight
	samples  *monitoring.Store
}

// setup wires a bundle; noWebhooks leaves the lifecycle without a webhook
// queue, as a process wired without one.
func setup(t *testing.T, noWebhooks bool) bundle {
	t.Helper()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enq := tasks.NewEnqueuer(asynq.NewClientFromRedisClient(db.Client), 3, time.Minute)
	inflight := cache.NewInflight(db.Client)
	o := lifecycle.Options{Store: st, Webhooks: enq, WebhookRetries: 5, Inspector: insp, Inflight: inflight}
	if noWebhooks {
		o.Webhooks = nil
	}
	life := lifecycle.New(o)
	in := intake.New(intake.Options{
		Store: st, Enqueuer: enq, Inspector: insp, Inflight: inflight, Lifecycle: life,
		Kinds: kinds.Registry(), Env: jobkind.Env{Model: "m", Extraction: "x", Narrative: "n"}, Deadline: time.Minute,
	})
	return bundle{db: db, life: life, in: in, store: st, insp: insp, inflight: inflight, samples: monitoring.New(db.Client)}
}

// spec is a time-travel request of two time points.
func spec(question, callback string) job.Spec {
	s := timetravel.Spec(question, timetravel.Params{
		Complexity: timetravel.ComplexityStandard,
		TimePoints: []timetravel.TimePoint{{Date: "2023-01-01", Label: "January 2023"}, {Date: "2024-05-01", Label: "May 2024"}},
	})
	s.CallbackURL = callback
	return s
}

// submit submits s (as a warming job when warm) and returns its job.
func (b bundle) submit(t *testing.T, s job.Spec, warm bool) *job.Job {
	t.Helper()
	submit := b.in.Submit
	if warm {
		submit = b.in.Warm
	}
	out, err := submit(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return out.Job
}

// holds reports whether fp's in-flight entry is still held: another job
// cannot claim it.
func (b bundle) holds(t *testing.T, fp string) bool {
	t.Helper()
	_, ok, err := b.inflight.Claim(context.Background(), fp, "probe", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return !ok
}

// sampled reports whether the monitoring samples hold jobID's.
func (b bundle) sampled(t *testing.T, jobID string) bool {
	t.Helper()
	recent, err := b.samples.Recent(context.Background(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(recent, func(s monitoring.Sample) bool { return s.JobID == jobID })
}

// task returns the state of the task id on queue, or "" when there is none.
func (b bundle) task(t *testing.T, queue, id string) string {
	t.Helper()
	info, err := b.insp.GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return info.State.String()
}

// observed is the number of jobs of status on the job duration metric.
func observed(t *testing.T, status job.Status) uint64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.JobDuration.WithLabelValues(string(status)).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// Ended runs the once-per-job effects of an end: the in-flight entry is
// released for every job, and the timings are observed and sampled only
// for jobs people wait for. The tests of each status run one after the
// other: the metrics are the process's.
func TestEnded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		warm    bool
		status  job.Status // each case its own: the metric counts per status
		sampled bool
	}{
		{"a user job", false, job.StatusFailed, true},
		{"a warming job: no client, no timings", true, job.StatusPartial, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, false)
			j := b.submit(t, spec("Who won the cup? "+tt.name, ""), tt.warm)
			if j.Fingerprint == "" || !b.holds(t, j.Fingerprint) {
				t.Fatalf("job %s holds no in-flight entry (fingerprint %q)", j.ID, j.Fingerprint)
			}
			before := observed(t, tt.status)
			if err := b.store.Finish(context.Background(), j.ID, tt.status, "ended by the test", nil); err != nil {
				t.Fatal(err)
			}
			ended := b.life.Ended(context.Background(), j.ID)
			if ended == nil || ended.ID != j.ID || ended.Status != tt.status {
				t.Fatalf("Ended returned %+v, want job %s %s", ended, j.ID, tt.status)
			}
			if b.holds(t, j.Fingerprint) {
				t.Error("the in-flight entry is still held")
			}
			if got := b.sampled(t, j.ID); got != tt.sampled {
				t.Errorf("sampled %v, want %v", got, tt.sampled)
			}
			want := before
			if tt.sampled {
				want++
			}
			if got := observed(t, tt.status); got != want {
				t.Errorf("%d jobs %s observed, want %d", got, tt.status, want)
			}
		})
	}
	t.Run("a job that is gone", func(t *testing.T) {
		b := setup(t, false)
		if j := b.life.Ended(context.Background(), "00000000-0000-7000-8000-000000000000"); j != nil {
			t.Errorf("Ended of a missing job returned %+v, want nil", j)
		}
	})
}

// QueueWebhook queues the delivery of an ended job with a callback URL
// once, however often it is called, and nothing otherwise.
func TestQueueWebhook(t *testing.T) {
	t.Parallel()
	const callback = "https://receiver.example/hook"
	tests := []struct {
		name       string
		callback   string
		end        bool
		delivered  bool // the delivery has its outcome already
		noWebhooks bool // the process cannot queue webhooks
		queued     bool
	}{
		{"ended with a callback URL", callback, true, false, false, true},
		{"ended without one", "", true, false, false, false},
		{"not ended", callback, false, false, false, false},
		{"delivered already", callback, true, true, false, false},
		{"no webhook queue in this process", callback, true, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t, tt.noWebhooks)
			j := b.submit(t, spec("What is the capital? "+tt.name, tt.callback), false)
			if tt.end {
				if err := b.store.Finish(ctx, j.ID, job.StatusCompleted, "", nil); err != nil {
					t.Fatal(err)
				}
			}
			if tt.delivered {
				if _, err := b.store.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 200}); err != nil {
					t.Fatal(err)
				}
			}
			// Twice, with the job read and without: repeats are harmless.
			for _, given := range []*job.Job{nil, j} {
				if given != nil {
					var err error
					if given, err = b.store.Get(ctx, j.ID); err != nil {
						t.Fatal(err)
					}
				}
				if err := b.life.QueueWebhook(ctx, j.ID, given); err != nil {
					t.Fatalf("QueueWebhook: %v", err)
				}
			}
			state := b.task(t, tasks.QueueWebhook, tasks.WebhookTaskID(j.ID))
			if (state != "") != tt.queued {
				t.Errorf("webhook task %q, want queued: %v", state, tt.queued)
			}
			got, err := b.store.Get(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			pending := got.Webhook != nil && got.Webhook.Status == job.WebhookPending
			if pending != tt.queued {
				t.Errorf("webhook state %+v, want pending: %v", got.Webhook, tt.queued)
			}
		})
	}
	t.Run("a job that is gone", func(t *testing.T) {
		t.Parallel()
		b := setup(t, false)
		if err := b.life.QueueWebhook(context.Background(), "00000000-0000-7000-8000-000000000000", nil); err != nil {
			t.Errorf("QueueWebhook of a missing job: %v, want nil", err)
		}
	})
}

// Cancel ends the work of the last caller that wants it, with the effects
// of its end; a caller of a shared job only leaves it; a job that ended is
// ErrEnded.
func TestCancel(t *testing.T) {
	t.Parallel()
	const callback = "https://receiver.example/hook"
	tests := []struct {
		name string
		// callback is the job's callback URL; shared submits the request
		// twice (a second caller joins) and cancels as the second one.
		callback string
		shared   bool
		// before ends the job (or detaches the caller) before the cancel.
		before   func(t *testing.T, b bundle, h store.Head)
		canceled bool
		err      error
	}{
		{name: "the only caller", canceled: true},
		{name: "the only caller, with a callback URL", callback: callback, canceled: true},
		{name: "one caller of a shared job", shared: true},
		{name: "a job that ended", before: func(t *testing.T, b bundle, h store.Head) {
			if err := b.store.Finish(context.Background(), h.Work, job.StatusCompleted, "", nil); err != nil {
				t.Fatal(err)
			}
		}, err: lifecycle.ErrEnded},
		{name: "twice", before: func(t *testing.T, b bundle, h store.Head) {
			if _, err := b.life.Cancel(context.Background(), h); err != nil {
				t.Fatal(err)
			}
		}, err: lifecycle.ErrEnded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t, false)
			s := spec("Which is the longest river? "+tt.name, tt.callback)
			j := b.submit(t, s, false)
			work := j.ID
			if tt.shared {
				j = b.submit(t, s, false)
			}
			h, err := b.store.Head(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if h.Work != work {
				t.Fatalf("caller %s works on %s, want %s", h.ID, h.Work, work)
			}
			if tt.before != nil {
				tt.before(t, b, h)
			}
			canceled, err := b.life.Cancel(ctx, h)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("Cancel: %v, want %v", err, tt.err)
			}
			if canceled != tt.canceled {
				t.Errorf("work canceled %v, want %v", canceled, tt.canceled)
			}
			if tt.err != nil {
				return
			}
			got, err := b.store.Get(ctx, work)
			if err != nil {
				t.Fatal(err)
			}
			if canceled != (got.Status == job.StatusCanceled) {
				t.Errorf("work %s is %s after the cancel", work, got.Status)
			}
			// The ended work's effects: its in-flight entry released (a
			// job with a callback URL holds none), its sample recorded,
			// its members' tasks withdrawn, and its webhook queued before
			// the aggregation task, its safety net, is withdrawn.
			if held := tt.callback == "" && b.holds(t, got.Fingerprint); tt.callback == "" && held == canceled {
				t.Errorf("in-flight entry held: %v, want %v", held, !canceled)
			}
			if sampled := b.sampled(t, work); sampled != canceled {
				t.Errorf("sampled %v, want %v", sampled, canceled)
			}
			for i := range got.Members {
				if state := b.task(t, tasks.QueueSnapshot, tasks.MemberTaskID(work, i)); (state == "") != canceled {
					t.Errorf("member task %d: %q after the cancel (work canceled: %v)", i, state, canceled)
				}
			}
			webhook := b.task(t, tasks.QueueWebhook, tasks.WebhookTaskID(work))
			if (webhook != "") != (canceled && tt.callback != "") {
				t.Errorf("webhook task %q, want one: %v", webhook, canceled && tt.callback != "")
			}
			if state := b.task(t, tasks.QueueAggregate, tasks.AggregateTaskID(work)); (state == "") != canceled {
				t.Errorf("aggregation task %q after the cancel (work canceled: %v)", state, canceled)
			}
		})
	}
}
