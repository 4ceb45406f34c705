package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api/web"
	"github.com/timetravel-ai/timetravel/internal/auth"
	"github.com/timetravel-ai/timetravel/internal/tooling/stack"
)

// screenshotsEnv names the directory (relative to the module root) where
// TestPage writes its screenshots; unset, it writes none.
const screenshotsEnv = "PAGE_SCREENSHOTS"

// pageWait bounds every wait on the page: generous, for a loaded machine
// running the race detector.
const pageWait = 90 * time.Second

// jobOnPage is what the page shows of its job (read by pageJobJS).
type jobOnPage struct {
	JobID   string `json:"jobId"`
	Status  string `json:"status"`
	Conn    string `json:"conn"`
	Members []struct {
		Status string `json:"status"`
		Label  string `json:"label"`
		Text   string `json:"text"`
	} `json:"members"`
	KeyChanges int    `json:"keyChanges"`
	Narrative  string `json:"narrative"`
	Timings    int    `json:"timings"`
	Link       string `json:"link"`
	Reconnects int    `json:"reconnects"`
	Mismatches []any  `json:"mismatches"`
	JobError   string `json:"jobError"`
}

const pageJobJS = `(() => ({
  jobId: window.ttPage ? window.ttPage.id : "",
  status: document.querySelector("#job-status").dataset.status,
  conn: document.querySelector("#conn").textContent,
  members: [...document.querySelectorAll("#members .member")].map((m) => ({
    status: m.dataset.status, label: m.querySelector("h3").textContent, text: m.querySelector(".member-text").textContent})),
  keyChanges: document.querySelectorAll("#key-changes .kc-pair").length,
  narrative: document.querySelector("#narrative").textContent,
  timings: document.querySelectorAll("#timings svg rect").length,
  link: document.querySelector("#job-link").href,
  reconnects: window.ttPage ? window.ttPage.reconnects : 0,
  mismatches: window.ttPage ? window.ttPage.mismatches : [],
  jobError: document.querySelector("#job-error").textContent,
}))()`

// storedJob is the part of GET /api/jobs/{id} the page test compares.
type storedJob struct {
	Status    string `json:"status"`
	Snapshots []struct {
		Text string `json:"text"`
	} `json:"snapshots"`
	Narrative string `json:"narrative"`
}

// consoleLog records the page's console errors and uncaught exceptions.
type consoleLog struct {
	mu   sync.Mutex
	errs []string
}

func (c *consoleLog) listen(ctx context.Context) error {
	return chromedp.Listen(ctx, func(ev any) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				c.errs = append(c.errs, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			c.errs = append(c.errs, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
		}
	})
}

func (c *consoleLog) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// pageTab opens a tab of browser and fails t, at its end, on any console
// error of the tab.
func pageTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	cl := &consoleLog{}
	if err := cl.listen(tab); err != nil {
		t.Fatalf("listen to the console: %v", err)
	}
	t.Cleanup(func() {
		if errs := cl.errors(); len(errs) > 0 {
			t.Errorf("the page wrote %d console errors:\n  %s", len(errs), strings.Join(errs, "\n  "))
		}
		cancel()
	})
	ctx, cancelRun := context.WithTimeout(tab, 3*time.Minute)
	t.Cleanup(cancelRun)
	return ctx
}

// open loads pageURL in tab and waits until the page has read the models.
func open(t *testing.T, tab context.Context, pageURL string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("open %s: %v", pageURL, err)
	}
	waitPage(t, tab, "window.ttReady === true", "the page did not load its models")
}

// waitPage waits until expression is truthy on the page.
func waitPage(t *testing.T, tab context.Context, expression, what string) {
	t.Helper()
	if err := pollPage(tab, expression, pageWait); err != nil {
		st, _ := chromedp.Run(tab, chromedp.Evaluate[jobOnPage](pageJobJS))
		b, _ := json.Marshal(st)
		t.Fatalf("%s (waited for %s): %v\npage: %.3000s", what, expression, err, b)
	}
}

