package api_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// listServer is an api on its own database with env set over the test
// defaults, and two keys of it.
func listServer(t testing.TB, env map[string]string) (http.Handler, redistest.DB, [2]string) {
	t.Helper()
	db := redistest.New(t)
	vars := map[string]string{"REDIS_URL": db.URL, "JOB_DEADLINE": "60s", "ADMIN_TOKEN": testAdminToken}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.LoadFrom(vars)
	if err != nil {
		t.Fatal(err)
	}
	var keys [2]string
	for i := range keys {
		keys[i], _, err = auth.New(db.Client).Create(t.Context(), fmt.Sprint("key", i), auth.Limits{})
		if err != nil {
			t.Fatal(err)
		}
	}
	srv := api.New(cfg, api.Deps{Redis: db.Client, Kinds: kinds.Registry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Handler(), db, keys
}

func bearer(key string) string {
	if key == "" {
		return ""
	}
	return "Bearer " + key
}

// submitAs submits a time-travel job of question as key ("" anonymous)
// and returns its id.
func submitAs(t testing.TB, h http.Handler, key, question string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"question": question, "time_points": []string{"today"}})
	rec := request(h, http.MethodPost, "/api/time-travel", bearer(key), string(b))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	var a api.Accepted
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a.JobID
}

// listAs reads one page of GET /api/jobs as key.
func listAs(t testing.TB, h http.Handler, key, query string) api.JobList {
	t.Helper()
	rec := request(h, http.MethodGet, "/api/jobs"+query, bearer(key), "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/jobs%s: %d %s", query, rec.Code, rec.Body)
	}
	var l api.JobList
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	if l.Jobs == nil {
		t.Fatalf("jobs is not a list: %s", rec.Body)
	}
	return l
}

// listAll follows next_cursor from the first page with pages of limit,
// and returns the ids in the order listed and the number of pages.
func listAll(t *testing.T, h http.Handler, key string, limit int) ([]string, int) {
	t.Helper()
	var ids []string
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for pages := 1; ; pages++ {
		l := listAs(t, h, key, "?"+q.Encode())
		if len(l.Jobs) > limit {
			t.Fatalf("page %d holds %d jobs, limit %d", pages, len(l.Jobs), limit)
		}
		for _, j := range l.Jobs {
			ids = append(ids, j.JobID)
		}
		if l.NextCursor == "" {
			return ids, pages
		}
		if pages > 100 {
			t.Fatal("the pages do not end")
		}
		q.Set("cursor", l.NextCursor)
	}
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// TestListJobsPaging: a caller's jobs come newest first, across pages of
// every size, each once, with or without quotas.
func TestListJobsPaging(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  map[string]string
	}{
		{"quotas on", nil},
		{"quotas off", map[string]string{
			"QUOTA_SUBMISSIONS_PER_MINUTE": "0", "QUOTA_RUNNING_JOBS": "0", "QUOTA_STORED_JOBS": "0", "MAX_STORED_JOBS": "0",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, _, keys := listServer(t, tt.env)
			var made []string
			for i := range 7 {
				made = append(made, submitAs(t, h, keys[0], fmt.Sprintf("Paging question %d?", i)))
			}
			want := reversed(made)
			for _, limit := range []int{1, 2, 3, 7, 8, 100} {
				got, pages := listAll(t, h, keys[0], limit)
				if !slices.Equal(got, want) {
					t.Errorf("limit %d: listed %v, want %v", limit, got, want)
				}
				if wantPages := max((len(want)+limit-1)/limit, 1); pages != wantPages {
					t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
				}
			}
			// The default page holds them all (20 > 7), without a next page.
			l := listAs(t, h, keys[0], "")
			if len(l.Jobs) != len(want) || l.NextCursor != "" {
				t.Errorf("default page: %d jobs, next %q", len(l.Jobs), l.NextCursor)
			}
		})
	}
}

