package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/cache"
	"github.com/timetravel-ai/timetravel/internal/config"
	"github.com/timetravel-ai/timetravel/internal/jobkind"
	"github.com/timetravel-ai/timetravel/internal/tasks"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// accepted is the api's answer to a submission, as these tests read it.
type accepted struct {
	JobID           string `json:"job_id"`
	Status          string `json:"status"`
	Joined          bool   `json:"joined"`
	Cached          bool   `json:"cached"`
	CachedSnapshots int    `json:"cached_snapshots"`
	Error           struct {
		Code, Message, Field string
	} `json:"error"`
}

// post sends body to path with the given headers and decodes the answer.
func post(t *testing.T, e env, path, body string, header map[string]string) (int, http.Header, accepted) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.apiURL+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a accepted
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("POST %s: status %d, body not JSON: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, resp.Header, a
}

// snapshotCalls is the simulator's request count for the snapshot model.
func snapshotCalls(t *testing.T, e env) int64 {
	t.Helper()
	return simStats(t, e).Models[modelSnapshot].Requests
}

// cachedFlag reads the "cached" member of an event's data.
func cachedFlag(t *testing.T, ev client.Event) bool {
	t.Helper()
	var d struct {
		Cached bool `json:"cached"`
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatalf("%s data %s: %v", ev.Name, ev.Data, err)
	}
	return d.Cached
}

// simEnv is what the stack's kinds plan with: the snapshot model as the
// default, served by e's simulator (the stack's one provider).
func simEnv(e env) jobkind.Env {
	provider := config.DefaultProvider + " http://" + e.stack.Sim.Addr + "/v1"
	return jobkind.Env{Model: modelSnapshot, Extraction: modelExtract, Narrative: modelNarrative,
		ProviderOf: func(string) string { return provider }}
}

// snapKey is the Redis key of the cache entry of a snapshot answered by
// e's simulator.
func snapKey(e env, question, date, label string) string {
	spec := timetravel.Spec(question, timetravel.Params{
		TimePoints: []timetravel.TimePoint{{Date: date, Label: label}},
		Complexity: timetravel.ComplexityStandard,
	})
	plan, err := timetravel.Kind{}.Plan(spec, simEnv(e))
	if err != nil {
		panic(err) // a plan of a valid spec
	}
	return cache.MemberRedisKey(plan[0].CacheKey)
}

// memberPayloads are the member tasks of the time-travel job v as the api
// enqueues them on e's stack, by index.
func memberPayloads(t *testing.T, e env, v client.JobView) []tasks.MemberPayload {
	t.Helper()
	tps := make([]timetravel.TimePoint, len(v.Snapshots))
	for i, s := range v.Snapshots {
		tps[i] = timetravel.TimePoint{Date: s.Date, Label: s.Label}
	}
	spec := timetravel.Spec(v.Question, timetravel.Params{TimePoints: tps, Complexity: timetravel.Complexity(v.Complexity)})
	spec.Model = v.Model
	plan, err := timetravel.Kind{}.Plan(spec, simEnv(e))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]tasks.MemberPayload, len(plan))
	for i, m := range plan {
		out[i] = tasks.MemberPayload{JobID: v.ID, Kind: timetravel.Name, Index: i, Label: m.Label, Request: tasks.RequestOf(m.Request),
			CacheKey: m.CacheKey, Volatile: m.Volatile, DeadlineMS: v.Deadline.UnixMilli()}
	}
	return out
}