func readJob(t *testing.T, tab context.Context) jobOnPage {
	t.Helper()
	st, err := chromedp.Run(tab, chromedp.Evaluate[jobOnPage](pageJobJS))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return st
}

// askOnPage types question into the form and submits it with a click.
func askOnPage(t *testing.T, tab context.Context, question, model string) {
	t.Helper()
	actions := []chromedp.Action[chromedp.Void]{chromedp.SendKeys(chromedp.CSS("#question"), question)}
	if model != "" {
		actions = append(actions, chromedp.SetValue(chromedp.CSS("#model"), model))
	}
	actions = append(actions, chromedp.Click(chromedp.CSS("#submit")))
	if err := chromedp.Do(tab, actions...); err != nil {
		t.Fatalf("ask on the page: %v", err)
	}
	waitPage(t, tab, `window.ttPage && window.ttPage.id !== ""`, "the page did not open a job")
}

// getStored reads a job from the api at apiURL.
func getStored(t *testing.T, apiURL, id string) storedJob {
	t.Helper()
	resp, err := http.Get(apiURL + "/api/jobs/" + id)
	if err != nil {
		t.Fatalf("get job %s: %v", id, err)
	}
	defer resp.Body.Close()
	var j storedJob
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatalf("decode job %s: %v", id, err)
	}
	return j
}

// checkSameText asserts that the page shows the stored texts of a
// completed time-travel job, with nothing lost or repeated in streaming.
func checkSameText(t *testing.T, st jobOnPage, stored storedJob) {
	t.Helper()
	if len(st.Mismatches) > 0 {
		t.Fatalf("streamed texts differ from the completed ones (words lost or repeated): %v", st.Mismatches)
	}
	if len(st.Members) != len(stored.Snapshots) {
		t.Fatalf("page shows %d columns, the job has %d snapshots", len(st.Members), len(stored.Snapshots))
	}
	for i, m := range st.Members {
		if m.Text != stored.Snapshots[i].Text {
			t.Fatalf("column %d (%s) text differs from the stored text:\npage:   %.300q\nstored: %.300q", i, m.Label, m.Text, stored.Snapshots[i].Text)
		}
	}
	if st.Narrative != stored.Narrative {
		t.Fatalf("narrative differs from the stored one:\npage:   %.300q\nstored: %.300q", st.Narrative, stored.Narrative)
	}
}

// prefixProxy serves the api under a path prefix, as an ingress does, and
// can be pointed at another api process while it runs.
type prefixProxy struct {
	prefix string // e.g. "/tt"
	target atomic.Pointer[url.URL]
	proxy  *httputil.ReverseProxy
}

func newPrefixProxy(t *testing.T, prefix, apiURL string) (*prefixProxy, *httptest.Server) {
	t.Helper()
	p := &prefixProxy{prefix: prefix}
	p.point(t, apiURL)
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			u := p.target.Load()
			r.Out.URL.Scheme, r.Out.URL.Host = u.Scheme, u.Host
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, p.prefix)
			r.Out.URL.RawPath = ""
			r.Out.Host = u.Host
		},
		// An api that is down is a 502, as behind an ingress.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, p.prefix+"/") {
			http.NotFound(w, r)
			return
		}
		p.proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return p, srv
}

func (p *prefixProxy) point(t *testing.T, apiURL string) {
	u, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(u)
}

