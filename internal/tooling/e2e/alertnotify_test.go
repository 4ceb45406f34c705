package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// With two api replicas looking at the alerts every second, a p95 over
// its threshold is posted once as firing, signed, and once as resolved
// when it clears (here: the job timings it was computed from are gone).
func TestAlertNotificationsOncePerCluster(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		texts []string
		wake  = make(chan struct{}, 1)
	)
	verify, err := standardwebhooks.NewWebhook(whSecretA)
	if err != nil {
		t.Fatal(err)
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body struct{ Text string }
		if err := verify.Verify(b, r.Header); err != nil {
			t.Errorf("alert notification not signed: %v", err)
		}
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("alert notification %s: %v", b, err)
		}
		mu.Lock()
		texts = append(texts, body.Text)
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default: // a wake-up is pending already
		}
	}))
	defer recv.Close()
	posts := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), texts...)
	}
	waitFor := func(prefix string) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			for _, s := range posts() {
				if strings.HasPrefix(s, prefix) {
					return
				}
			}
			select {
			case <-wake:
			case <-deadline:
				t.Fatalf("no %s notification within a minute; got %q", prefix, posts())
			}
		}
	}

	apiEnv := merged(webhookEnv(whSecretA, ""), map[string]string{
		"ALERT_NOTIFY_URL": recv.URL, "ALERT_NOTIFY_INTERVAL": "1s",
		// Every job is over this: the alert fires after the first.
		"ALERT_TOTAL_P95_WARNING": "1ms",
	})
	e := startStack(t, 1, apiEnv, webhookEnv(whSecretA, ""), func(o *stack.Options) { o.APIs = 2 })
	id := submit(t, e, client.SubmitRequest{Question: "Is anyone watching?", TimePoints: twoDates})
	// The alert fires once the job's timings are recorded, as it ends.
	waitFor("[FIRING]")
	if v := jobView(t, e, id); v.Status != client.StatusCompleted {
		t.Fatalf("job %s", v.Status)
	}
	if err := e.rdb.Del(context.Background(), monitoring.Key).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor("[RESOLVED]")

	got := posts()
	if len(got) != 2 || !strings.HasPrefix(got[0], "[FIRING]") || !strings.Contains(got[0], "JobTotalP95High") || !strings.HasPrefix(got[1], "[RESOLVED]") {
		t.Errorf("notifications %q, want one firing and one resolved, from two replicas", got)
	}
}
