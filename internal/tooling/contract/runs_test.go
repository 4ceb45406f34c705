package contract

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/ensemble"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/llm"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// requests holds a request body of each registered kind, with every
// optional field that shows in its events set. A kind without one fails
// the test: add one with the kind.
var requests = map[string]string{
	timetravel.Name: `{"question":"How did people see working from home?","model":"sim-tt","complexity":"brief",
		"time_points":["2019-06-01",{"date":"2021-06-01","label":"Mid 2021"},"2023-06-01"]}`,
	ensemble.Name: `{"question":"Is coffee good for you?","models":["sim-a","sim-b","sim-c"],"synthesis_model":"sim-s"}`,
}

// simulator returns a client of a simulated provider (llmsim), closed at
// the end of the test.
func simulator(t *testing.T) *llm.Client {
	t.Helper()
	sim := llmsim.New(llmsim.Config{})
	srv := httptest.NewServer(sim)
	tr := llm.NewTransport()
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
		tr.CloseIdleConnections()
	})
	return llm.NewClient(llm.Options{BaseURL: srv.URL + "/v1", APIKey: "sim", APIType: "openai", Timeout: time.Minute, Transport: tr})
}

// runner runs jobs of one kind through the store the way the service does
// (intake's Create, the worker's member and aggregation steps, the api's
// cancel, the watchdog's deadline, the webhook's outcome), with the
// simulator's answers.
type runner struct {
	t    *testing.T
	ctx  context.Context
	st   *store.Store
	llm  *llm.Client
	kind jobkind.Kind
	env  jobkind.Env
	spec job.Spec
	plan []jobkind.Member
	// result is the live run's aggregation: later runs serve it "from the
	// result cache".
	result *job.Result
}

func (r *runner) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatalf("%s: %v", r.kind.Name(), err)
	}
}

// newJob returns a queued job of the runner's spec, as intake makes it.
func (r *runner) newJob(name string) *job.Job {
	r.t.Helper()
	now := time.Now().Truncate(time.Millisecond)
	j := &job.Job{ID: r.kind.Name() + "-" + name, Spec: r.spec, Noun: r.kind.Noun(), Status: job.StatusQueued,
		CreatedAt: now, Deadline: now.Add(time.Hour)}
	for i, m := range r.plan {
		j.Members = append(j.Members, job.Member{Index: i, Label: m.Label, Ref: m.Ref, Status: job.MemberPending})
	}
	acc, err := r.kind.Accepted(r.spec, j.Members)
	r.must(err)
	j.Accepted, err = json.Marshal(acc)
	r.must(err)
	return j
}

// create stores j.
func (r *runner) create(j *job.Job) string {
	r.t.Helper()
	_, err := r.st.Create(r.ctx, j)
	r.must(err)
	return j.ID
}

// answer streams member i's answer from the simulator as owner.
func (r *runner) answer(id string, i int, owner string) llm.Response {
	r.t.Helper()
	seq := 0
	resp, err := r.llm.Stream(r.ctx, r.plan[i].Request, func(text string) error {
		seq++
		return r.st.AppendMemberText(r.ctx, id, i, owner, seq, text)
	})
	r.must(err)
	return resp
}

// complete runs member i to completion with a fixed text.
func (r *runner) complete(id string, i int) {
	r.t.Helper()
	owner := "w-" + id
	_, _, err := r.st.StartMember(r.ctx, id, i, owner, r.plan[i].Request.Model)
	r.must(err)
	r.must(r.st.AppendMemberText(r.ctx, id, i, owner, 1, "An answer."))
	_, err = r.st.FinishMember(r.ctx, id, i, owner, store.MemberOutcome{Text: "An answer.", Model: r.plan[i].Request.Model, LLMAttempts: 1})
	r.must(err)
}

