package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/auth"
)

// browserNames are the executables that may run the headless browser, in
// the order they are looked up on PATH (scripts/ensure-chromium installs
// the first).
var browserNames = []string{"chromium", "chromium-browser", "google-chrome"}

// browserPage is the page a test serves from an origin: start(cfg) submits
// a job from the page with fetch, as a web app does, and follows its
// events link with an EventSource until the EventSource gives up.
// window.state records what the page saw; state.done is set when there is
// nothing more to wait for.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>timetravel browser test</title></head>
<body>
<script>
window.state = {phase: "loaded", events: [], unnamed: 0, opens: 0, errorStates: [], closed: false, done: false};

// start submits cfg.question to cfg.api with cfg.key and follows the stream.
function start(cfg) {
  const st = window.state;
  st.phase = "submitting";
  fetch(cfg.api + "/api/time-travel", {
    method: "POST",
    headers: {
      "Authorization": "Bearer " + cfg.key,
      "Content-Type": "application/json",
      "Idempotency-Key": cfg.idempotencyKey,
    },
    body: JSON.stringify({question: cfg.question}),
  }).then(async (r) => {
    st.status = r.status;
    st.location = r.headers.get("Location");
    const body = await r.json();
    st.accepted = body;
    if (!r.ok) {
      st.failure = "submission answered " + r.status;
      st.done = true;
      return;
    }
    follow(cfg, body.links.events);
  }).catch((e) => {
    st.fetchError = e.name + ": " + e.message;
    st.done = true;
  });
}

