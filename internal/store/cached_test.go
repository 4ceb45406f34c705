package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/store"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
)

// servedJob returns a job as the intake makes one served wholly from the
// caches: ended at its creation, every snapshot and the result cached.
// Times have the millisecond precision the store keeps, so that the job
// read back can be compared with it.
func servedJob(id, question string, texts ...string) *job.Job {
	now := time.UnixMilli(time.Now().UnixMilli())
	members := make([]job.Member, len(texts))
	for i, text := range texts {
		m := dated(i, time.Date(2020+i, time.March, 1, 0, 0, 0, 0, time.UTC))
		m.Status, m.Text, m.Model, m.Cached = job.MemberCompleted, text, "m1", true
		m.StartedAt, m.CompletedAt = now.UnixMilli(), now.UnixMilli()
		members[i] = m
	}
	j := timeTravel(id, question, members)
	j.Status, j.CreatedAt, j.Deadline, j.FinishedAt = job.StatusCompleted, now, now.Add(time.Minute), now
	j.Spec.Model, j.Spec.Cache = "m1", job.CacheUse
	type keyChange struct {
		From      string   `json:"from"`
		To        string   `json:"to"`
		FromLabel string   `json:"from_label"`
		ToLabel   string   `json:"to_label"`
		Changes   []string `json:"changes"`
	}
	kcs := []keyChange{}
	for i := 1; i < len(texts); i++ {
		a, b := members[i-1], members[i]
		kcs = append(kcs, keyChange{From: a.Ref["date"], To: b.Ref["date"], FromLabel: a.Label, ToLabel: b.Label, Changes: []string{"c" + strconv.Itoa(i)}})
	}
	j.Result = &job.Result{StartedAt: now.UnixMilli(), Cached: true, Parts: []job.Part{
		{Name: "key_changes", Value: mustJSON(kcs), Model: "x1"},
		{Name: "narrative", Text: "It changed.", Model: "n1"},
	}}
	return j
}

func jobID(n int) string { return fmt.Sprintf("0190aaaa-0000-7000-8000-%012d", n) }

// withID returns a copy of j under another id.
func withID(j *job.Job, id string) *job.Job {
	c := *j
	c.ID = id
	return &c
}

