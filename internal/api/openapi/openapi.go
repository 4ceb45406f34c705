// Package openapi holds the api's HTTP contract, an OpenAPI 3.1 document
// written by hand in openapi.yaml, and serves it: as JSON (Handler, for
// GET /openapi.json) and as a reference page rendered in the browser by
// Redoc, vendored in docs/ (DocsHandler, for /docs). Nothing the page needs
// comes from another site.
//
// The document is the contract that docs/api.md describes in prose. The e2e
// suite validates every request and response it makes, and the data of every
// SSE event, against it, so that the api and the document cannot drift apart.
package openapi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// EventsExtension is the member of the text/event-stream media type of
// GET /api/jobs/{id}/events that maps each SSE event name to the schema of
// its data: {"job.accepted": {"$ref": "#/components/schemas/JobAcceptedData"}, …}.
const EventsExtension = "x-sse-events"

//go:embed openapi.yaml
var source []byte

//go:embed docs/index.html docs/redoc.standalone.js docs/redoc.standalone.js.LICENSE.txt docs/LICENSE
var docsFS embed.FS

// document is openapi.yaml as compact JSON, members in the order written.
var document = sync.OnceValue(func() []byte {
	b, err := yamlToJSON(source)
	if err != nil {
		panic("openapi: the embedded openapi.yaml does not convert to JSON: " + err.Error())
	}
	return b
})

// JSON returns the OpenAPI document as JSON, a copy the caller may keep or
// change. Members keep the order of openapi.yaml. It panics if the embedded
// YAML cannot be converted, which the package's tests rule out.
func JSON() []byte { return bytes.Clone(document()) }

// Handler serves the OpenAPI document as application/json on GET and HEAD,
// whatever the path it is mounted at (GET /openapi.json). Answers carry an
// ETag (If-None-Match gets 304) and may be cached for 5 minutes; they are
// gzip-compressed for clients that accept it. Other methods get 405.
func Handler() http.Handler {
	doc := newAsset("openapi.json", "application/json", document(), "public, max-age=300")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { doc.serve(w, r) })
}

// contentSecurityPolicy of the reference page: everything from the page's
// own origin, nothing from elsewhere (so the Redocly logo that the bundle
// links from its CDN is never fetched). Redoc styles itself with inline
// <style> elements and runs its search index in a worker made from a blob.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DocsHandler serves the API reference page under prefix (e.g. "/docs";
// a trailing slash is ignored) on GET and HEAD:
//
//	prefix                            301 to prefix + "/"
//	prefix/ (and prefix/index.html)   the page
//	prefix/openapi.json               the document, as Handler serves it
//	prefix/redoc.standalone.js        the renderer (Redoc, vendored)
//	prefix/LICENSE, prefix/redoc.standalone.js.LICENSE.txt  its licenses
//
// Any other path under prefix is 404. The page loads only these files (its
// Content-Security-Policy forbids any other origin), so it works without
// Internet access and wherever the handler is mounted.
func DocsHandler(prefix string) http.Handler {
	prefix = strings.TrimRight(prefix, "/")
	files := map[string]*asset{
		"openapi.json": newAsset("openapi.json", "application/json", document(), "no-cache"),
	}
	for _, f := range []struct{ name, ctype, cache string }{
		{"index.html", "text/html; charset=utf-8", "no-cache"},
		{"redoc.standalone.js", "text/javascript; charset=utf-8", "public, max-age=3600"},
		{"redoc.standalone.js.LICENSE.txt", "text/plain; charset=utf-8", "public, max-age=3600"},
		{"LICENSE", "text/plain; charset=utf-8", "public, max-age=3600"},
	} {
		b, err := docsFS.ReadFile("docs/" + f.name)
		if err != nil {
			panic("openapi: embedded docs file missing: " + f.name) // go:embed guarantees it
		}
		files[f.name] = newAsset(f.name, f.ctype, b, f.cache)
	}
	files[""] = files["index.html"]
	base := path.Base(prefix)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if prefix != "" && p == prefix {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				methodNotAllowed(w, r)
				return
			}
			// Relative, so that it holds behind a proxy that mounts the api
			// under another path.
			loc := base + "/"
			if r.URL.RawQuery != "" {
				loc += "?" + r.URL.RawQuery
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		name, ok := strings.CutPrefix(p, prefix+"/")
		a := files[name]
		if !ok || a == nil {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s", r.Method, p))
			return
		}
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("Referrer-Policy", "no-referrer")
		a.serve(w, r)
	})
}

// asset is a file served from memory, plain or gzip-compressed.
type asset struct {
	name, ctype, cache string
	body               []byte
	etag               string
	gz                 func() []byte
}

func newAsset(name, ctype string, body []byte, cache string) *asset {
	sum := sha256.Sum256(body)
	a := &asset{name: name, ctype: ctype, cache: cache, body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	a.gz = sync.OnceValue(func() []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // the level is valid
		_, _ = zw.Write(body)                                  // a bytes.Buffer does not fail
		_ = zw.Close()
		return b.Bytes()
	})
	return a
}

func (a *asset) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", a.cache)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body, etag = a.gz(), strings.TrimSuffix(a.etag, `"`)+`-gzip"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether an Accept-Encoding value admits gzip.
func acceptsGzip(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "x-gzip" && coding != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		return q > 0
	}
	return false
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
		fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
}

// writeError answers with the api's JSON error model.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// yamlToJSON converts a YAML document to compact JSON, keeping the order of
// mapping keys (the order the document was written in, which readers of
// the JSON and the reference page see). Only what JSON can hold is
// accepted: string keys, no merge keys, finite numbers.
func yamlToJSON(src []byte) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := writeJSON(&b, &root); err != nil {
		return nil, err
	}
	if !json.Valid(b.Bytes()) {
		return nil, fmt.Errorf("the conversion is not valid JSON")
	}
	return b.Bytes(), nil
}

func writeJSON(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return fmt.Errorf("line %d: want one YAML document, got %d nodes", n.Line, len(n.Content))
		}
		return writeJSON(b, n.Content[0])
	case yaml.AliasNode:
		return writeJSON(b, n.Alias)
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Value == "<<" {
				return fmt.Errorf("line %d: mapping keys must be plain scalars (no merge keys)", k.Line)
			}
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k.Value)
			b.WriteByte(':')
			if err := writeJSON(b, v); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, v := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, v); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.ScalarNode:
		return writeScalar(b, n)
	}
	return fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
}

func writeScalar(b *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		// A timestamp is kept as written: JSON has no dates.
		writeString(b, n.Value)
	case "!!null":
		b.WriteString("null")
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		b.WriteString(strconv.FormatBool(v))
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		b.WriteString(strconv.FormatInt(v, 10))
	case "!!float":
		var v float64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("line %d: %s has no JSON form", n.Line, n.Value)
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	default:
		return fmt.Errorf("line %d: YAML tag %s has no JSON form", n.Line, n.ShortTag())
	}
	return nil
}

// writeString writes s as a JSON string, leaving <, > and & as they are.
func writeString(b *bytes.Buffer, s string) {
	e := json.NewEncoder(b)
	e.SetEscapeHTML(false)
	_ = e.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}
