package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/tooling/llmsim"
)

// leakKey is the provider key of TestSecretsStayOutOfEverything: distinctive
// enough that finding it anywhere is a leak, not a coincidence. leakCore is
// its random part, which a clipped or re-quoted copy still holds.
const (
	leakCore = "c4n4ry-7f3a9c2e5b1d80e6"
	leakKey  = "sk-tt-e2e-" + leakCore
)

// A provider that quotes the API key in its 401 leaves no trace of the key
// in anything a client, a receiver or an operator sees: the job
// (GET /api/jobs/{id}), its whole event stream, the webhook's body, the api's
// and the worker's whole logs, and every value of every key in Redis. The
// errors say the status and its category; the callback URL is shown without
// its query.
func TestSecretsStayOutOfEverything(t *testing.T) {
	t.Parallel()
	wh := webhookEnv(whSecretA, "")
	// A 401 is permanent: one request per snapshot, no retry.
	e := startStack(t, 1, merged(wh, map[string]string{"SNAPSHOT_MAX_RETRY": "0"}),
		merged(wh, map[string]string{"OPENAI_API_KEY": leakKey, "LLM_MAX_ATTEMPTS": "1"}))
	ctl := simControl(t, e)
	if _, err := ctl.SetFaults(context.Background(), llmsim.FaultRule{Model: llmsim.AnyModel,
		Faults: []llmsim.Fault{{Kind: llmsim.FaultUnauthorized, Rate: 1}}}); err != nil {
		t.Fatal(err)
	}
	// The simulator does echo a key: the test is not vacuous.
	if body := simEcho(t, e, "Bearer "+leakKey); !strings.Contains(body, leakKey) {
		t.Fatalf("the simulator's 401 does not quote the key: %s", body)
	}

	r := newHookReceiver(t, whSecretA, nil)
	callback := r.url() + "?token=receiver-token-9d1e"
	id := submit(t, e, client.SubmitRequest{Question: "What are the best AI models?", TimePoints: twoDates, CallbackURL: callback})
	evs := collect(t, e, id) // follows the stream to job.completed
	if got := terminalStatus(t, evs); got != string(job.StatusFailed) {
		t.Fatalf("the job ended %s, want failed: every call got a 401", got)
	}
	v := waitFinalWebhook(t, e, r, id, 30*time.Second)
	if v.Webhook.Status != client.WebhookDelivered {
		t.Fatalf("webhook %+v, want delivered", v.Webhook)
	}
	if st := simStats(t, e); st.Total.Faults.Of(llmsim.FaultUnauthorized) < 2 {
		t.Fatalf("the simulator answered %d requests with its 401, want one per snapshot at least", st.Total.Faults.Of(llmsim.FaultUnauthorized))
	}

	// What a client sees: the errors name the status and its category.
	raw := getBody(t, e.apiURL+"/api/jobs/"+id)
	want := "provider answered 401 (authentication failed)"
	if len(v.Snapshots) != len(twoDates) {
		t.Fatalf("the job shows %d snapshots: %s", len(v.Snapshots), raw)
	}
	for _, sn := range v.Snapshots {
		if !strings.Contains(sn.Error, want) {
			t.Errorf("snapshot %s error %q, want it to say %q", sn.Label, sn.Error, want)
		}
	}
	if v.CallbackURL != r.url() {
		t.Errorf("callback_url shown as %q, want %q (without its query)", v.CallbackURL, r.url())
	}
	replay := getBody(t, e.apiURL+"/api/jobs/"+id+"/events")
	if !strings.Contains(replay, "event: "+client.EventWebhookDelivered) || !strings.Contains(replay, want) {
		t.Errorf("the replay lacks the failure or the delivery:\n%s", replay)
	}
	hooks := r.of(id)
	if len(hooks) == 0 {
		t.Fatal("the receiver got nothing")
	}

	places := map[string]string{"GET /api/jobs/" + id: raw, "the replay of /api/jobs/" + id + "/events": replay}
	for i, h := range hooks {
		places[fmt.Sprintf("webhook delivery %d", i+1)] = string(h.Body)
		if strings.Contains(string(h.Body), "receiver-token-9d1e") {
			t.Errorf("webhook delivery %d repeats the callback URL's query: %s", i+1, h.Body)
		}
	}
	if strings.Contains(raw, "receiver-token-9d1e") {
		t.Errorf("GET /api/jobs/%s shows the callback URL's query: %s", id, raw)
	}
	n := 0
	for place, text := range redisDump(t, e) {
		places[place] = text
		n++
	}
	if n == 0 {
		t.Fatal("Redis holds no keys")
	}

	// The logs, whole: from the files, after the processes have stopped
	// (Stop is safe to call again at cleanup), so that every line is in.
	procs := append(e.stack.APIList(), e.stack.WorkerList()...)
	e.stack.Stop()
	for _, p := range procs {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatalf("%s log: %v", p.Name, err)
		}
		places[p.Name+" log"] = string(b)
	}
	worker := places["worker-1 log"]
	if !strings.Contains(worker, `"OPENAI_API_KEY":"****"`) || !strings.Contains(worker, want) {
		t.Errorf("the worker's log does not show the masked key and the failure: the wrong log?\n%s", worker)
	}

	for place, text := range places {
		for _, s := range []string{leakKey, leakCore} {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%s holds the provider key: …%s…", place, text[max(i-200, 0):min(i+len(s)+100, len(text))])
				break
			}
		}
	}
}