// A job served from the caches reads, through Get and Events, exactly as
// the full copy Create used to store: the same job, the same events.
func TestCachedJobReadsAsFullCopy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		job  *job.Job
	}{
		{"four time points", servedJob(jobID(1), "What are the best AI models?", "a", "b", "c", "d")},
		{"one time point", servedJob(jobID(1), "q?", "only")},
		{"owner, fingerprint and callback", func() *job.Job {
			j := servedJob(jobID(1), "q?", "a\nwith\nlines", `"quoted" <b>`)
			j.Spec.Owner, j.Spec.CallbackURL, j.Fingerprint = "key-1", "https://example.com/hook", "fp1"
			return j
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			st := store.New(db.Client, time.Hour)
			ctx := context.Background()
			full, ref := withID(tt.job, jobID(100)), withID(tt.job, jobID(200))
			if _, err := store.CreateFullCopy(ctx, st, full); err != nil {
				t.Fatal(err)
			}
			first, err := st.Create(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}

			// Stored by reference: no stream, no answers of its own.
			h := db.Client.HGetAll(ctx, store.JobKey(ref.ID)).Val()
			for k := range h {
				if strings.HasPrefix(k, "s:") || k == "agg" {
					t.Errorf("field %s in the hash of a job stored by reference", k)
				}
			}
			if h["ref"] == "" || db.Client.Exists(ctx, events.StreamKey(ref.ID)).Val() != 0 {
				t.Fatalf("job stored in full: hash fields %d, ref %q, stream %d", len(h), h["ref"], db.Client.Exists(ctx, events.StreamKey(ref.ID)).Val())
			}

			wantJob, err := st.Get(ctx, full.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantJob.ID = ref.ID
			gotJob, err := st.Get(ctx, ref.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotJob, wantJob) {
				t.Errorf("Get\n got %+v\nwant %+v", gotJob, wantJob)
			}
			if !reflect.DeepEqual(gotJob, withID(tt.job, ref.ID)) {
				t.Errorf("Get\n got %+v\nwant the job created %+v", gotJob, tt.job)
			}

			wantEvs, err := events.Read(ctx, db.Client, full.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			gotEvs, err := st.Events(ctx, ref.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(gotEvs) != len(wantEvs) {
				t.Fatalf("%d events %v, want %d", len(gotEvs), gotEvs, len(wantEvs))
			}
			created := strconv.FormatInt(ref.CreatedAt.UnixMilli(), 10)
			for i, g := range gotEvs {
				w := wantEvs[i]
				wantData := bytes.ReplaceAll(w.Data, []byte(full.ID), []byte(ref.ID))
				if g.Type != w.Type || !bytes.Equal(g.Data, wantData) {
					t.Errorf("event %d: %s %s, want %s %s", i, g.Type, g.Data, w.Type, wantData)
				}
				if want := created + "-" + strconv.Itoa(i); g.ID != want {
					t.Errorf("event %d: id %s, want %s", i, g.ID, want)
				}
			}
			if first != gotEvs[0].ID {
				t.Errorf("Create returned %s, want the id of job.accepted %s", first, gotEvs[0].ID)
			}
		})
	}
}

// A client resuming after any event of a job served from the caches gets
// exactly the events after it, the webhook's included.
func TestCachedEventsResume(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	ctx := context.Background()
	j := servedJob(jobID(1), "q?", "a", "b", "c")
	store.SetNow(st, func() time.Time { return j.CreatedAt.Add(time.Second) }) // the webhook's
	if _, err := st.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 204, WebhookID: "msg_" + j.ID}); err != nil {
		t.Fatal(err)
	}
	all, err := st.Events(ctx, j.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(all); n != 1+3*3+3+1+1 || all[n-1].Type != events.WebhookDelivered || !all[n-2].Terminal() {
		t.Fatalf("events %v", all)
	}
	created := j.CreatedAt.UnixMilli()
	cases := []struct {
		after string
		want  []events.Event
	}{
		{"", all},
		{"0-0", all},
		{strconv.FormatInt(created-1, 10) + "-99", all},
		{strconv.FormatInt(created+1, 10) + "-0", all[len(all)-1:]}, // the webhook event came a second later
		{"99999999999999-0", nil},
	}
	for i, e := range all {
		cases = append(cases, struct {
			after string
			want  []events.Event
		}{e.ID, all[i+1:]})
	}
	for _, c := range cases {
		got, err := st.Events(ctx, j.ID, c.after)
		if err != nil {
			t.Fatalf("after %s: %v", c.after, err)
		}
		if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("after %s: %d events %v, want %d", c.after, len(got), got, len(c.want))
		}
	}
	if _, err := st.Events(ctx, j.ID, "not-an-id"); err == nil {
		t.Error("Events after a malformed id succeeded")
	}
}

