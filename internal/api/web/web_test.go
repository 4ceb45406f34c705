package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestPage: the page is served at the root and at jobs/{id} with a <base>
// that makes its relative URLs resolve to the page's root (whatever prefix
// is in front), carries the thresholds, and comes with headers that admit
// its own scripts only; the assets are served with their types, and no
// directory is listed.
func TestPage(t *testing.T) {
	p := New(Settings{TotalP95Warning: 45 * time.Second, TotalP95Critical: 90 * time.Second, SnapshotP95Warning: 30 * time.Second})
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", p.Index())
	mux.Handle("GET /jobs/{id}", p.Index())
	mux.Handle("GET /assets/", p.Assets())

	cases := []struct {
		path, wantType string
		wantStatus     int
		wantBody       []string
	}{
		{"/", "text/html; charset=utf-8", 200, []string{`<base href="./">`, `total_p95_warning_ms&#34;:45000`, `src="assets/app.js"`}},
		{"/jobs/0190abc", "text/html; charset=utf-8", 200, []string{`<base href="../">`, `snapshot_p95_warning_ms&#34;:30000`}},
		{"/assets/app.js", "text/javascript; charset=utf-8", 200, []string{`import { fmtMS`}},
		{"/assets/charts.js", "text/javascript; charset=utf-8", 200, []string{`export function stageChart`}},
		{"/assets/style.css", "text/css; charset=utf-8", 200, []string{`:focus-visible`}},
		{"/assets/", "", 404, nil},
		{"/assets/missing.js", "", 404, nil},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
			if rec.Code != c.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, c.wantStatus)
			}
			if c.wantStatus != 200 {
				return
			}
			if got := rec.Header().Get("Content-Type"); got != c.wantType {
				t.Fatalf("Content-Type %q, want %q", got, c.wantType)
			}
			csp := rec.Header().Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe") {
				t.Fatalf("Content-Security-Policy %q", csp)
			}
			if rec.Header().Get("Referrer-Policy") != "no-referrer" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("headers %v", rec.Header())
			}
			body := rec.Body.String()
			for _, w := range c.wantBody {
				if !strings.Contains(body, w) {
					t.Fatalf("body lacks %q:\n%.400s", w, body)
				}
			}
			if strings.Contains(body, "{{") {
				t.Fatalf("a placeholder is left in the body")
			}
		})
	}
}

// TestNoAbsoluteURLs: the page's files name no absolute path or other
// origin, so that the page works under a path prefix and offline.
func TestNoAbsoluteURLs(t *testing.T) {
	for _, name := range []string{"static/index.html", "static/assets/app.js", "static/assets/charts.js", "static/assets/style.css"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{`href="/`, `src="/`, `call("/`, "call(`/", `url("/`, "http://", "https://"} {
			if strings.Contains(s, bad) && !(bad == "http://" && strings.Contains(s, `"http://www.w3.org/2000/svg"`) && strings.Count(s, "http://") == 1) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