// screenshot writes a full-page PNG of tab at the given width when
// PAGE_SCREENSHOTS names a directory.
func screenshot(t *testing.T, tab context.Context, name string, width int64) {
	t.Helper()
	dir := os.Getenv(screenshotsEnv)
	if dir == "" {
		return
	}
	if !filepath.IsAbs(dir) {
		root, err := stack.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.EmulateViewport(width, 900)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.png", name, width))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// TestPage drives the web page (package internal/api/web) in headless
// Chromium against the real api, workers and simulator: a question asked
// with the mouse and with the keyboard alone streams into every column and
// completes, the job's link replays it, a job is canceled from the page,
// the page survives the api process being killed and started again behind
// a path prefix, and the monitoring view draws its charts.
func TestPage(t *testing.T) {
	t.Parallel()
	browser, _ := startBrowser(t)
	e := startStack(t, 2, nil, nil)

	var firstJob string
	t.Run("submit streams every column to completed", func(t *testing.T) {
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		askOnPage(t, tab, "What did web pages look like?", "")
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#timings svg rect").length > 0`,
			"the job did not complete on the page")
		st := readJob(t, tab)
		firstJob = st.JobID
		if len(st.Members) != 4 {
			t.Fatalf("%d columns, want 4 (the default time points)", len(st.Members))
		}
		for i, m := range st.Members {
			if m.Status != "completed" || m.Text == "" || m.Label == "" {
				t.Fatalf("column %d: status %q, label %q, %d characters of text", i, m.Status, m.Label, len(m.Text))
			}
		}
		if st.KeyChanges != 3 || st.Narrative == "" {
			t.Fatalf("%d key changes (want 3, between neighbouring columns), narrative %d characters", st.KeyChanges, len(st.Narrative))
		}
		if !strings.HasSuffix(st.Link, "/jobs/"+st.JobID) {
			t.Fatalf("job link %q does not point at /jobs/%s", st.Link, st.JobID)
		}
		checkSameText(t, st, getStored(t, e.apiURL, st.JobID))
		// The page's routes leave the api's 404 JSON for other paths.
		for _, path := range []string{"/no-such-page", "/assets/", "/assets/missing.js", "/jobs/"} {
			resp, err := (&http.Client{}).Get(e.apiURL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("GET %s: %d %.200s, want 404", path, resp.StatusCode, body)
			}
			if path == "/no-such-page" && !strings.Contains(string(body), `"code":"not_found"`) {
				t.Fatalf("GET %s: %s, want the api's JSON error", path, body)
			}
		}
		screenshot(t, tab, "page-job", 1280)
		// 375 px wide (a small phone): nothing wider than the screen.
		if err := chromedp.Do(tab, chromedp.EmulateViewport(375, 800)); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `window.innerWidth === 375 && document.documentElement.scrollWidth <= 375`, "the page is wider than 375 px")
		screenshot(t, tab, "page-job", 375)
	})

	t.Run("the job's link replays it", func(t *testing.T) {
		if firstJob == "" {
			t.Skip("no job from the first subtest")
		}
		tab := pageTab(t, browser)
		if err := chromedp.Do(tab, chromedp.Navigate(e.apiURL+"/jobs/"+firstJob)); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#timings svg rect").length > 0`,
			"the replayed job did not show completed")
		checkSameText(t, readJob(t, tab), getStored(t, e.apiURL, firstJob))
	})

	t.Run("history lists the job and opens it", func(t *testing.T) {
		if firstJob == "" {
			t.Skip("no job from the first subtest")
		}
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`nav a[data-view="history"]`))); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `!document.querySelector("#history").classList.contains("off-view") && document.querySelector("#ask").classList.contains("off-view") &&
			document.querySelector('#history-table a[href$="/jobs/`+firstJob+`"]') !== null`, "the history view does not list the first job")
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`#history-table a[href$="/jobs/`+firstJob+`"]`))); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `location.pathname === "/jobs/`+firstJob+`" && !document.querySelector("#job").classList.contains("off-view") &&
			document.querySelector("#job-status").dataset.status === "completed"`, "the history's link did not open the job")
		checkSameText(t, readJob(t, tab), getStored(t, e.apiURL, firstJob))
	})

	t.Run("keyboard only", func(t *testing.T) {
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		// Tab until the question has the focus, type, Tab until the submit
		// button has it, press Enter: no click anywhere.
		tabTo := func(id string) {
			t.Helper()
			for range 80 {
				got, err := chromedp.Run(tab, chromedp.Evaluate[string]("document.activeElement ? document.activeElement.id : ''"))
				if err != nil {
					t.Fatal(err)
				}
				if got == id {
					return
				}
				if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Tab)); err != nil {
					t.Fatal(err)
				}
			}
			t.Fatalf("#%s never got the focus by Tab", id)
		}
		tabTo("question")
		if err := chromedp.Do(tab, chromedp.KeyEvent("Can a keyboard ask?")); err != nil {
			t.Fatal(err)
		}
		tabTo("submit")
		if err := chromedp.Do(tab, chromedp.KeyEvent(kb.Enter)); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed"`, "the keyboard-submitted job did not complete")
		if q, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector("#job-question").textContent`)); q != "Can a keyboard ask?" {
			t.Fatalf("the job's question is %q", q)
		}
	})

	t.Run("an invalid field shows the api's message next to it", func(t *testing.T) {
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		if err := chromedp.Do(tab,
			chromedp.SendKeys(chromedp.CSS("#question"), "One model is not an ensemble"),
			chromedp.Click(chromedp.CSS(`input[name="kind"][value="ensemble"]`)),
			chromedp.Evaluate[chromedp.Void](`document.querySelectorAll("#models input").forEach((c, i) => { c.checked = i === 0; })`),
			chromedp.Click(chromedp.CSS("#submit")),
		); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#err-models").textContent !== ""`, "no message next to the models")
		// A time point twice: the api names it, the page marks that date.
		if err := chromedp.Do(tab,
			chromedp.Click(chromedp.CSS(`input[name="kind"][value="time-travel"]`)),
			chromedp.Evaluate[chromedp.Void](`(() => { const d = document.querySelectorAll("#time-points .tp-date");
				d[1].value = d[0].value; d[1].dispatchEvent(new Event("input")); })()`),
			chromedp.Click(chromedp.CSS("#submit")),
		); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#err-time_points").textContent !== "" &&
			document.querySelector('#time-points .tp-date[aria-invalid="true"]') !== null`, "no message next to the time points")
		if id, _ := chromedp.Run(tab, chromedp.Evaluate[string](`window.ttPage ? window.ttPage.id : ""`)); id != "" {
			t.Fatalf("a refused request opened job %s", id)
		}
	})

	t.Run("ensemble shows each model, the synthesis and the analysis", func(t *testing.T) {
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		if err := chromedp.Do(tab,
			chromedp.SendKeys(chromedp.CSS("#question"), "Do the models agree?"),
			chromedp.Click(chromedp.CSS(`input[name="kind"][value="ensemble"]`)),
			// Every offered model but the slow one.
			chromedp.Evaluate[chromedp.Void](`document.querySelectorAll("#models input").forEach((c) => { c.checked = c.value !== "`+modelSlow+`"; })`),
			chromedp.Click(chromedp.CSS("#submit")),
		); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#timings svg rect").length > 0`,
			"the ensemble did not complete on the page")
		type ensembleOnPage struct {
			Checked    int      `json:"checked"`
			Columns    []string `json:"columns"`
			Synthesis  string   `json:"synthesis"`
			Analysis   []string `json:"analysis"`
			Mismatches []any    `json:"mismatches"`
		}
		st, err := chromedp.Run(tab, chromedp.Evaluate[ensembleOnPage](`({
		  checked: document.querySelectorAll("#models input:checked").length,
		  columns: [...document.querySelectorAll("#members .member")].map((m) => m.dataset.status + ":" + (m.querySelector(".member-text").textContent !== "")),
		  synthesis: document.querySelector("#synthesis").textContent,
		  analysis: [...document.querySelectorAll("#analysis h4")].map((h) => h.textContent),
		  mismatches: window.ttPage.mismatches,
		})`))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Columns) != st.Checked || st.Checked < 2 {
			t.Fatalf("%d columns for %d models: %v", len(st.Columns), st.Checked, st.Columns)
		}
		for i, c := range st.Columns {
			if c != "completed:true" {
				t.Fatalf("column %d: %s", i, c)
			}
		}
		if st.Synthesis == "" || strings.Join(st.Analysis, ",") != "Consensus,Disagreements,Unique claims" || len(st.Mismatches) > 0 {
			t.Fatalf("synthesis %d characters, analysis %v, mismatches %v", len(st.Synthesis), st.Analysis, st.Mismatches)
		}
		screenshot(t, tab, "page-ensemble", 1280)
	})

	t.Run("cancel", func(t *testing.T) {
		tab := pageTab(t, browser)
		open(t, tab, e.apiURL+"/")
		askOnPage(t, tab, "Will this be canceled?", modelSlow)
		waitPage(t, tab, `[...document.querySelectorAll(".member")].some((m) => m.dataset.status === "running")`, "no column started running")
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#cancel"))); err != nil {
			t.Fatal(err)
		}
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "canceled"`, "the job did not end canceled")
		st := readJob(t, tab)
		if got := getStored(t, e.apiURL, st.JobID).Status; got != "canceled" {
			t.Fatalf("stored status %q, want canceled", got)
		}
	})

	t.Run("the page resumes after the api restarts, under a path prefix", func(t *testing.T) {
		proxy, srv := newPrefixProxy(t, "/tt", e.apiURL)
		tab := pageTab(t, browser)
		open(t, tab, srv.URL+"/tt/")
		askOnPage(t, tab, "Does the page survive a restart?", "sim-2s")
		waitPage(t, tab, `[...document.querySelectorAll(".member-text")].some((m) => m.textContent !== "")`, "no text streamed")
		before := readJob(t, tab)
		if before.Status == "completed" {
			t.Fatalf("the job completed before the api could be killed: %+v", before)
		}
		old := e.stack.API
		old.Kill()
		waitPage(t, tab, `document.querySelector("#conn").textContent === "reconnecting…"`, "the page does not show that it is reconnecting")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		api, err := e.stack.StartAPI(ctx)
		if err != nil {
			t.Fatalf("start the api again: %v", err)
		}
		newURL := "http://" + api.Addr
		proxy.point(t, newURL)
		waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#timings svg rect").length > 0`,
			"the page did not resume to completed")
		st := readJob(t, tab)
		if st.Reconnects == 0 || st.Conn != "" {
			t.Fatalf("reconnects %d, connection state %q", st.Reconnects, st.Conn)
		}
		if !strings.HasPrefix(st.Link, srv.URL+"/tt/jobs/") {
			t.Fatalf("job link %q is not under the prefix", st.Link)
		}
		checkSameText(t, st, getStored(t, newURL, st.JobID))
		t.Logf("resumed after %d reconnect attempts; %d columns, narrative %d characters", st.Reconnects, len(st.Members), len(st.Narrative))
	})

	t.Run("monitoring draws its charts", func(t *testing.T) {
		// The api started last (the first may have been killed above).
		api := e.stack.APIList()
		cur := "http://" + api[len(api)-1].Addr
		// One job of its own, so that this subtest also has data alone.
		c := client.New(cur, client.WithHTTPClient(contractClient(t, cur)))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		acc, err := c.Submit(ctx, client.SubmitRequest{Question: "Is the dashboard drawn?"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Events(ctx, acc.JobID, "", func(client.Event) error { return nil }); err != nil {
			t.Fatal(err)
		}
		tab := pageTab(t, browser)
		open(t, tab, cur+"/#monitoring")
		waitPage(t, tab, `document.querySelectorAll("#stage-charts svg[data-stage=total] rect.bar").length === 3 &&
			document.querySelectorAll("#stage-charts svg[data-stage=total] .th-warning").length === 1 &&
			document.querySelectorAll("#trend-chart svg path.line").length > 0`, "the monitoring charts were not drawn with data")
		n, err := chromedp.Run(tab, chromedp.Evaluate[int](`window.ttMonitoring.stages`))
		if err != nil || n < 3 {
			t.Fatalf("%d stages charted (%v)", n, err)
		}
		// Queues and breakers, sampled by the page (GET /api/monitoring/system).
		waitPage(t, tab, `window.ttSystem && window.ttSystem.queues > 0 && window.ttSystem.breakers > 0 &&
			document.querySelectorAll("#queue-chart svg path.line").length > 0 && document.querySelectorAll("#breakers svg rect.state").length > 0`,
			"the queues and breakers were not drawn")
		screenshot(t, tab, "page-monitoring", 1280)
	})
}

// TestPageWithKeys: with API keys required, the page asks for a key, keeps
// the one entered in the browser, sends it on its calls and follows the
// stream with the events link's token (an EventSource sends no headers).
func TestPageWithKeys(t *testing.T) {
	t.Parallel()
	browser, _ := startBrowser(t)
	e := accessStack(t)
	key, _ := newKey(t, e, "page", auth.Limits{})
	tab := pageTab(t, browser)
	open(t, tab, e.apiURL+"/")
	waitPage(t, tab, `document.querySelector("#key-panel").open && document.querySelector("#form-error").textContent.includes("API key")`,
		"the page did not ask for a key")
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS("#api-key"), key),
		chromedp.Click(chromedp.CSS(`#key-form button[type="submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	waitPage(t, tab, `document.querySelectorAll("#model option").length > 1 && document.querySelector("#form-error").textContent === ""`,
		"the page did not read the models with the key")
	askOnPage(t, tab, "Who holds the key?", "")
	waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#history-table tbody tr").length === 1`,
		"the job did not complete with the key, or the history does not list it")
	st := readJob(t, tab)
	checkSameText(t, st, func() storedJob {
		req, _ := http.NewRequest(http.MethodGet, e.apiURL+"/api/jobs/"+st.JobID, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var j storedJob
		if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
			t.Fatal(err)
		}
		return j
	}())
	// The key stays in the browser: a reload needs no typing.
	open(t, tab, e.apiURL+"/")
	waitPage(t, tab, `document.querySelectorAll("#model option").length > 1 && !document.querySelector("#key-panel").open`,
		"the key was not kept across a reload")
}

// scriptedEvent is one SSE event of TestPageRetries' fake api.
type scriptedEvent struct {
	id, name, data string
}

// TestPageRetries drives the page against a scripted event stream (a fake
// api serving the embedded page), to check what a live stack only does by
// chance: a member's later attempt replaces its earlier text, a restarted
// aggregation drops the narrative streamed before it, and a dropped
// connection resumes from Last-Event-ID without repeating or losing text.
func TestPageRetries(t *testing.T) {
	t.Parallel()
	browser, _ := startBrowser(t)
	const id = "01j0retries"
	first := []scriptedEvent{
		{"1-0", "job.accepted", `{"job_id":"` + id + `","kind":"timetravel","question":"Will it retry?","time_points":[{"index":0,"date":"2023-01-01","label":"A"},{"index":1,"date":"2024-01-01","label":"B"}]}`},
		{"2-0", "snapshot.started", `{"index":0,"date":"2023-01-01","label":"A","attempt":1}`},
		{"3-0", "snapshot.delta", `{"index":0,"text":"alpha beta "}`},
		{"4-0", "snapshot.started", `{"index":0,"date":"2023-01-01","label":"A","attempt":2}`},
		{"5-0", "snapshot.delta", `{"index":0,"text":"gamma "}`},
	}
	rest := []scriptedEvent{
		{"6-0", "snapshot.delta", `{"index":0,"text":"delta"}`},
		{"7-0", "snapshot.completed", `{"index":0,"date":"2023-01-01","label":"A","model":"m","text":"gamma delta","duration_ms":5}`},
		{"8-0", "snapshot.started", `{"index":1,"date":"2024-01-01","label":"B","attempt":0,"cached":true}`},
		{"9-0", "snapshot.delta", `{"index":1,"text":"cached text"}`},
		{"10-0", "snapshot.completed", `{"index":1,"date":"2024-01-01","label":"B","model":"m","text":"cached text","duration_ms":0,"cached":true}`},
		{"11-0", "aggregate.started", `{"attempt":1}`},
		{"12-0", "narrative.delta", `{"text":"lost words "}`},
		{"13-0", "aggregate.started", `{"attempt":2}`},
		{"14-0", "narrative.delta", `{"text":"the story"}`},
		{"15-0", "key_changes.completed", `{"key_changes":[{"from":"2023-01-01","to":"2024-01-01","from_label":"A","to_label":"B","changes":["x"]}]}`},
		{"16-0", "narrative.completed", `{"text":"the story"}`},
		{"17-0", "job.completed", `{"job_id":"` + id + `","status":"completed"}`},
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var resumedFrom []string // Last-Event-ID of each stream request
	page := web.New(web.Settings{TotalP95Warning: 45 * time.Second})
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", page.Index())
	mux.Handle("GET /jobs/{id}", page.Index())
	mux.Handle("GET /assets/", page.Assets())
	writeJSON := func(w http.ResponseWriter, status int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	mux.HandleFunc("GET /api/models", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"default":"m","models":["m"]}`)
	})
	mux.HandleFunc("GET /api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, `{"error":{"code":"not_found","message":"not here"}}`)
	})
	mux.HandleFunc("GET /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"job_id":"`+id+`","kind":"timetravel","status":"completed","timings":{"queue_wait_ms":1,"snapshots_ms":5,"fan_in_ms":1,"total_ms":10},
			"links":{"self":"/api/jobs/`+id+`","events":"/api/jobs/`+id+`/events?token=t"}}`)
	})
	mux.HandleFunc("GET /api/jobs/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		after := r.Header.Get("Last-Event-ID")
		if after == "" {
			after = r.URL.Query().Get("last_event_id")
		}
		mu.Lock()
		resumedFrom = append(resumedFrom, after)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		_, _ = io.WriteString(w, "retry: 50\n\n")
		send := func(evs []scriptedEvent) {
			for _, e := range evs {
				fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", e.id, e.name, e.data)
			}
			fl.Flush()
		}
		switch after {
		case "":
			send(first)
			// Hold the stream until the test has seen attempt 2, then drop it.
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "5-0":
			send(rest)
		default:
			// A wrong resumption point: replay everything, which the page
			// must not show twice (and the test fails on resumedFrom).
			send(append(append([]scriptedEvent(nil), first...), rest...))
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tab := pageTab(t, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/jobs/"+id)); err != nil {
		t.Fatal(err)
	}
	waitPage(t, tab, `(() => { const m = document.querySelector('.member[data-index="0"]');
		return m && m.querySelector(".member-status").textContent === "running, attempt 2" && m.querySelector(".member-text").textContent === "gamma "; })()`,
		"attempt 2 did not replace the text of attempt 1")
	close(release)
	waitPage(t, tab, `document.querySelector("#job-status").dataset.status === "completed" && document.querySelectorAll("#timings svg rect").length > 0`,
		"the scripted job did not complete on the page")
	st := readJob(t, tab)
	want := storedJob{Status: "completed", Narrative: "the story"}
	want.Snapshots = append(want.Snapshots, struct {
		Text string `json:"text"`
	}{"gamma delta"}, struct {
		Text string `json:"text"`
	}{"cached text"})
	checkSameText(t, st, want)
	if st.KeyChanges != 1 {
		t.Fatalf("%d key changes shown, want 1", st.KeyChanges)
	}
	if st.Members[1].Status != "completed" {
		t.Fatalf("cached column status %q", st.Members[1].Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumedFrom) != 2 || resumedFrom[0] != "" || resumedFrom[1] != "5-0" {
		t.Fatalf("stream requests resumed from %q, want the start then 5-0", resumedFrom)
	}
}
