package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// eventsSecret signs events links in these tests.
const eventsSecret = "events-secret-of-the-e2e-tests-0123456789abcdef"

// accessStack runs a stack that requires API keys.
func accessStack(t *testing.T) env {
	t.Helper()
	return startStack(t, 2, map[string]string{
		"AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": eventsSecret,
	}, nil)
}

// newKey creates an API key with limits l on e's Redis.
func newKey(t *testing.T, e env, name string, l auth.Limits) (string, auth.Key) {
	t.Helper()
	key, k, err := auth.New(e.rdb).Create(context.Background(), name, l)
	if err != nil {
		t.Fatal(err)
	}
	return key, k
}

// answer is a raw HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("status %d, body not JSON: %v: %.200s", a.status, err, a.body)
	}
}

// errorOf decodes the JSON error model of a.
func (a answer) errorOf(t *testing.T) (code, limit, msg string) {
	t.Helper()
	var b struct {
		Error struct{ Code, Limit, Message string } `json:"error"`
	}
	a.json(t, &b)
	if b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("status %d: not the JSON error model: %s", a.status, a.body)
	}
	return b.Error.Code, b.Error.Limit, b.Error.Message
}

// call sends one request with key (none when empty).
func call(t *testing.T, e env, method, path, key, body string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.apiURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// Two keys: neither reaches the other's jobs, each caller of a shared job
// has its own, and Idempotency-Keys are per key.
func TestTwoKeysOwnTheirJobs(t *testing.T) {
	t.Parallel()
	e := accessStack(t)
	keyA, _ := newKey(t, e, "alice", auth.Limits{})
	keyB, _ := newKey(t, e, "bob", auth.Limits{})
	a := client.New(e.apiURL, client.WithAPIKey(keyA), client.WithHTTPClient(contractClient(t, e.apiURL)))
	b := client.New(e.apiURL, client.WithAPIKey(keyB), client.WithHTTPClient(contractClient(t, e.apiURL)))
	ctx := context.Background()

	// Without a key, or with a bad one: 401 with a challenge, JSON only.
	for _, key := range []string{"", "ttk_0000000000000000_" + strings.Repeat("A", 43), "not a key"} {
		got := call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"Who may ask?"}`)
		code, _, msg := got.errorOf(t)
		if got.status != http.StatusUnauthorized || code != "unauthorized" || !strings.HasPrefix(got.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("key %q: %d %s %q", key, got.status, code, got.header.Get("WWW-Authenticate"))
		}
		if key != "" && strings.Contains(msg, key) {
			t.Fatalf("the 401 repeats the key: %s", msg)
		}
	}

	q := client.SubmitRequest{Question: "Which shared job is whose?", Model: "sim-2s"}
	accA, err := a.Submit(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	accB, err := b.Submit(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if !accB.Joined || accB.JobID == accA.JobID {
		t.Fatalf("B's submission: %+v; want its own job joined to A's %s", accB, accA.JobID)
	}
	// B reaches nothing of A's: 404, as for an unknown job.
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		got := call(t, e, m, "/api/jobs/"+accA.JobID, keyB, "")
		if code, _, _ := got.errorOf(t); got.status != http.StatusNotFound || code != "job_not_found" {
			t.Fatalf("B %s A's job: %d %s", m, got.status, code)
		}
	}
	if got := call(t, e, http.MethodGet, "/api/jobs/"+accA.JobID+"/events", keyB, ""); got.status != http.StatusNotFound {
		t.Fatalf("B reads A's events: %d", got.status)
	}
	// A's events link works without a header (a browser EventSource), for
	// A's job only.
	link := accA.Links.Events
	if !strings.Contains(link, "token=") {
		t.Fatalf("events link %q has no token", link)
	}
	tok := link[strings.Index(link, "token=")+len("token="):]
	if got := call(t, e, http.MethodGet, "/api/jobs/"+accB.JobID+"/events?token="+tok, "", ""); got.status != http.StatusUnauthorized {
		t.Fatalf("A's token on B's job: %d, want 401", got.status)
	}
	if got := call(t, e, http.MethodGet, "/api/jobs/"+accA.JobID+"/events?token="+tok+"x", "", ""); got.status != http.StatusUnauthorized {
		t.Fatalf("a tampered token: %d, want 401", got.status)
	}

	// B cancels: only B's part ends; A's job completes.
	v, err := b.Cancel(ctx, accB.JobID)
	if err != nil || v.Status != client.StatusCanceled {
		t.Fatalf("B cancels: %+v %v", v.Status, err)
	}
	evsB := collectWith(t, b, accB.JobID)
	if got := terminalStatus(t, evsB); got != "canceled" {
		t.Fatalf("B's stream ends %s, want canceled", got)
	}
	evsA := collectWith(t, a, accA.JobID)
	checkOrder(t, evsA, 4)
	if got := terminalStatus(t, evsA); got != "completed" {
		t.Fatalf("A's job ended %s after B canceled its part, want completed", got)
	}
	// The token link replays A's stream to a client without a header.
	if got := call(t, e, http.MethodGet, link, "", ""); got.status != http.StatusOK || !bytes.Contains(got.body, []byte("event: job.completed")) {
		t.Fatalf("events link: %d %.200s", got.status, got.body)
	}
	if v, _ := b.Job(ctx, accB.JobID); v.Status != client.StatusCanceled {
		t.Fatalf("B's job after A's completed: %s, want canceled", v.Status)
	}

	// Idempotency-Keys are per key: the same key with other bodies.
	post := func(key, question string) answer {
		req, _ := http.NewRequest(http.MethodPost, e.apiURL+"/api/time-travel", strings.NewReader(`{"question":"`+question+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Idempotency-Key", "order-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, header: resp.Header, body: body}
	}
	if got := post(keyA, "What is A asking?"); got.status != http.StatusAccepted {
		t.Fatalf("A with order-1: %d %s", got.status, got.body)
	}
	if got := post(keyB, "What is B asking?"); got.status != http.StatusAccepted {
		t.Fatalf("B with A's Idempotency-Key and another body: %d %s, want 202", got.status, got.body)
	}
	if got := post(keyA, "Something else?"); got.status != http.StatusUnprocessableEntity {
		t.Fatalf("A reusing its key with another body: %d, want 422", got.status)
	}

	// A model that is not offered: 422 listing the allowed ones.
	got := call(t, e, http.MethodPost, "/api/time-travel", keyA, `{"question":"Which model?","model":"gpt-4-32k"}`)
	var body struct {
		Error struct {
			Code    string   `json:"code"`
			Allowed []string `json:"allowed"`
		} `json:"error"`
	}
	got.json(t, &body)
	if got.status != http.StatusUnprocessableEntity || body.Error.Code != "model_not_allowed" || len(body.Error.Allowed) == 0 {
		t.Fatalf("unknown model: %d %s", got.status, got.body)
	}
	var models struct {
		Default string   `json:"default"`
		Models  []string `json:"models"`
	}
	call(t, e, http.MethodGet, "/api/models", keyA, "").json(t, &models)
	if models.Default != modelSnapshot || len(models.Models) < 2 {
		t.Fatalf("GET /api/models: %+v", models)
	}
}

func collectWith(t *testing.T, c *client.Client, id string) []client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var evs []client.Event
	if _, err := c.Events(ctx, id, "", func(ev client.Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	return evs
}

// checkQuotaHeaders asserts a 429 names limit and carries Retry-After and
// the RateLimit headers; it returns the Retry-After.
func checkQuotaHeaders(t *testing.T, got answer, limit string) time.Duration {
	t.Helper()
	code, l, _ := got.errorOf(t)
	if got.status != http.StatusTooManyRequests || code != "quota_exceeded" || l != limit {
		t.Fatalf("got %d %s %s, want 429 quota_exceeded %s", got.status, code, l, limit)
	}
	ra, err := strconv.Atoi(got.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", got.header.Get("Retry-After"))
	}
	if p := got.header.Get("RateLimit-Policy"); !strings.Contains(p, `"`+limit+`"`) || !strings.Contains(p, "q=") {
		t.Fatalf("RateLimit-Policy %q", p)
	}
	if r := got.header.Get("RateLimit"); !strings.Contains(r, "r=0") {
		t.Fatalf("RateLimit %q", r)
	}
	return time.Duration(ra) * time.Second
}

// Quotas: submissions per minute (recovering after the window), jobs
// running at once, the day's token budget, and stored jobs, which also
// bound the memory repeated cached questions take.
func TestQuotas(t *testing.T) {
	t.Parallel()
	e := accessStack(t)
	ctx := context.Background()

	t.Run("submissions per minute", func(t *testing.T) {
		const perMinute = 30 // one more every 2 s
		key, _ := newKey(t, e, "rate", auth.Limits{SubmissionsPerMinute: perMinute})
		var last answer
		for i := 0; i <= perMinute; i++ {
			last = call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"How fast may I ask?","model":"`+modelSlow+`"}`)
			if last.status != http.StatusAccepted {
				break
			}
		}
		wait := checkQuotaHeaders(t, last, "submissions_per_minute")
		if wait > 3*time.Second {
			t.Fatalf("Retry-After %v, want about 2s", wait)
		}
		waitUntil(t, 30*time.Second, func() bool {
			return call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"How fast may I ask?","model":"`+modelSlow+`"}`).status == http.StatusAccepted
		})
	})

	t.Run("running jobs", func(t *testing.T) {
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

	t.Run("tokens per day", func(t *testing.T) {
		key, k := newKey(t, e, "budget", auth.Limits{TokensPerDay: 200})
		c := client.New(e.apiURL, client.WithAPIKey(key), client.WithHTTPClient(contractClient(t, e.apiURL)))
		acc, err := c.Submit(ctx, client.SubmitRequest{Question: "How many tokens does this take?"})
		if err != nil {
			t.Fatal(err)
		}
		collectWith(t, c, acc.JobID)
		var u struct {
			Key struct {
				ID string `json:"id"`
			} `json:"key"`
			Usage struct {
				TokensToday int64 `json:"tokens_today"`
			} `json:"usage"`
		}
		call(t, e, http.MethodGet, "/api/usage", key, "").json(t, &u)
		if u.Key.ID != k.ID || u.Usage.TokensToday < 200 {
			t.Fatalf("usage after a job: %+v, want the key's %s with at least 200 tokens", u, k.ID)
		}
		wait := checkQuotaHeaders(t, call(t, e, http.MethodPost, "/api/time-travel", key, `{"question":"And one more?"}`), "tokens_per_day")
		if wait > 24*time.Hour {
			t.Fatalf("Retry-After %v, want at most until midnight UTC", wait)
		}
	})

	t.Run("stored jobs bound the memory of repeated cached questions", func(t *testing.T) {
		// Enough jobs that Redis's own noise (client buffers, its
		// allocator's pages) averages out.
		const stored = 400
		key, _ := newKey(t, e, "fill", auth.Limits{StoredJobs: stored})
		c := client.New(e.apiURL, client.WithAPIKey(key), client.WithHTTPClient(contractClient(t, e.apiURL)))
		// The largest question the api takes: 4,000 four-byte characters,
		// sent as \u escapes (the body of ~49 KB of the report).
		q := strings.Repeat("\U0001F600", job.MaxQuestionRunes-1) + "?"
		body, _ := json.Marshal(map[string]any{"question": q, "complexity": "brief"})
		escaped := bytes.ReplaceAll(body, []byte("\U0001F600"), []byte(`\ud83d\ude00`))
		first := call(t, e, http.MethodPost, "/api/time-travel", key, string(escaped))
		var acc struct {
			JobID string `json:"job_id"`
		}
		first.json(t, &acc)
		collectWith(t, c, acc.JobID)
		before := usedMemory(t, e)
		n := 0
		var last answer
		for {
			last = call(t, e, http.MethodPost, "/api/time-travel", key, string(escaped))
			if last.status != http.StatusAccepted {
				break
			}
			var a struct{ Cached bool }
			last.json(t, &a)
			if !a.Cached {
				t.Fatalf("repeat %d was not served from the caches: %s", n, last.body)
			}
			n++
		}
		checkQuotaHeaders(t, last, "stored_jobs")
		if n != stored-1 {
			t.Fatalf("%d repeats stored before the cap, want %d", n, stored-1)
		}
		grown := usedMemory(t, e) - before
		per := grown / int64(n)
		limit := int64(2048 + len(q))
		t.Logf("Redis grew %d bytes for %d cached jobs of a %d-byte question: %d bytes each (limit %d)", grown, n, len(q), per, limit)
		if per > limit {
			t.Fatalf("each cached job takes %d bytes of Redis, want at most %d", per, limit)
		}
	})
}

// usedMemory is Redis's used_memory.
func usedMemory(t *testing.T, e env) int64 {
	t.Helper()
	info, err := e.rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory in INFO")
	return 0
}
