// Package web is the service's web page: ask a question (time travel or
// ensemble), watch it stream, see the caller's recent jobs and the
// monitoring charts. It is plain HTML, CSS and JavaScript modules embedded
// in the binary (no CDN, no build step, no Node at run time); the page
// calls the api's own JSON and SSE endpoints with relative URLs, so it
// works on the api's origin and under a path prefix behind an ingress.
package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"html"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// Settings are the server's values the page shows: the alert thresholds
// drawn on the monitoring charts (ALERT_*).
type Settings struct {
	TotalP95Warning    time.Duration
	TotalP95Critical   time.Duration
	SnapshotP95Warning time.Duration
}

// contentSecurityPolicy admits the page's own scripts, styles and calls
// only: no inline script, no other origin. The events token travels in
// URLs, so no Referer leaves the page either.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// Page serves the embedded page and its assets. Create it with New.
type Page struct {
	// root and job are index.html with its <base href> set for a page at
	// the root and at jobs/{id}: the page's relative URLs then resolve
	// against the directory the page is served from, whatever the prefix
	// an ingress added in front of it.
	root, job []byte
	assets    http.Handler
}

// New reads the embedded files; it panics if they are missing, which a
// test of this package would catch before any release.
func New(s Settings) *Page {
	index, err := files.ReadFile("static/index.html")
	if err != nil {
		panic("web: index.html not embedded: " + err.Error())
	}
	cfg, _ := json.Marshal(map[string]int64{
		"total_p95_warning_ms":    s.TotalP95Warning.Milliseconds(),
		"total_p95_critical_ms":   s.TotalP95Critical.Milliseconds(),
		"snapshot_p95_warning_ms": s.SnapshotP95Warning.Milliseconds(),
	})
	page := bytes.Replace(index, []byte("{{SETTINGS}}"), []byte(html.EscapeString(string(cfg))), 1)
	sub, err := fs.Sub(files, "static/assets")
	if err != nil {
		panic("web: assets not embedded: " + err.Error())
	}
	return &Page{
		root:   bytes.Replace(page, []byte("{{BASE}}"), []byte("./"), 1),
		job:    bytes.Replace(page, []byte("{{BASE}}"), []byte("../"), 1),
		assets: http.StripPrefix("/assets/", http.FileServerFS(sub)),
	}
}

// Index serves the page at / and, for a job, at /jobs/{id} (the same page,
// which then opens that job and replays it).
func (p *Page) Index() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := p.root
		if strings.HasPrefix(r.URL.Path, "/jobs/") {
			body = p.job
		}
		securityHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}

// Assets serves /assets/*: the page's scripts and styles. They are not
// versioned by name, so browsers revalidate them (no-cache).
func (p *Page) Assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		p.assets.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}