// Events of a job stored in full are its stream's, and nothing for a job
// that does not exist.
func TestEventsOfJobInFull(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	if _, _, err := b.store.StartMember(ctx, b.job.ID, 0, "w", "m"); err != nil {
		t.Fatal(err)
	}
	want, err := events.Read(ctx, b.db.Client, b.job.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []string{"", want[0].ID} {
		got, err := b.store.Events(ctx, b.job.ID, after)
		if err != nil {
			t.Fatal(err)
		}
		w := want
		if after != "" {
			w = want[1:]
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("after %q: %v, want %v", after, got, w)
		}
	}
	if got, err := b.store.Events(ctx, jobID(999), ""); err != nil || len(got) != 0 {
		t.Errorf("events of no job: %v, %v", got, err)
	}
}

// The webhook of a job served from the caches: its state is the job's,
// its event comes after job.completed (whatever the clocks), and a pending
// attempt keeps the result as long as the job.
func TestCachedJobWebhook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		skew    time.Duration // of the worker's clock against the api's
		outcome job.WebhookStatus
		typ     string
	}{
		{"delivered later", time.Second, job.WebhookDelivered, events.WebhookDelivered},
		{"failed, worker clock behind", -time.Hour, job.WebhookFailed, events.WebhookFailed},
		{"delivered at the same millisecond", 0, job.WebhookDelivered, events.WebhookDelivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			st := store.New(db.Client, time.Hour)
			ctx := context.Background()
			j := servedJob(jobID(1), "q?", "a", "b")
			j.Spec.CallbackURL = "https://example.com/hook"
			store.SetNow(st, func() time.Time { return j.CreatedAt.Add(tt.skew) })
			if _, err := st.Create(ctx, j); err != nil {
				t.Fatal(err)
			}
			if err := st.WebhookQueued(ctx, j.ID); err != nil {
				t.Fatal(err)
			}
			n, err := st.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: job.WebhookPending, StatusCode: 503, Error: "503", WebhookID: "msg_" + j.ID})
			if err != nil || n != 1 {
				t.Fatalf("record pending: %d, %v", n, err)
			}
			jobTTL := db.Client.PTTL(ctx, store.JobKey(j.ID)).Val()
			ref := db.Client.HGet(ctx, store.JobKey(j.ID), "ref").Val()
			if resTTL := db.Client.PTTL(ctx, store.ResultKey(ref)).Val(); jobTTL < store.WebhookKeep-time.Minute || resTTL <= jobTTL {
				t.Errorf("while pending: job TTL %s, result TTL %s; want the job kept %s and the result longer", jobTTL, resTTL, store.WebhookKeep)
			}
			if _, err := st.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: tt.outcome, StatusCode: 410, Error: "gone", WebhookID: "msg_" + j.ID}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: job.WebhookFailed, Error: "late"}); !errors.Is(err, store.ErrClosed) {
				t.Fatalf("record after the outcome: %v, want ErrClosed", err)
			}
			got, err := st.Get(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if w := got.Webhook; w == nil || w.Status != tt.outcome || w.Attempts != 2 {
				t.Errorf("webhook state %+v", w)
			}
			evs, err := st.Events(ctx, j.ID, "")
			if err != nil {
				t.Fatal(err)
			}
			last := evs[len(evs)-1]
			if last.Type != tt.typ || !evs[len(evs)-2].Terminal() || count(typesOf(evs), tt.typ) != 1 {
				t.Fatalf("events %v, want job.completed then one %s", typesOf(evs), tt.typ)
			}
			for _, field := range []string{`"webhook_id":"msg_` + j.ID + `"`, `"attempts":2`, `"status_code":410`} {
				if !strings.Contains(string(last.Data), field) {
					t.Errorf("%s data %s lacks %s", last.Type, last.Data, field)
				}
			}
			// The id of the webhook event sorts after the others; a client
			// that had job.completed gets it alone.
			after, err := st.Events(ctx, j.ID, evs[len(evs)-2].ID)
			if err != nil || len(after) != 1 || after[0].ID != last.ID {
				t.Errorf("after job.completed: %v, %v; want the webhook event alone", after, err)
			}
		})
	}
}