// scrape returns the Prometheus text at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A question asked again is answered from the caches at once, with the
// same events and no model call; a new date costs one snapshot call; the
// answer as of today expires on its own TTL while the past ones stay;
// bypassing the cache calls the models again.
func TestCacheServesRepeatsNewDatesAndExpiresToday(t *testing.T) {
	t.Parallel()
	const todayTTL = 3 * time.Second
	short := map[string]string{"CACHE_TODAY_TTL": todayTTL.String()}
	e := startStack(t, 1, short, short)
	const q = "What are the best AI models?"
	today := time.Now().UTC().Format(timetravel.DateLayout)
	past := []struct{ date, label string }{{"2023-01-01", "January 2023"}, {"2023-03-01", "March 2023"}, {"2024-05-01", "May 2024"}}

	// 1. First ask: every call is made.
	status, _, a := post(t, e, "/api/time-travel", `{"question":"`+q+`"}`, nil)
	if status != http.StatusAccepted || a.Cached || a.Joined || a.CachedSnapshots != 0 {
		t.Fatalf("first ask: %d %+v, want a new job with nothing cached", status, a)
	}
	if got := terminalStatus(t, collect(t, e, a.JobID)); got != "completed" {
		t.Fatalf("first job ended %s", got)
	}
	base := simStats(t, e)
	if n := base.Models[modelSnapshot].Requests; n != 4 {
		t.Fatalf("first job made %d snapshot calls, want 4", n)
	}
	for _, p := range past {
		if ttl := e.rdb.PTTL(context.Background(), snapKey(e, q, p.date, p.label)).Val(); ttl < 29*24*time.Hour {
			t.Errorf("snapshot %s cached for %v, want the past TTL (30 days)", p.date, ttl)
		}
	}
	if ttl := e.rdb.PTTL(context.Background(), snapKey(e, q, today, "Today")).Val(); ttl <= 0 || ttl > todayTTL {
		t.Errorf("today's snapshot cached for %v, want at most %v", ttl, todayTTL)
	}

	// 2. The same question, spelled otherwise (white space only: case and
	// punctuation count): served from the caches at once, with the whole
	// protocol, and no call.
	status, _, a = post(t, e, "/api/time-travel", `{"question":"  What are the best  AI models?  "}`, nil)
	if status != http.StatusAccepted || !a.Cached || a.Status != "completed" || a.CachedSnapshots != 4 {
		t.Fatalf("repeat: %d %+v, want a job served wholly from cache", status, a)
	}
	evs := collect(t, e, a.JobID)
	checkOrder(t, evs, 4)
	for _, ev := range evs {
		switch ev.Name {
		case client.EventJobCompleted, "snapshot.completed", "key_changes.completed", "narrative.completed":
			if !cachedFlag(t, ev) {
				t.Errorf("%s of the cached job is not marked cached: %s", ev.Name, ev.Data)
			}
		}
	}
	if countNamed(evs, "snapshot.delta") != 4 || countNamed(evs, "narrative.delta") != 1 {
		t.Errorf("cached job's deltas: %v, want one per snapshot and one narrative delta", names(evs))
	}
	if v := jobView(t, e, a.JobID); !v.Cached || v.Narrative == "" || len(v.KeyChanges) != 3 {
		t.Errorf("cached job view: cached %v, narrative %q, %d key changes", v.Cached, v.Narrative, len(v.KeyChanges))
	}
	if st := simStats(t, e); st.Total.Requests != base.Total.Requests {
		t.Fatalf("the repeat made %d calls, want none", st.Total.Requests-base.Total.Requests)
	}

	// 3. A new date: the four cached snapshots are reused, one is asked.
	body := `{"question":"` + q + `","time_points":["2023-01-01","2023-03-01","2024-05-01","2025-02-01","today"]}`
	status, _, a = post(t, e, "/api/time-travel", body, nil)
	if status != http.StatusAccepted || a.Cached || a.CachedSnapshots != 4 {
		t.Fatalf("new date: %d %+v, want a job with 4 snapshots from cache", status, a)
	}
	evs = collect(t, e, a.JobID)
	checkOrder(t, evs, 5)
	if got := terminalStatus(t, evs); got != "completed" {
		t.Fatalf("new-date job ended %s", got)
	}
	if n := snapshotCalls(t, e) - base.Models[modelSnapshot].Requests; n != 1 {
		t.Fatalf("the new date made %d snapshot calls, want 1", n)
	}
	cachedSnaps := 0
	for _, s := range jobView(t, e, a.JobID).Snapshots {
		if s.Cached {
			cachedSnaps++
			if s.Date == "2025-02-01" {
				t.Errorf("the new date's snapshot is marked cached")
			}
		}
	}
	if cachedSnaps != 4 {
		t.Errorf("%d snapshots marked cached, want 4", cachedSnaps)
	}

	// 4. Today's answer expires on its own TTL; the past ones stay.
	waitUntil(t, todayTTL+2*time.Second, func() bool {
		return e.rdb.Exists(context.Background(), snapKey(e, q, today, "Today")).Val() == 0
	})
	for _, p := range past {
		if e.rdb.Exists(context.Background(), snapKey(e, q, p.date, p.label)).Val() != 1 {
			t.Errorf("snapshot %s expired with today's", p.date)
		}
	}
	before := snapshotCalls(t, e)
	status, _, a = post(t, e, "/api/time-travel", `{"question":"`+q+`"}`, nil)
	if status != http.StatusAccepted || a.Cached || a.CachedSnapshots != 3 {
		t.Fatalf("after today expired: %d %+v, want 3 snapshots from cache", status, a)
	}
	if got := terminalStatus(t, collect(t, e, a.JobID)); got != "completed" {
		t.Fatalf("job ended %s", got)
	}
	if n := snapshotCalls(t, e) - before; n != 1 {
		t.Fatalf("after today expired: %d snapshot calls, want 1 (today)", n)
	}

	// The api counted the lookups and the calls the caches saved.
	api := scrape(t, "http://"+e.stack.API.Addr+"/metrics")
	for _, series := range []string{
		`timetravel_cache_lookups_total{result="hit",scope="job"} 1`,
		`timetravel_cache_lookups_total{result="partial",scope="job"} 2`,
		`timetravel_cache_lookups_total{result="miss",scope="job"} 1`,
		`timetravel_cache_llm_calls_saved_total{stage="snapshot"} 11`, // 4 + 4 + 3
		`timetravel_cache_llm_calls_saved_total{stage="narrative"} 1`,
	} {
		if !strings.Contains(api, series+"\n") {
			t.Errorf("api metrics lack %s", series)
		}
	}

	// 5. Bypass: every snapshot is asked again, and the cache is written.
	before = snapshotCalls(t, e)
	for _, body := range []string{`{"question":"` + q + `","cache":"bypass"}`, `{"question":"` + q + `","force_time_travel":true}`} {
		status, _, a = post(t, e, "/api/time-travel", body, nil)
		if status != http.StatusAccepted || a.Cached || a.CachedSnapshots != 0 {
			t.Fatalf("bypass %s: %d %+v, want nothing from cache", body, status, a)
		}
		if got := terminalStatus(t, collect(t, e, a.JobID)); got != "completed" {
			t.Fatalf("bypass job ended %s", got)
		}
	}
	if n := snapshotCalls(t, e) - before; n != 8 {
		t.Fatalf("two bypassing jobs made %d snapshot calls, want 8", n)
	}
}