// aggregate runs the kind's parts over done as owner, as the worker does.
func (r *runner) aggregate(id, owner string, done []job.Member) *job.Result {
	r.t.Helper()
	parts, err := r.kind.Parts(r.spec, r.env, done)
	r.must(err)
	res := &job.Result{}
	for _, p := range parts {
		rec := job.Part{Name: p.Name, Model: p.Request.Model}
		switch {
		case p.Fixed != nil:
			rec.Value, err = json.Marshal(p.Fixed)
			r.must(err)
		case p.Stream:
			seq := 0
			resp, err := r.llm.Stream(r.ctx, p.Request, func(text string) error {
				seq++
				return r.st.AppendPartText(r.ctx, id, owner, p.Name, seq, text)
			})
			r.must(err)
			rec.Text = resp.Text
		default:
			resp, err := r.llm.Complete(r.ctx, p.Request)
			r.must(err)
			var v any = json.RawMessage(resp.Text)
			if p.Parse != nil {
				if v, err = p.Parse(resp.Text); err != nil {
					r.t.Fatalf("%s: the simulator's %s does not parse: %v", r.kind.Name(), p.Name, err)
				}
			}
			rec.Value, err = json.Marshal(v)
			r.must(err)
		}
		r.must(r.st.EmitPart(r.ctx, id, owner, rec, false))
		res.Set(rec)
	}
	return res
}

// runs runs one job of each path the contract test covers and returns
// their ids.
func (r *runner) runs() []string {
	r.t.Helper()
	return []string{r.live(), r.partsFailed(), r.resultCached(), r.whollyCached(), r.canceled(), r.expired(), r.shared()}
}

// live: the job comes with the expected wait of its calls; every member
// answers from the simulator, streamed; the first
// after a retried attempt, the last fails for good; the aggregation's
// first attempt dies and a second one runs every part; the job ends
// partial, and its webhook is delivered at the second attempt.
func (r *runner) live() string {
	j := r.newJob("live")
	wait := 1500 * time.Millisecond // as the api estimated it
	j.ExpectedWait = &wait
	id := r.create(j)
	last := len(r.plan) - 1
	for i := range r.plan {
		owner := "w1"
		_, _, err := r.st.StartMember(r.ctx, id, i, owner, r.plan[i].Request.Model)
		r.must(err)
		if i == 0 {
			r.must(r.st.AppendMemberText(r.ctx, id, i, owner, 1, "A start that dies"))
			_, err = r.st.FinishMember(r.ctx, id, i, owner, store.MemberOutcome{Err: errors.New("provider answered 503"), Retry: true, LLMAttempts: 1})
			r.must(err)
			owner = "w2"
			_, _, err = r.st.StartMember(r.ctx, id, i, owner, r.plan[i].Request.Model)
			r.must(err)
		}
		resp := r.answer(id, i, owner)
		out := store.MemberOutcome{Text: resp.Text, Model: resp.Model, LLMAttempts: 1}
		if i == last {
			out = store.MemberOutcome{Err: errors.New("provider answered 500"), LLMAttempts: 3}
		}
		_, err = r.st.FinishMember(r.ctx, id, i, owner, out)
		r.must(err)
	}
	_, err := r.st.BeginAggregate(r.ctx, id, "agg1")
	r.must(err)
	agg, err := r.st.BeginAggregate(r.ctx, id, "agg2")
	r.must(err)
	r.result = r.aggregate(id, "agg2", agg.Job.Completed())
	r.must(r.st.FinishAggregate(r.ctx, id, "agg2", job.StatusPartial, "1 of 3 missing", r.result))
	_, err = r.st.RecordWebhook(r.ctx, id, store.WebhookAttempt{Status: job.WebhookPending, StatusCode: 503, Error: "receiver answered 503", WebhookID: "msg_" + id})
	r.must(err)
	_, err = r.st.RecordWebhook(r.ctx, id, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 204, WebhookID: "msg_" + id})
	r.must(err)
	return id
}

// partsFailed: every part fails; the job fails, and so does its webhook.
func (r *runner) partsFailed() string {
	id := r.create(r.newJob("parts-failed"))
	for i := range r.plan {
		r.complete(id, i)
	}
	_, err := r.st.BeginAggregate(r.ctx, id, "agg")
	r.must(err)
	res := &job.Result{}
	for _, p := range r.result.Parts {
		rec := job.Part{Name: p.Name, Error: "provider answered 500"}
		r.must(r.st.EmitPart(r.ctx, id, "agg", rec, false))
		res.Set(rec)
	}
	r.must(r.st.FinishAggregate(r.ctx, id, "agg", job.StatusFailed, "aggregation failed", res))
	_, err = r.st.RecordWebhook(r.ctx, id, store.WebhookAttempt{Status: job.WebhookFailed, StatusCode: 410, Error: "receiver answered 410", WebhookID: "msg_" + id})
	r.must(err)
	return id
}