// simEcho asks the simulator's 401 fault directly, with the given
// Authorization, and returns its body.
func simEcho(t *testing.T, e env, authorization string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.stack.SimURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"sim-model","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authorization)
	req.Header.Set(llmsim.FaultHeader, string(llmsim.FaultUnauthorized))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the simulator's 401 fault answered %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// waitFinalWebhook waits for the receiver to be called for the job, then
// polls the job, at most d in all, until its delivery has an outcome (it is
// recorded after the receiver answers).
func waitFinalWebhook(t *testing.T, e env, r *hookReceiver, id string, d time.Duration) client.JobView {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for len(r.of(id)) == 0 {
		select {
		case <-r.wake:
		case <-deadline.C:
			t.Fatalf("no webhook for job %s within %s", id, d)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		v := jobView(t, e, id)
		if v.Webhook != nil && v.Webhook.Status.Final() {
			return v
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("job %s: webhook %+v has no outcome within %s", id, v.Webhook, d)
		}
	}
}

// getBody returns the whole body of a GET (an ended job's event stream is
// replayed and closed).
func getBody(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// redisDump returns every key of every database of the stack's Redis with
// its value, by type, keyed by "redis db N key K"; the key's name is part of
// the text.
func redisDump(t *testing.T, e env) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := e.rdb.Info(ctx, "keyspace").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, _, ok := strings.Cut(sc.Text(), ":")
		db, err := strconv.Atoi(strings.TrimPrefix(name, "db"))
		if !ok || !strings.HasPrefix(name, "db") || err != nil {
			continue
		}
		opt, err := redis.ParseURL(e.stack.RedisURL)
		if err != nil {
			t.Fatal(err)
		}
		opt.DB = db
		rdb := redis.NewClient(opt)
		iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			out[fmt.Sprintf("redis db %d key %q", db, key)] = key + "\n" + dumpKey(ctx, t, rdb, key)
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		_ = rdb.Close()
	}
	return out
}

// dumpKey writes the value of key whatever its type, raw (a key inside a
// binary value, such as asynq's task messages, shows as it is); a key that
// expired meanwhile is empty.
func dumpKey(ctx context.Context, t *testing.T, rdb *redis.Client, key string) string {
	t.Helper()
	typ, err := rdb.Type(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	line := func(parts ...string) {
		b.WriteString(strings.Join(parts, " "))
		b.WriteByte('\n')
	}
	switch typ {
	case "none":
	case "string":
		var v string
		if v, err = rdb.Get(ctx, key).Result(); err == nil {
			line(v)
		}
	case "hash":
		var m map[string]string
		if m, err = rdb.HGetAll(ctx, key).Result(); err == nil {
			for k, v := range m {
				line(k, v)
			}
		}
	case "list":
		var l []string
		if l, err = rdb.LRange(ctx, key, 0, -1).Result(); err == nil {
			line(l...)
		}
	case "set":
		var l []string
		if l, err = rdb.SMembers(ctx, key).Result(); err == nil {
			line(l...)
		}
	case "zset":
		var l []redis.Z
		if l, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result(); err == nil {
			for _, z := range l {
				line(fmt.Sprint(z.Member), strconv.FormatFloat(z.Score, 'g', -1, 64))
			}
		}
	case "stream":
		var l []redis.XMessage
		if l, err = rdb.XRange(ctx, key, "-", "+").Result(); err == nil {
			for _, m := range l {
				for k, v := range m.Values {
					line(m.ID, k, fmt.Sprint(v))
				}
			}
		}
	default:
		// Any other type: its serialized form holds its strings as they are.
		var v string
		if v, err = rdb.Dump(ctx, key).Result(); err == nil {
			line(v)
		}
	}
	if err != nil && err != redis.Nil {
		t.Fatalf("read %s %q: %v", typ, key, err)
	}
	return b.String()
}