// Twenty identical submissions at once make one job: one gets it started,
// the others join it; the model answers four snapshots, once each.
func TestConcurrentIdenticalSubmissionsShareOneJob(t *testing.T) {
	t.Parallel()
	e := startStack(t, 2, nil, nil)
	const n = 20
	answers := make([]accepted, n)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			statuses[i], _, answers[i] = post(t, e, "/api/time-travel", `{"question":"Who leads in EV sales?"}`, nil)
		})
	}
	close(start)
	wg.Wait()
	// Each caller gets a job of its own (a handle); they share one run.
	jobs := map[string]bool{}
	joined := 0
	for i, a := range answers {
		if statuses[i] != http.StatusAccepted {
			t.Fatalf("submission %d: %d %+v", i, statuses[i], a)
		}
		jobs[a.JobID] = true
		if a.Joined {
			joined++
		}
	}
	if len(jobs) != n || joined != n-1 {
		t.Fatalf("%d job ids, %d joined; want %d ids of which %d joined", len(jobs), joined, n, n-1)
	}
	for id := range jobs {
		evs := collect(t, e, id)
		checkOrder(t, evs, 4)
		if got := terminalStatus(t, evs); got != "completed" {
			t.Fatalf("the shared job ended %s", got)
		}
		var acc, done struct {
			JobID string `json:"job_id"`
		}
		_ = json.Unmarshal(evs[0].Data, &acc)
		_ = json.Unmarshal(evs[len(evs)-1].Data, &done)
		if acc.JobID != id || done.JobID != id {
			t.Fatalf("stream of %s names jobs %s and %s", id, acc.JobID, done.JobID)
		}
	}
	if c := snapshotCalls(t, e); c != 4 {
		t.Fatalf("%d snapshot calls, want 4", c)
	}
	// Once it has ended, the question no longer joins it: it is answered
	// from the caches.
	_, _, a := post(t, e, "/api/time-travel", `{"question":"Who leads in EV sales?"}`, nil)
	if a.Joined || !a.Cached || jobs[a.JobID] {
		t.Errorf("after the job ended: %+v, want a new job served from cache", a)
	}
}