// resultCached: the aggregation is served from the result cache (the
// live run's), as the worker serves a hit.
func (r *runner) resultCached() string {
	id := r.create(r.newJob("result-cached"))
	for i := range r.plan {
		r.complete(id, i)
	}
	_, err := r.st.BeginAggregate(r.ctx, id, "agg")
	r.must(err)
	res := &job.Result{Cached: true}
	for _, p := range r.result.Parts {
		if p.Value == nil {
			r.must(r.st.AppendPartText(r.ctx, id, "agg", p.Name, 1, p.Text))
		}
		r.must(r.st.EmitPart(r.ctx, id, "agg", p, true))
		res.Set(p)
	}
	r.must(r.st.FinishAggregate(r.ctx, id, "agg", job.StatusCompleted, "", res))
	return id
}

// cachedMembers returns j with every member answered from the member
// cache at its creation.
func cachedMembers(j *job.Job, model string) *job.Job {
	for i := range j.Members {
		m := &j.Members[i]
		m.Status, m.Text, m.Model, m.Cached = job.MemberCompleted, "A cached answer.", model, true
		m.StartedAt, m.CompletedAt = j.CreatedAt.UnixMilli(), j.CreatedAt.UnixMilli()
	}
	return j
}

// whollyCached: the whole job is served from the caches (stored by
// reference; its events are made on every read), and its webhook is
// delivered.
func (r *runner) whollyCached() string {
	j := cachedMembers(r.newJob("wholly-cached"), r.plan[0].Request.Model)
	res := *r.result
	res.Cached = true
	j.Status, j.FinishedAt, j.Result = job.StatusCompleted, j.CreatedAt, &res
	id := r.create(j)
	_, err := r.st.RecordWebhook(r.ctx, id, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 200, WebhookID: "msg_" + id})
	r.must(err)
	return id
}

// canceled: the first member comes from the member cache, the second is
// under way when the caller cancels.
func (r *runner) canceled() string {
	j := r.newJob("canceled")
	first := cachedMembers(&job.Job{CreatedAt: j.CreatedAt, Members: j.Members[:1]}, r.plan[0].Request.Model)
	j.Members[0] = first.Members[0]
	id := r.create(j)
	_, _, err := r.st.StartMember(r.ctx, id, 1, "w", r.plan[1].Request.Model)
	r.must(err)
	r.must(r.st.Finish(r.ctx, id, job.StatusCanceled, job.CanceledByClient, nil))
	return id
}

// expired: the deadline passes while a member writes.
func (r *runner) expired() string {
	id := r.create(r.newJob("expired"))
	_, _, err := r.st.StartMember(r.ctx, id, 0, "w", r.plan[0].Request.Model)
	r.must(err)
	r.must(r.st.AppendMemberText(r.ctx, id, 0, "w", 1, "Half an"))
	r.must(r.st.Finish(r.ctx, id, job.StatusFailed, "deadline passed", nil))
	return id
}

// shared: a second caller joins the job and cancels its part (the work
// goes on for the first), then the first cancels the work.
func (r *runner) shared() string {
	j := r.newJob("shared")
	id := r.create(j)
	h := &job.Job{ID: id + "-handle", Spec: r.spec, CreatedAt: j.CreatedAt, Deadline: j.Deadline}
	h.Spec.Owner = "another"
	r.must(r.st.CreateHandle(r.ctx, h, id))
	last, err := r.st.Detach(r.ctx, id, h.ID)
	r.must(err)
	if last {
		r.t.Fatal("the first caller still holds the work")
	}
	if last, err = r.st.Detach(r.ctx, id, id); err != nil || !last {
		r.t.Fatalf("the last caller's cancel: %v, %v", last, err)
	}
	r.must(r.st.Finish(r.ctx, id, job.StatusCanceled, job.CanceledByClient, nil))
	return id
}