// follow reads the events link with an EventSource, without closing it:
// the server ends it (204 to the reconnect after job.completed).
function follow(cfg, link) {
  const st = window.state;
  st.phase = "streaming";
  const es = new EventSource(cfg.api + link);
  es.addEventListener("open", () => { st.opens++; });
  for (const name of cfg.eventNames) {
    es.addEventListener(name, (ev) => {
      st.events.push({id: ev.lastEventId, name: ev.type, data: ev.data});
      if (name === "job.completed") {
        st.phase = "ended";
      }
    });
  }
  es.addEventListener("message", () => { st.unnamed++; });
  es.addEventListener("error", () => {
    st.errorStates.push(es.readyState);
    if (es.readyState === EventSource.CLOSED) {
      st.closed = true;
      st.done = true;
    }
  });
}
</script>
</body></html>
`

// pageConfig is the argument of the page's start function.
type pageConfig struct {
	API            string   `json:"api"`
	Key            string   `json:"key"`
	Question       string   `json:"question"`
	IdempotencyKey string   `json:"idempotencyKey"`
	EventNames     []string `json:"eventNames"`
}

// pageState mirrors the page's window.state.
type pageState struct {
	Phase    string `json:"phase"`
	Status   int    `json:"status"`
	Location string `json:"location"`
	Accepted struct {
		JobID string       `json:"job_id"`
		Links client.Links `json:"links"`
	} `json:"accepted"`
	Failure     string `json:"failure"`
	FetchError  string `json:"fetchError"`
	Events      []struct{ ID, Name, Data string }
	Unnamed     int   `json:"unnamed"`
	Opens       int   `json:"opens"`
	ErrorStates []int `json:"errorStates"`
	Closed      bool  `json:"closed"`
	Done        bool  `json:"done"`
}

// clientEvents returns the events the page saw as client events.
func (s pageState) clientEvents() []client.Event {
	out := make([]client.Event, len(s.Events))
	for i, e := range s.Events {
		out[i] = client.Event{ID: e.ID, Name: e.Name, Data: json.RawMessage(e.Data)}
	}
	return out
}

// netLog records, from the DevTools protocol, what the network of one tab
// did: the answers it got and the requests that failed.
type netLog struct {
	mu      sync.Mutex
	urls    map[network.RequestID]string
	entries []netEntry
}

// netEntry is one answer (Status > 0) or one failure of a request.
type netEntry struct {
	URL    string
	Type   string
	Status int64
	Error  string
	CORS   string
}

func (l *netLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i := 0; i < len(l.entries); {
		e, n := l.entries[i], 1
		for i+n < len(l.entries) && l.entries[i+n] == e {
			n++
		}
		fmt.Fprintf(&b, "\n  %s %s status=%d err=%q cors=%q", e.Type, e.URL, e.Status, e.Error, e.CORS)
		if n > 1 {
			fmt.Fprintf(&b, " (%d times)", n)
		}
		i += n
	}
	return b.String()
}

// matching returns the entries whose URL contains part.
func (l *netLog) matching(part string) []netEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []netEntry
	for _, e := range l.entries {
		if strings.Contains(e.URL, part) {
			out = append(out, e)
		}
	}
	return out
}

// listen records the network events of the tab of ctx.
func (l *netLog) listen(ctx context.Context) error {
	l.urls = map[network.RequestID]string{}
	return chromedp.Listen(ctx, func(ev any) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			l.urls[ev.RequestID] = ev.Request.URL
		case *network.EventResponseReceived:
			l.entries = append(l.entries, netEntry{URL: ev.Response.URL, Type: string(ev.Type), Status: ev.Response.Status})
		case *network.EventLoadingFailed:
			e := netEntry{URL: l.urls[ev.RequestID], Type: string(ev.Type), Error: ev.ErrorText}
			if ev.CorsErrorStatus != nil {
				e.CORS = string(ev.CorsErrorStatus.CorsError)
				if e.CORS == "" {
					e.CORS = "cors"
				}
			}
			l.entries = append(l.entries, e)
		}
	})
}

// lockedBuffer is an io.Writer safe for the browser's output goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// tail returns the last n bytes written.
func (w *lockedBuffer) tail(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// browserPath finds the Chromium or Chrome executable on PATH. A missing
// browser fails the test: make test installs it (scripts/ensure-chromium).
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range browserNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no headless browser: none of %s is on PATH; run ./scripts/ensure-chromium (make test does) to install Chromium",
		strings.Join(browserNames, ", "))
	return ""
}

// startBrowser starts a headless Chromium for t and returns its context;
// every page runs in a tab of its own (chromedp.NewContext of it).
func startBrowser(t *testing.T) (context.Context, *lockedBuffer) {
	t.Helper()
	out := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath(t)),
		// CI runs as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.CombinedOutput(out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first Run starts the browser, for as long as ctx lives.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start the browser: %v\n--- browser output ---\n%s", err, out.tail(4000))
	}
	return ctx, out
}

// servePage serves browserPage at the root of a new server on 127.0.0.1,
// whose URL is the page's origin.
func servePage(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, browserPage)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runPage opens pageURL in a new tab of browser, calls start(cfg) there and
// waits, with a deadline, until the page is done; it returns the page's
// state and the tab's network log.
func runPage(t *testing.T, browser context.Context, out *lockedBuffer, pageURL string, cfg pageConfig) (pageState, *netLog) {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	defer cancel()
	nl := &netLog{}
	if err := nl.listen(tab); err != nil {
		t.Fatalf("listen to the tab's network: %v", err)
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelRun := context.WithTimeout(tab, 2*time.Minute)
	defer cancelRun()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(pageURL),
		chromedp.Evaluate[chromedp.Void]("start("+string(arg)+")"),
	); err != nil {
		t.Fatalf("open %s and start: %v\n--- browser output ---\n%s", pageURL, err, out.tail(4000))
	}
	// The page polls itself (a timer in the browser) until the stream has
	// ended or the page is done; then an EventSource that works stops
	// within one reconnect delay (2 s). Deadlines bound both waits.
	pollErr := pollPage(ctx, "window.state.done || window.state.phase === 'ended'", 90*time.Second)
	if pollErr == nil {
		pollErr = pollPage(ctx, "window.state.done", 20*time.Second)
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState]("window.state"))
	if err != nil {
		t.Fatalf("read the page's state: %v (poll: %v)", err, pollErr)
	}
	if pollErr != nil {
		what := "the page did not finish"
		if errors.Is(pollErr, chromedp.ErrPollingTimeout) {
			what = "the page was not done in time"
			if st.Phase == "ended" && !st.Closed {
				what = "after job.completed the page's EventSource kept reconnecting instead of closing " +
					"(the api must answer 204 to a request resuming after the terminal event)"
			}
		}
		t.Fatalf("%s: %v\nstate: %s\nnetwork:%s", what, pollErr, stateJSON(st), nl)
	}
	return st, nl
}

// pollPage waits until the page's expression is truthy, for at most d.
func pollPage(ctx context.Context, expression string, d time.Duration) error {
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expression,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(d)))
	return err
}

// stateJSON shows st in a failure message.
func stateJSON(st pageState) string {
	b, _ := json.Marshal(st)
	if len(b) > 3000 {
		return string(b[:3000]) + "…"
	}
	return string(b)
}

// TestBrowser: a real browser on an allowed origin submits a job with a key
// and reads its stream to the end, and its EventSource stops after the end
// (the api answers 204 to its reconnect); on another origin the browser
// refuses the api's answer (CORS).
func TestBrowser(t *testing.T) {
	t.Parallel()
	browser, out := startBrowser(t)
	allowed := servePage(t)
	other := servePage(t)

	e := startStack(t, 1, map[string]string{
		"AUTH_REQUIRED": "true", "EVENTS_TOKEN_SECRET": eventsSecret,
		"CORS_ALLOWED_ORIGINS": allowed.URL,
	}, nil)
	key, _ := newKey(t, e, "browser", auth.Limits{})
	eventNames := []string{
		client.EventJobAccepted, client.EventSnapshotStarted, client.EventSnapshotDelta,
		client.EventSnapshotCompleted, client.EventSnapshotFailed,
		client.EventKeyChangesCompleted, client.EventKeyChangesFailed,
		client.EventAggregateStarted, client.EventNarrativeDelta,
		client.EventNarrativeCompleted, client.EventNarrativeFailed,
		client.EventJobCompleted, client.EventWebhookDelivered, client.EventWebhookFailed,
	}

	t.Run("allowed origin reads the stream to the end", func(t *testing.T) {
		st, nl := runPage(t, browser, out, allowed.URL+"/", pageConfig{
			API: e.apiURL, Key: key, Question: "What did browsers look like in the past?",
			IdempotencyKey: "browser-test-allowed", EventNames: eventNames,
		})
		if st.FetchError != "" || st.Failure != "" {
			t.Fatalf("the submission from the allowed origin %s failed: %s%s (is CORS_ALLOWED_ORIGINS honoured?)\nnetwork:%s",
				allowed.URL, st.FetchError, st.Failure, nl)
		}
		if st.Status != http.StatusAccepted && st.Status != http.StatusOK {
			t.Fatalf("submission status %d: %s", st.Status, stateJSON(st))
		}
		if st.Location == "" || st.Location != st.Accepted.Links.Self {
			t.Fatalf("the page reads Location %q, want %q (Access-Control-Expose-Headers)", st.Location, st.Accepted.Links.Self)
		}
		if !strings.Contains(st.Accepted.Links.Events, "token=") {
			t.Fatalf("events link %q has no token", st.Accepted.Links.Events)
		}
		evs := st.clientEvents()
		if st.Unnamed != 0 {
			t.Fatalf("%d events without a known name", st.Unnamed)
		}
		checkOrder(t, evs, 4)
		if got := terminalStatus(t, evs); got != "completed" {
			t.Fatalf("job.completed status %s, want completed", got)
		}
		for _, ev := range evs {
			if !json.Valid(ev.Data) {
				t.Fatalf("%s %s: data is not JSON: %.200s", ev.ID, ev.Name, ev.Data)
			}
		}
		// The EventSource stopped by itself after the end: an error event in
		// readyState CLOSED, after the server answered 204 to its reconnect.
		if !st.Closed || len(st.ErrorStates) == 0 || st.ErrorStates[len(st.ErrorStates)-1] != 2 {
			t.Fatalf("EventSource not CLOSED after the end: readyStates at its errors %v", st.ErrorStates)
		}
		streams := nl.matching(st.Accepted.JobID + "/events")
		var statuses []int64
		for _, s := range streams {
			if s.Type == string(network.ResourceTypeEventSource) && s.Status > 0 {
				statuses = append(statuses, s.Status)
			}
		}
		if len(statuses) < 2 || statuses[0] != http.StatusOK || statuses[len(statuses)-1] != http.StatusNoContent {
			t.Fatalf("event stream answers %v: want 200, then 204 to the reconnect after the end\nnetwork:%s", statuses, nl)
		}
		t.Logf("%d events in order; event stream answers %v; EventSource readyStates at its errors %v", len(evs), statuses, st.ErrorStates)
		for _, s := range statuses[1 : len(statuses)-1] {
			// Reconnects before the end (none expected here) are streams too.
			if s != http.StatusOK {
				t.Fatalf("event stream answers %v\nnetwork:%s", statuses, nl)
			}
		}
	})

	t.Run("other origin is refused", func(t *testing.T) {
		st, nl := runPage(t, browser, out, other.URL+"/", pageConfig{
			API: e.apiURL, Key: key, Question: "May another site ask?",
			IdempotencyKey: "browser-test-other", EventNames: eventNames,
		})
		if !strings.HasPrefix(st.FetchError, "TypeError") {
			t.Fatalf("the page of origin %s (not allowed) was not refused: %s\nnetwork:%s", other.URL, stateJSON(st), nl)
		}
		if st.Accepted.JobID != "" || len(st.Events) != 0 {
			t.Fatalf("the refused page got an answer: %s", stateJSON(st))
		}
		refused := false
		for _, s := range nl.matching("/api/time-travel") {
			if s.CORS != "" {
				refused = true
			}
		}
		if !refused {
			t.Fatalf("the submission failed (%s) but not by CORS\nnetwork:%s", st.FetchError, nl)
		}
	})
}