// TestListJobsPagingStable: jobs created between two pages do not shift
// the later pages (no repeat, no gap), and a job that expired is skipped.
func TestListJobsPagingStable(t *testing.T) {
	t.Parallel()
	h, db, keys := listServer(t, nil)
	var made []string
	for i := range 5 {
		made = append(made, submitAs(t, h, keys[0], fmt.Sprintf("Stable question %d?", i)))
	}
	first := listAs(t, h, keys[0], "?limit=2")
	if got := ids(first); !slices.Equal(got, []string{made[4], made[3]}) || first.NextCursor == "" {
		t.Fatalf("first page %v (next %q)", got, first.NextCursor)
	}
	newer := submitAs(t, h, keys[0], "A newer question?")
	// made[1] expires (its hash is gone) while its entry is still there.
	if err := db.Client.Del(t.Context(), store.JobKey(made[1])).Err(); err != nil {
		t.Fatal(err)
	}
	second := listAs(t, h, keys[0], "?limit=2&cursor="+url.QueryEscape(first.NextCursor))
	if got := ids(second); !slices.Equal(got, []string{made[2]}) || second.NextCursor == "" {
		t.Fatalf("second page %v (next %q): want [%s] and a next page", got, second.NextCursor, made[2])
	}
	third := listAs(t, h, keys[0], "?limit=2&cursor="+url.QueryEscape(second.NextCursor))
	if got := ids(third); !slices.Equal(got, []string{made[0]}) || third.NextCursor != "" {
		t.Fatalf("third page %v (next %q)", got, third.NextCursor)
	}
	if got := ids(listAs(t, h, keys[0], "?limit=1")); !slices.Equal(got, []string{newer}) {
		t.Fatalf("a fresh first page %v, want the newer job %s", got, newer)
	}
}

func ids(l api.JobList) []string {
	out := make([]string, len(l.Jobs))
	for i, j := range l.Jobs {
		out[i] = j.JobID
	}
	return out
}

// TestListJobsOwnership: each caller lists its own jobs only: two keys, a
// request of one that joins the other's identical job, the anonymous
// caller of a server that does not require keys, and the admin token
// (whose jobs and warming jobs are not listed).
func TestListJobsOwnership(t *testing.T) {
	t.Parallel()
	h, _, keys := listServer(t, nil)
	a1 := submitAs(t, h, keys[0], "Whose job is this?")
	b1 := submitAs(t, h, keys[1], "Another caller's question?")
	// Identical to a1: it may join a1's work; it is b's all the same.
	b2 := submitAs(t, h, keys[1], "Whose job is this?")
	anon1 := submitAs(t, h, "", "An anonymous question?")
	adminJob := submitAs(t, h, testAdminToken, "The admin's question?")

	for _, tt := range []struct {
		name, key string
		want      []string
	}{
		{"key a", keys[0], []string{a1}},
		{"key b", keys[1], []string{b2, b1}},
		{"anonymous", "", []string{anon1}},
		{"admin", testAdminToken, []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := listAs(t, h, tt.key, "")
			if got := ids(l); !slices.Equal(got, tt.want) {
				t.Fatalf("listed %v, want %v (admin's job %s)", got, tt.want, adminJob)
			}
			for _, j := range l.Jobs {
				// What the listing shows is what GET /api/jobs/{id} shows.
				rec := request(h, http.MethodGet, "/api/jobs/"+j.JobID, bearer(tt.key), "")
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s: %d", j.JobID, rec.Code)
				}
				var v struct {
					Kind, Status, Question string
					CreatedAt              time.Time `json:"created_at"`
					Cached                 bool
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
					t.Fatal(err)
				}
				if j.Kind != v.Kind || string(j.Status) != v.Status || j.Question != v.Question || !j.CreatedAt.Equal(v.CreatedAt) || j.Cached != v.Cached {
					t.Errorf("listed %+v, the job reads %+v", j, v)
				}
				if j.Kind != "timetravel" || j.FinishedAt != nil || j.TotalMS != nil {
					t.Errorf("listed %+v: want a time-travel job that has not ended", j)
				}
			}
		})
	}
}

// TestListJobsKeysRequired: without a key, a server that requires keys
// lists nothing (401).
func TestListJobsKeysRequired(t *testing.T) {
	t.Parallel()
	h, _, keys := listServer(t, map[string]string{"AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": testEventsSecret})
	id := submitAs(t, h, keys[0], "A question with a key?")
	if rec := request(h, http.MethodGet, "/api/jobs", "", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("no key: %d %s", rec.Code, rec.Body)
	}
	if got := ids(listAs(t, h, keys[0], "")); !slices.Equal(got, []string{id}) {
		t.Fatalf("listed %v, want [%s]", got, id)
	}
}

