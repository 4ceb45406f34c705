package alertnotify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/tooling/redistest"
	"github.com/timetravel-ai/timetravel/internal/webhook"
)

func TestMain(m *testing.M) { redistest.Main(m) }

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// post is one request a receiver got.
type post struct {
	header http.Header
	body   []byte
}

// receiver answers with the codes of answer in turn (the last repeats;
// none: 200) and keeps every request.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	posts  []post
	answer []int
	// got receives a value after each post (several may share one).
	got chan struct{}
}

func newReceiver(t *testing.T, answer ...int) *receiver {
	r := &receiver{answer: answer, got: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.posts = append(r.posts, post{header: req.Header.Clone(), body: b})
		code := http.StatusOK
		if len(r.answer) > 0 {
			code = r.answer[0]
			if len(r.answer) > 1 {
				r.answer = r.answer[1:]
			}
		}
		r.mu.Unlock()
		w.WriteHeader(code)
		select {
		case r.got <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) received() []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]post(nil), r.posts...)
}

// alerts is a settable source of active alerts.
type alerts struct {
	mu  sync.Mutex
	now []monitoring.Alert
}

func (a *alerts) set(list ...monitoring.Alert) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.now = list
}

func (a *alerts) get(context.Context) ([]monitoring.Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]monitoring.Alert(nil), a.now...), nil
}

var p95 = monitoring.Alert{Name: "JobTotalP95High", Severity: "warning", Stage: "total", ValueMS: 52_300, ThresholdMS: 45_000, Samples: 20,
	Message: "p95 of total is 52.3 s over 20 jobs, above the warning threshold of 45 s"}

// sender returns the webhooks' sender, allowing loopback when loopback.
func sender(t *testing.T, loopback bool) *webhook.Sender {
	t.Helper()
	signer, err := webhook.NewSigner(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	p := webhook.Policy{AllowHTTP: true}
	if loopback {
		p.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	s := webhook.NewSender(p, signer, 5*time.Second)
	t.Cleanup(s.Close)
	return s
}

func notifier(t *testing.T, o Options) *Notifier {
	t.Helper()
	o.sleep = func(context.Context, time.Duration) error { return nil } // retries at once
	return New(o)
}

// Two replicas look at the same alerts: each start and each end is posted
// once, signed, in the chosen shape.
func TestEachTransitionPostedOnce(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{Slack, Alertmanager} {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			rec := newReceiver(t)
			src := &alerts{}
			var replicas []*Notifier
			for range 2 {
				replicas = append(replicas, notifier(t, Options{Redis: db.NewClient(t), Alerts: src.get, URL: rec.srv.URL, Format: f, Poster: sender(t, true)}))
			}
			lookAll := func() {
				var wg sync.WaitGroup
				for _, n := range replicas {
					wg.Go(func() {
						if err := n.Check(context.Background()); err != nil {
							t.Error(err)
						}
					})
				}
				wg.Wait()
			}
			lookAll() // nothing active: nothing posted
			src.set(p95)
			lookAll()
			lookAll() // still firing: nothing more
			src.set()
			lookAll()
			lookAll()

			posts := rec.received()
			if len(posts) != 2 {
				t.Fatalf("%d posts, want one firing and one resolved", len(posts))
			}
			verify, err := standardwebhooks.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []string{Firing, Resolved} {
				if err := verify.Verify(posts[i].body, posts[i].header); err != nil {
					t.Errorf("post %d: signature: %v", i, err)
				}
				switch f {
				case Slack:
					var b struct{ Text string }
					if err := json.Unmarshal(posts[i].body, &b); err != nil || !strings.HasPrefix(b.Text, "["+strings.ToUpper(want)+"]") || !strings.Contains(b.Text, p95.Name) {
						t.Errorf("post %d: %s (%v), want a %s text naming the alert", i, posts[i].body, err, want)
					}
				case Alertmanager:
					var b amBody
					if err := json.Unmarshal(posts[i].body, &b); err != nil || b.Version != "4" || b.Status != want || len(b.Alerts) != 1 ||
						b.Alerts[0].Labels["alertname"] != p95.Name || b.Alerts[0].Labels["severity"] != "warning" || b.Alerts[0].StartsAt.IsZero() {
						t.Errorf("post %d: %s (%v), want Alertmanager's body, %s", i, posts[i].body, err, want)
					}
					if want == Resolved && !b.Alerts[0].EndsAt.After(b.Alerts[0].StartsAt.Add(-time.Second)) {
						t.Errorf("resolved alert ends %v, before it started %v", b.Alerts[0].EndsAt, b.Alerts[0].StartsAt)
					}
				}
			}
			if n := db.Client.HLen(context.Background(), Key).Val(); n != 0 {
				t.Errorf("%d alerts still recorded as firing", n)
			}
		})
	}
}

// A receiver that fails gets the same post again, with the same
// webhook-id, until it takes it or the attempts run out.
func TestRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		answers  []int
		attempts int
		want     int // posts received
	}{
		{"taken at the third", []int{503, 500, 200}, 5, 3},
		{"attempts run out", []int{503}, 3, 3},
		{"refused for good: no retry", []int{400}, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			rec := newReceiver(t, tt.answers...)
			src := &alerts{}
			src.set(p95)
			n := notifier(t, Options{Redis: db.Client, Alerts: src.get, URL: rec.srv.URL, Poster: sender(t, true), Attempts: tt.attempts})
			if err := n.Check(context.Background()); err != nil {
				t.Fatal(err)
			}
			posts := rec.received()
			if len(posts) != tt.want {
				t.Fatalf("%d posts, want %d", len(posts), tt.want)
			}
			for _, p := range posts {
				if id := p.header.Get("webhook-id"); id != posts[0].header.Get("webhook-id") || id == "" {
					t.Errorf("webhook-id %q, want the same on every attempt (%q)", id, posts[0].header.Get("webhook-id"))
				}
			}
		})
	}
}

// The webhooks' SSRF rules hold: an address the policy does not admit is
// never connected to, and the URL check refuses it up front.
func TestSSRFRefused(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	rec := newReceiver(t)
	src := &alerts{}
	src.set(p95)
	n := notifier(t, Options{Redis: db.Client, Alerts: src.get, URL: rec.srv.URL, Poster: sender(t, false)})
	if err := n.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts := rec.received(); len(posts) != 0 {
		t.Errorf("%d posts reached a loopback receiver the policy does not admit", len(posts))
	}
	if err := (webhook.Policy{AllowHTTP: true}).ValidateURL(context.Background(), rec.srv.URL); err == nil {
		t.Error("ValidateURL admitted a loopback URL")
	}
}

func TestBodyRefusesUnknownFormat(t *testing.T) {
	t.Parallel()
	if _, err := Body("teams", "timetravel", Firing, p95, time.Now(), time.Time{}); err == nil {
		t.Error("Body took an unknown format")
	}
}

// Run looks at once, then every interval, until its context ends.
func TestRunStopsWithItsContext(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	rec := newReceiver(t)
	src := &alerts{}
	src.set(p95)
	n := notifier(t, Options{Redis: db.Client, Alerts: src.get, URL: rec.srv.URL, Poster: sender(t, true), Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	// The first look posts the firing alert: wait for it, then stop.
	select {
	case <-rec.got:
	case <-time.After(time.Minute):
		t.Fatal("no post within a minute of Run")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
