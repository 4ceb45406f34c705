package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/backlog"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// serverOn returns the handler of an api on db configured by env (a
// replica of its own: its own view of the backlog).
func serverOn(t *testing.T, db redistest.DB, env map[string]string) http.Handler {
	t.Helper()
	env["REDIS_URL"] = db.URL
	cfg, err := config.LoadFrom(env)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(cfg, api.Deps{Redis: db.NewClient(t), Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Handler()
}

// fill puts n member tasks of another job on the user member queue.
func fill(t *testing.T, db redistest.DB, n int) {
	t.Helper()
	c := asynq.NewClientFromRedisClient(db.NewClient(t))
	for i := range n {
		_, err := c.Enqueue(asynq.NewTask(tasks.TypeMember, []byte("{}")), asynq.Queue(tasks.QueueSnapshot),
			asynq.TaskID(tasks.MemberTaskID("filler", i)))
		if err != nil {
			t.Fatal(err)
		}
	}
}

// queued counts the tasks on the member and aggregate queues, and the
// jobs stored.
func queued(t *testing.T, db redistest.DB) (int, int) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	n := 0
	for _, q := range []string{tasks.QueueSnapshot, tasks.QueueAggregate} {
		if info, err := insp.GetQueueInfo(q); err == nil {
			n += info.Size
		}
	}
	jobs, err := db.Client.Keys(context.Background(), "tt:{*}:job").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n, len(jobs)
}

// acceptedWait returns the expected_wait_ms of the job's job.accepted
// (nil when absent) and its number of members.
func acceptedWait(t *testing.T, db redistest.DB, id string) (*int64, int) {
	t.Helper()
	st := store.New(db.Client, time.Hour)
	evs, err := st.Events(t.Context(), id, "")
	if err != nil || len(evs) == 0 || evs[0].Type != events.JobAccepted {
		t.Fatalf("events of %s: %v %v", id, evs, err)
	}
	var d events.AcceptedData
	if err := json.Unmarshal(evs[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	j, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.ExpectedWaitMS, len(j.Members)
}

const (
	ttBody       = `{"question":"What are the best AI models?","time_points":["2020-01-01","2022-01-01","today"]}`
	ensembleBody = `{"question":"Is nuclear power safe?","models":["m1","m2"]}`
)

// With the limit off every job is accepted, its job.accepted telling the
// wait its calls join: 10 calls ahead at a capacity of 2, the typical
// call the default.
func TestExpectedWaitAccepted(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	h := serverOn(t, db, map[string]string{"LLM_MAX_IN_FLIGHT": "2"})
	fill(t, db, 10)
	rec := send(h, "/api/time-travel", ttBody, nil)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil {
		t.Fatal(err)
	}
	wait, n := acceptedWait(t, db, acc.JobID)
	want := (10 + int64(n) - 2) * backlog.DefaultCall.Milliseconds() / 2
	if wait == nil || *wait != want {
		t.Fatalf("expected_wait_ms %v, want %d (%d members)", wait, want, n)
	}

	get := httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/api/monitoring/stats", nil))
	var stats api.StatsResponse
	if err := json.Unmarshal(get.Body.Bytes(), &stats); err != nil || get.Code != http.StatusOK || stats.Backlog == nil {
		t.Fatalf("stats %d %s", get.Code, get.Body)
	}
	b := *stats.Backlog
	calls := 10 + int64(n)
	if b.MemberCalls != calls || b.Capacity != 2 || b.TypicalCallMS != backlog.DefaultCall.Milliseconds() ||
		b.ExpectedWaitMS != (calls+1-2)*b.TypicalCallMS/2 || b.MaxBacklogMS != 0 || b.TypicalFromJobs {
		t.Fatalf("backlog %+v, want %d calls", b, calls)
	}
}

// Over MAX_BACKLOG_SECONDS (or the job's deadline) a new job of any kind
// is refused with 503 overloaded and Retry-After, and nothing is queued
// or stored; a request that joins a job in flight is still accepted.
func TestOverloaded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		env    map[string]string
		filler int
		path   string
		body   string
		limit  time.Duration
	}{
		{"time travel over the limit", map[string]string{"MAX_BACKLOG_SECONDS": "30"}, 20, "/api/time-travel", ttBody, 30 * time.Second},
		{"ensemble over the limit", map[string]string{"MAX_BACKLOG_SECONDS": "30"}, 20, "/api/ensemble", ensembleBody, 30 * time.Second},
		{"over the deadline", map[string]string{"MAX_BACKLOG_SECONDS": "3600", "JOB_DEADLINE": "60s"}, 20, "/api/time-travel", ttBody, 60 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			tt.env["LLM_MAX_IN_FLIGHT"] = "1"
			tt.env["LLM_MODEL"], tt.env["LLM_ALLOWED_MODELS"] = "m1", "m2"
			h := serverOn(t, db, tt.env)
			fill(t, db, tt.filler)
			tasksBefore, jobsBefore := queued(t, db)
			rec := send(h, tt.path, tt.body, nil)
			e := errorOf(t, rec)
			if rec.Code != http.StatusServiceUnavailable || e.Code != api.CodeOverloaded || e.Message == "" {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			// The last of the job's n calls waits for filler+n-1 calls,
			// one at a time, 10 s each; the backlog is under the limit
			// once that wait has dropped by the excess.
			ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
			if err != nil || ra < 1 {
				t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
			minWait := time.Duration(tt.filler) * backlog.DefaultCall
			if got := time.Duration(ra) * time.Second; got < minWait-tt.limit || got > time.Hour {
				t.Errorf("Retry-After %s, want at least %s", got, minWait-tt.limit)
			}
			if tasksAfter, jobsAfter := queued(t, db); tasksAfter != tasksBefore || jobsAfter != jobsBefore {
				t.Fatalf("queued %d tasks and stored %d jobs before, %d and %d after", tasksBefore, jobsBefore, tasksAfter, jobsAfter)
			}
			// The refused job holds no quota slot: the key's running jobs
			// are none.
			get := httptest.NewRecorder()
			h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/api/usage", nil))
			var u api.UsageView
			if err := json.Unmarshal(get.Body.Bytes(), &u); err != nil || u.Usage.RunningJobs != 0 || u.Usage.StoredJobs != 0 {
				t.Fatalf("usage %d %s", get.Code, get.Body)
			}
		})
	}
}

// A request identical to a job in flight joins it even when the service
// is overloaded: it queues no call of its own.
func TestOverloadedJoins(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	first := serverOn(t, db, map[string]string{"LLM_MAX_IN_FLIGHT": "1"})
	if rec := send(first, "/api/time-travel", ttBody, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	fill(t, db, 50)
	// Another replica, whose first reading sees the backlog.
	h := serverOn(t, db, map[string]string{"LLM_MAX_IN_FLIGHT": "1", "MAX_BACKLOG_SECONDS": "5"})
	rec := send(h, "/api/time-travel", ttBody, nil)
	var acc api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &acc); err != nil || rec.Code != http.StatusAccepted || !acc.Joined {
		t.Fatalf("identical request: %d %s", rec.Code, rec.Body)
	}
	other := strings.Replace(ttBody, "best", "worst", 1)
	if rec := send(h, "/api/time-travel", other, nil); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("new job: %d %s", rec.Code, rec.Body)
	}
}