// The same Idempotency-Key with the same body returns the first job, marked
// replayed; with another body it is refused.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, nil, nil)
	key := map[string]string{"Idempotency-Key": "order-7f3a"}
	body := `{"question":"How do vaccines work?","complexity":"brief"}`
	status, h, first := post(t, e, "/api/time-travel", body, key)
	if status != http.StatusAccepted || first.JobID == "" || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %+v (replayed %q)", status, first, h.Get("Idempotent-Replayed"))
	}
	// The same body, written otherwise (members reordered, spaces).
	status, h, again := post(t, e, "/api/time-travel", `{ "complexity": "brief", "question": "How do vaccines work?" }`, key)
	if status != http.StatusAccepted || again.JobID != first.JobID || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %+v (replayed %q), want job %s replayed", status, again, h.Get("Idempotent-Replayed"), first.JobID)
	}
	if got := terminalStatus(t, collect(t, e, first.JobID)); got != "completed" {
		t.Fatalf("job ended %s", got)
	}
	status, _, again = post(t, e, "/api/time-travel", body, key)
	if status != http.StatusAccepted || again.JobID != first.JobID || again.Status != "completed" {
		t.Fatalf("replay after the end: %d %+v", status, again)
	}
	status, _, other := post(t, e, "/api/time-travel", `{"question":"How do vaccines work?","complexity":"detailed"}`, key)
	if status != http.StatusUnprocessableEntity || other.Error.Code != "idempotency_key_reused" || other.Error.Field != "Idempotency-Key" {
		t.Fatalf("other body: %d %+v, want 422 idempotency_key_reused", status, other)
	}
	// (HTTP trims white space around a header value: an empty key is the
	// white-space case that arrives.)
	for _, bad := range []string{"", "caf\u00e9", string(bytes.Repeat([]byte("k"), 256))} {
		status, _, a := post(t, e, "/api/time-travel", body, map[string]string{"Idempotency-Key": bad})
		if status != http.StatusBadRequest || a.Error.Code != "invalid_header" {
			t.Errorf("key %.20q: %d %+v, want 400 invalid_header", bad, status, a)
		}
	}
	// A bad body is refused before the key is used: the key stays free.
	status, _, a := post(t, e, "/api/time-travel", `{"question":""}`, map[string]string{"Idempotency-Key": "fresh"})
	if status != http.StatusBadRequest || a.Error.Field != "question" {
		t.Fatalf("bad body: %d %+v", status, a)
	}
	status, _, a = post(t, e, "/api/time-travel", `{"question":"Is the key still free?"}`, map[string]string{"Idempotency-Key": "fresh"})
	if status != http.StatusAccepted || a.JobID == "" {
		t.Fatalf("the key refused after a bad body: %d %+v", status, a)
	}
}