func typesOf(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// Jobs showing the same content share one result; other content, or a job
// that does not qualify, is kept apart. A job whose result is gone is an
// error, never a job without its answers.
func TestCachedResultSharing(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	st := store.New(db.Client, time.Hour)
	ctx := context.Background()
	base := servedJob(jobID(0), "q?", "a", "b")
	otherText := servedJob(jobID(0), "q?", "a", "B")
	otherQuestion := servedJob(jobID(0), "q2?", "a", "b")
	notCached := servedJob(jobID(0), "q?", "a", "b")
	notCached.Members[1].Cached = false
	lateSnapshot := servedJob(jobID(0), "q?", "a", "b")
	lateSnapshot.Members[1].CompletedAt++
	tests := []struct {
		job     *job.Job
		byRef   bool
		results int // result records after it
	}{
		{base, true, 1},
		{base, true, 1},
		{otherText, true, 2},
		{otherQuestion, true, 3},
		{notCached, false, 3},
		{lateSnapshot, false, 3},
	}
	for i, tt := range tests {
		j := withID(tt.job, jobID(i+1))
		if _, err := st.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Create(ctx, j); !errors.Is(err, store.ErrExists) {
			t.Errorf("job %d created twice: %v, want ErrExists", i, err)
		}
		ref := db.Client.HGet(ctx, store.JobKey(j.ID), "ref").Val()
		if (ref != "") != tt.byRef {
			t.Errorf("job %d: ref %q, want stored by reference %v", i, ref, tt.byRef)
		}
		keys := db.Client.Keys(ctx, store.ResultKey("*")).Val()
		if len(keys) != tt.results {
			t.Errorf("after job %d: %d results %v, want %d", i, len(keys), keys, tt.results)
		}
		got, err := st.Get(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, j) {
			t.Errorf("job %d: Get %+v, want %+v", i, got, j)
		}
	}

	j := withID(base, jobID(1))
	ref := db.Client.HGet(ctx, store.JobKey(j.ID), "ref").Val()
	db.Client.Del(ctx, store.ResultKey(ref))
	if got, err := st.Get(ctx, j.ID); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a job whose result is gone: %+v, %v; want an error", got, err)
	}
	if got, err := st.Events(ctx, j.ID, ""); err == nil {
		t.Errorf("Events of a job whose result is gone: %v; want an error", got)
	}
}

// usedMemory is the server's used_memory.
func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO")
	return 0
}

// The same question of the longest length, answered from the caches again
// and again, grows Redis by at most 2 KB plus the question per request.
// Not parallel: it reads the memory of the whole server, which parallel
// tests only use once the sequential ones are done.
func TestCachedJobMemory(t *testing.T) {
	question := strings.Repeat("🕰", job.MaxQuestionRunes)
	answer := func(i int) string { return strings.Repeat(fmt.Sprintf("Answer %d, as of its date. ", i), 20_000/26) }
	tests := []struct {
		name    string
		jobs    int
		full    bool // stored as before: reported, not checked
		webhook bool
	}{
		{"served from the caches", 200, false, false},
		{"served from the caches, webhook delivered", 200, false, true},
		{"full copy, as before", 20, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := redistest.New(t)
			ctx := context.Background()
			base := servedJob(jobID(0), question, answer(0), answer(1), answer(2), answer(3))
			create := func(st *store.Store, j *job.Job) {
				t.Helper()
				create := st.Create
				if tt.full {
					create = func(ctx context.Context, j *job.Job) (string, error) { return store.CreateFullCopy(ctx, st, j) }
				}
				if _, err := create(ctx, j); err != nil {
					t.Fatal(err)
				}
				if tt.webhook {
					if err := st.WebhookQueued(ctx, j.ID); err != nil {
						t.Fatal(err)
					}
					if _, err := st.RecordWebhook(ctx, j.ID, store.WebhookAttempt{Status: job.WebhookDelivered, StatusCode: 200, WebhookID: "msg_" + j.ID}); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The first job writes the shared result (and loads the
			// scripts), on a connection of its own, which is then closed
			// by the server at once, so that its buffers do not count.
			first := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.Index, PoolSize: 1})
			defer first.Close()
			create(store.New(first, time.Hour), withID(base, jobID(1)))
			if err := db.Client.ClientKillByFilter(ctx, "ID", strconv.FormatInt(first.ClientID(ctx).Val(), 10)).Err(); err != nil {
				t.Fatal(err)
			}

			st := store.New(db.Client, time.Hour)
			before := usedMemory(t, db.Client)
			for i := range tt.jobs {
				create(st, withID(base, jobID(2+i)))
			}
			perJob := (usedMemory(t, db.Client) - before) / int64(tt.jobs)
			budget := int64(2048 + len(question))
			t.Logf("%d bytes per job (question %d bytes, answers %d bytes; budget %d)", perJob, len(question), 4*len(answer(0)), budget)
			if !tt.full && perJob > budget {
				t.Errorf("each job grew Redis by %d bytes, want at most %d", perJob, budget)
			}
			if got, err := st.Get(ctx, jobID(2+tt.jobs-1)); err != nil || got.Spec.Question != question || got.Members[3].Text != answer(3) {
				t.Errorf("the last job does not read back whole: %v", err)
			}
		})
	}
}