// TestListJobsBadInput: a bad limit or cursor is a 400 naming the field.
func TestListJobsBadInput(t *testing.T) {
	t.Parallel()
	h, _, _ := listServer(t, nil)
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct {
		name, query, field string
	}{
		{"limit zero", "limit=0", "limit"},
		{"limit above the maximum", "limit=101", "limit"},
		{"limit negative", "limit=-1", "limit"},
		{"limit not a number", "limit=ten", "limit"},
		{"limit with a fraction", "limit=1.5", "limit"},
		{"limit empty", "limit=", "limit"},
		{"cursor empty", "cursor=", "cursor"},
		{"cursor not base64", "cursor=%21%21", "cursor"},
		{"cursor without a job id", "cursor=" + b64("1700000000000"), "cursor"},
		{"cursor with a bad job id", "cursor=" + b64("1700000000000.nope"), "cursor"},
		{"cursor with a bad score", "cursor=" + b64("x.01890a5d-ac96-774b-bcce-b302099a8057"), "cursor"},
		{"cursor padded", "cursor=" + base64.URLEncoding.EncodeToString([]byte("1.01890a5d-ac96-774b-bcce-b302099a8057")), "cursor"},
		{"cursor too long", "cursor=" + b64(string(make([]byte, 200))), "cursor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := request(h, http.MethodGet, "/api/jobs?"+tt.query, "", "")
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var body api.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if body.Error.Code != api.CodeInvalidField || body.Error.Field != tt.field || body.Error.Message == "" {
				t.Fatalf("error %+v, want %s naming %s", body.Error, api.CodeInvalidField, tt.field)
			}
		})
	}
	// A well-formed cursor past every job is an empty last page.
	l := listAs(t, h, "", "?cursor="+b64("1.01890a5d-ac96-774b-bcce-b302099a8057"))
	if len(l.Jobs) != 0 || l.NextCursor != "" {
		t.Fatalf("past the end: %+v", l)
	}
}

// BenchmarkListJobs reads a page of 100 jobs (one index read and one
// pipeline of the jobs).
func BenchmarkListJobs(b *testing.B) {
	h, _, keys := listServer(b, map[string]string{
		"QUOTA_SUBMISSIONS_PER_MINUTE": "0", "QUOTA_RUNNING_JOBS": "0", "QUOTA_STORED_JOBS": "0",
	})
	for i := range api.MaxJobsLimit + 1 {
		submitAs(b, h, keys[0], fmt.Sprintf("Benchmark question %d?", i))
	}
	for b.Loop() {
		if l := listAs(b, h, keys[0], "?limit=100"); len(l.Jobs) != api.MaxJobsLimit || l.NextCursor == "" {
			b.Fatalf("%d jobs, next %q", len(l.Jobs), l.NextCursor)
		}
	}
}

// TestListJobsEnded: an ended job shows when it ended and its total time,
// as GET /api/jobs/{id} does.
func TestListJobsEnded(t *testing.T) {
	t.Parallel()
	h, db, keys := listServer(t, nil)
	id := submitAs(t, h, keys[0], "A question that ends?")
	if err := store.New(db.Client, time.Hour).Finish(t.Context(), id, "failed", "it broke", nil); err != nil {
		t.Fatal(err)
	}
	l := listAs(t, h, keys[0], "")
	if len(l.Jobs) != 1 {
		t.Fatalf("listed %+v", l)
	}
	j := l.Jobs[0]
	rec := request(h, http.MethodGet, "/api/jobs/"+id, bearer(keys[0]), "")
	var v struct {
		FinishedAt *time.Time `json:"finished_at"`
		Timings    struct {
			TotalMS *int64 `json:"total_ms"`
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.FinishedAt == nil || v.Timings.TotalMS == nil {
		t.Fatalf("GET: %v %s", err, rec.Body)
	}
	if j.Status != "failed" || j.FinishedAt == nil || !j.FinishedAt.Equal(*v.FinishedAt) || j.TotalMS == nil || *j.TotalMS != *v.Timings.TotalMS {
		t.Fatalf("listed %+v, the job reads finished at %v, total %d", j, v.FinishedAt, *v.Timings.TotalMS)
	}
}