// POST /api/cache/warm runs warming jobs on the warm queue; a user's
// question then finds everything cached.
func TestWarmEndpoint(t *testing.T) {
	t.Parallel()
	const adminToken = "admin-token-of-the-warm-endpoint-test-0123456789"
	e := startStack(t, 1, map[string]string{"ADMIN_TOKEN": adminToken}, nil)
	warmBody := `{"questions":["What is the tallest building?","Who won the last World Cup?"],"time_points":["2023-01-01","2024-05-01"]}`
	// Warming spends provider capacity: only the admin may ask for it.
	req, _ := http.NewRequest(http.MethodPost, e.apiURL+"/api/cache/warm", bytes.NewBufferString(warmBody))
	req.Header.Set("Content-Type", "application/json")
	expectError(t, req, http.StatusForbidden, "forbidden", "")

	// Warming jobs are the service's: the admin reads them.
	e.api = client.New(e.apiURL, client.WithAPIKey(adminToken), client.WithHTTPClient(contractClient(t, e.apiURL)))
	req, _ = http.NewRequest(http.MethodPost, e.apiURL+"/api/cache/warm", bytes.NewBufferString(warmBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var warm struct {
		Results []struct {
			Question string `json:"question"`
			Outcome  string `json:"outcome"`
			JobID    string `json:"job_id"`
		} `json:"results"`
	}
	err = json.NewDecoder(resp.Body).Decode(&warm)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted || len(warm.Results) != 2 {
		t.Fatalf("warm: %d %+v %v", resp.StatusCode, warm, err)
	}
	for _, r := range warm.Results {
		if r.Outcome != "queued" || r.JobID == "" {
			t.Fatalf("warm result %+v, want a queued job", r)
		}
		if got := terminalStatus(t, collect(t, e, r.JobID)); got != "completed" {
			t.Fatalf("warming job ended %s", got)
		}
		if v := jobView(t, e, r.JobID); !v.Warm {
			t.Errorf("warming job %s not marked warm", r.JobID)
		}
	}
	calls := simStats(t, e).Total.Requests
	status, _, a := post(t, e, "/api/time-travel", `{"question":"What is the tallest building?","time_points":["2023-01-01","2024-05-01"]}`, nil)
	if status != http.StatusAccepted || !a.Cached {
		t.Fatalf("after warming: %d %+v, want served from cache", status, a)
	}
	if n := simStats(t, e).Total.Requests - calls; n != 0 {
		t.Errorf("a warmed question made %d calls", n)
	}
	// Warming it again does nothing.
	req, _ = http.NewRequest(http.MethodPost, e.apiURL+"/api/cache/warm", bytes.NewBufferString(
		`{"questions":["What is the tallest building?"],"time_points":["2023-01-01","2024-05-01"]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	warm.Results = nil
	err = json.NewDecoder(resp.Body).Decode(&warm)
	resp.Body.Close()
	if err != nil || len(warm.Results) != 1 || warm.Results[0].Outcome != "cached" || warm.Results[0].JobID != "" {
		t.Fatalf("warming a cached question: %+v %v, want outcome cached and no job", warm, err)
	}

	for _, c := range []struct{ body, field string }{
		{`{}`, "questions"},
		{`{"questions":[]}`, "questions"},
		{`{"questions":["ok?",""]}`, "questions[1]"},
		{`{"questions":["ok?"],"time_points":["2999-01-01"]}`, "time_points[0]"},
		{`{"questions":["ok?"],"complexity":"huge"}`, "complexity"},
		{`{"questions":["ok?"],"callback_url":"https://x"}`, "callback_url"},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.apiURL+"/api/cache/warm", bytes.NewBufferString(c.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		code := "invalid_field"
		if c.field == "callback_url" {
			code = "unknown_field"
		}
		expectError(t, req, http.StatusBadRequest, code, c.field)
	}
}

// The configured questions are warmed by the scheduler on the warm queue,
// never with more provider requests in flight than warming's share, and
// people's questions then find them cached.
func TestPeriodicWarmingStaysInItsShare(t *testing.T) {
	t.Parallel()
	questions := []string{
		"What are the best AI models?", "Who leads in EV sales?", "What is the tallest building?",
		"How do vaccines work?", "Which language is most popular?", "What is the largest company?",
	}
	warmEnv := map[string]string{
		"CACHE_WARM_QUESTIONS":   strings.Join(questions, "\n"),
		"CACHE_WARM_SCHEDULE":    "@every 1s",
		"CACHE_WARM_CONCURRENCY": "4",
		"CACHE_WARM_SHARE":       "0.5",
		"LLM_MAX_IN_FLIGHT":      "4", // warming's share: 2 in flight
	}
	e := startStack(t, 2, nil, warmEnv)
	// The result cache's entries: one per warmed question once done.
	results := strings.TrimSuffix(cache.ResultRedisKey("x"), cache.Identity("x")) + "*"
	waitUntil(t, 45*time.Second, func() bool {
		keys, err := e.rdb.Keys(context.Background(), results).Result()
		return err == nil && len(keys) >= len(questions)
	})
	st := simStats(t, e)
	if st.Total.PeakInFlight > 2 {
		t.Errorf("warming had %d requests in flight at the provider, want at most its share of 2", st.Total.PeakInFlight)
	}
	if n := st.Models[modelSnapshot].Requests; n != int64(4*len(questions)) {
		t.Errorf("warming made %d snapshot calls, want %d (each once, whatever the ticks)", n, 4*len(questions))
	}
	for _, q := range questions {
		status, _, a := post(t, e, "/api/time-travel", `{"question":"`+q+`"}`, nil)
		if status != http.StatusAccepted || !a.Cached {
			t.Errorf("%q after warming: %d %+v, want served from cache", q, status, a)
		}
	}
}
