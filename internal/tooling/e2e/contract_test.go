package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api/openapi"
)

// The contract: every request the suite sends to an api of startStack, and
// every answer, is validated against the OpenAPI document (package
// openapi), and so is the data of every SSE event of an events stream,
// against the schema the document names for that event. A mismatch fails
// the test that started that api; one that no running test owns fails the
// run (TestMain).
//
// kin-openapi's openapi3filter finds the operation (gorillamux router) and
// checks security, parameters, the status (undocumented ones fail) and the
// response headers. On an OpenAPI 3.1 document it compiles a JSON Schema
// 2020-12 validator anew for every value it checks, which costs about 8 ms
// an exchange (20 ms with -race) and upset the timing of the quota tests;
// so it gets the document marked 3.0, which makes it use its own validator:
// parameter and header schemas use only keywords the two dialects share
// (loadContract checks that). Bodies and event data, where the document uses
// 3.1 keywords (const, unevaluatedProperties, propertyNames), are validated
// as OpenAPI 3.1 has it, by JSON Schema 2020-12 validators of
// santhosh-tekuri/jsonschema (the library openapi3filter uses for 3.1),
// compiled once per schema.
//
// A request the document refuses is fine when the api refuses it too (the
// suite sends bad requests on purpose), and a mismatch when the api accepts
// it. A request the document allows but the api refuses as malformed
// (unknown_field, malformed_json, unsupported_media_type) is a mismatch too.

// contract validates the traffic of http.DefaultClient (TestMain) and of
// the clients of startStack (contractClient).
var contract = newContractChecker()

type contractChecker struct {
	doc    *openapi3.T
	router routers.Router
	// events maps an SSE event name to the location of its data's schema.
	events  map[string]string
	eventID *regexp.Regexp
	base    http.RoundTripper

	// schemas are the compiled JSON Schemas, by location in the document.
	schemaMu sync.Mutex
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema

	mu sync.Mutex
	// owners are the tests that started the apis, by host:port.
	owners map[string]*testing.T
	// orphans are mismatches found when no test owned the api.
	orphans []string

	requests, eventsSeen, mismatches atomic.Int64
	// seen counts the exchanges by "METHOD /path/{template} status" and
	// the events by name, for the coverage line of verbose runs.
	seen sync.Map
}

func (c *contractChecker) count(key string) {
	n, _ := c.seen.LoadOrStore(key, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

// unexercised lists the operations and events of the document that no
// exchange of the run reached.
func (c *contractChecker) unexercised() []string {
	var out []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			hit := false
			c.seen.Range(func(k, _ any) bool {
				hit = strings.HasPrefix(k.(string), method+" "+path+" ")
				return !hit
			})
			if !hit {
				out = append(out, method+" "+path)
			}
		}
	}
	for name := range c.events {
		if _, ok := c.seen.Load("event " + name); !ok {
			out = append(out, "event "+name)
		}
	}
	sort.Strings(out)
	return out
}

func newContractChecker() *contractChecker {
	c, err := loadContract()
	if err != nil {
		fmt.Fprintln(os.Stderr, "contract: the OpenAPI document does not load:", err)
		os.Exit(1)
	}
	return c
}

// docURL is where the compiler finds the document.
const docURL = "mem:///openapi.json"

func loadContract() (*contractChecker, error) {
	raw := openapi.JSON()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, err
	}
	if err := sharedKeywordsOnly(doc); err != nil {
		return nil, err
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	// openapi3filter's own validator from here on (see above).
	doc.OpenAPI = "3.0.3"

	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.AssertFormat()
	if err := comp.AddResource(docURL, inst); err != nil {
		return nil, err
	}
	c := &contractChecker{
		doc: doc, router: router, events: map[string]string{}, owners: map[string]*testing.T{},
		compiler: comp, schemas: map[string]*jsonschema.Schema{},
	}
	op := doc.Paths.Value("/api/jobs/{id}/events").Get
	mt := op.Responses.Status(http.StatusOK).Value.Content.Get("text/event-stream")
	evs, _ := mt.Extensions[openapi.EventsExtension].(map[string]any)
	for name, v := range evs {
		m, _ := v.(map[string]any)
		ref, _ := m["$ref"].(string)
		if _, err := c.schema(ref); err != nil {
			return nil, fmt.Errorf("event %s: %w", name, err)
		}
		c.events[name] = ref
	}
	if len(c.events) == 0 {
		return nil, fmt.Errorf("no %s in the events operation", openapi.EventsExtension)
	}
	c.eventID = regexp.MustCompile(doc.Components.Schemas["EventID"].Value.Pattern)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	c.base = t
	return c, nil
}

// sharedKeywordsOnly checks that the schemas of parameters and headers,
// which openapi3filter validates, use no keyword of JSON Schema 2020-12
// that OpenAPI 3.0 lacks.
func sharedKeywordsOnly(doc *openapi3.T) error {
	check := func(where string, s *openapi3.SchemaRef) error {
		if s == nil || s.Value == nil {
			return nil
		}
		v := s.Value
		if v.Const != nil || v.PropertyNames != nil || v.UnevaluatedProperties.Has != nil || v.UnevaluatedProperties.Schema != nil ||
			v.If != nil || len(v.PrefixItems) > 0 || v.Contains != nil || len(v.PatternProperties) > 0 ||
			v.ExclusiveMin.IsSet() || v.ExclusiveMax.IsSet() || (v.Type != nil && len(*v.Type) > 1) {
			return fmt.Errorf("%s: use only keywords of OpenAPI 3.0 in parameter and header schemas", where)
		}
		return nil
	}
	headers := func(where string, hs openapi3.Headers) error {
		for name, h := range hs {
			if err := check(where+" header "+name, h.Value.Schema); err != nil {
				return err
			}
		}
		return nil
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for _, p := range append(item.Parameters, op.Parameters...) {
				if err := check(where+" parameter "+p.Value.Name, p.Value.Schema); err != nil {
					return err
				}
			}
			for code, r := range op.Responses.Map() {
				if err := headers(where+" "+code, r.Value.Headers); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// schema returns the compiled JSON Schema at loc, a reference into the
// document such as "#/components/schemas/Error".
func (c *contractChecker) schema(loc string) (*jsonschema.Schema, error) {
	c.schemaMu.Lock()
	defer c.schemaMu.Unlock()
	if s := c.schemas[loc]; s != nil {
		return s, nil
	}
	if !strings.HasPrefix(loc, "#/") {
		return nil, fmt.Errorf("%q is not a reference into the document", loc)
	}
	s, err := c.compiler.Compile(docURL + loc)
	if err != nil {
		return nil, err
	}
	c.schemas[loc] = s
	return s, nil
}

// validate checks the JSON data against the schema at loc.
func (c *contractChecker) validate(loc string, data []byte) error {
	s, err := c.schema(loc)
	if err != nil {
		return fmt.Errorf("schema %s: %w", loc, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not one JSON value: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("does not match %s: %w", loc, err)
	}
	return nil
}

// pointer escapes a JSON Pointer segment for a URI fragment.
func pointer(seg string) string {
	return url.PathEscape(strings.ReplaceAll(strings.ReplaceAll(seg, "~", "~0"), "/", "~1"))
}

// mediaSchema returns the location of the schema of the media type of
// content that mt (a Content-Type) matches; base is the location of the
// object content belongs to. ok is false when no media type matches; loc
// is empty when the media type has no schema.
func mediaSchema(base string, content openapi3.Content, mt string) (loc string, ok bool) {
	m := content.Get(mt)
	if m == nil {
		return "", false
	}
	if m.Schema == nil {
		return "", true
	}
	for key, v := range content {
		if v == m {
			return base + "/content/" + pointer(key) + "/schema", true
		}
	}
	return "", true
}

// contractClient returns an HTTP client whose traffic to the api at apiURL
// is checked against the contract, on t's account until t ends.
func contractClient(t *testing.T, apiURL string) *http.Client {
	t.Helper()
	u, err := url.Parse(apiURL)
	if err != nil {
		t.Fatalf("api URL %q: %v", apiURL, err)
	}
	contract.mu.Lock()
	contract.owners[u.Host] = t
	contract.mu.Unlock()
	t.Cleanup(func() {
		contract.mu.Lock()
		delete(contract.owners, u.Host)
		contract.mu.Unlock()
	})
	return &http.Client{Transport: contract}
}

// finish reports the mismatches that no test owned and returns the exit
// code of the run: code, or 1 when there were such mismatches.
func (c *contractChecker) finish(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if testing.Verbose() || len(c.orphans) > 0 {
		fmt.Printf("contract: %d exchanges and %d SSE events checked against the OpenAPI document, %d mismatches\n",
			c.requests.Load(), c.eventsSeen.Load(), c.mismatches.Load())
		if u := c.unexercised(); len(u) > 0 {
			fmt.Printf("contract: not exercised by this run: %s\n", strings.Join(u, ", "))
		}
	}
	for _, m := range c.orphans {
		fmt.Fprintln(os.Stderr, "contract mismatch (after its test ended):", m)
	}
	if len(c.orphans) > 0 && code == 0 {
		return 1
	}
	return code
}

func (c *contractChecker) report(host, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 3000 {
		msg = msg[:3000] + "…"
	}
	c.mismatches.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.owners[host]; t != nil {
		t.Errorf("contract: %s", msg)
		return
	}
	c.orphans = append(c.orphans, msg)
}

// owned reports whether host is an api of startStack (or of the checker's
// own test, registered with a nil test: its mismatches are orphans).
func (c *contractChecker) owned(host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.owners[host]
	return ok
}

// refusedAsMalformed are the error codes that say the api did not take the
// request's form: a request the document allows must not get them.
var refusedAsMalformed = map[string]bool{"malformed_json": true, "unknown_field": true, "unsupported_media_type": true}

// RoundTrip sends req and checks it and its answer against the contract
// when it goes to an api of startStack; other traffic passes untouched.
func (c *contractChecker) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if !c.owned(host) {
		return c.base.RoundTrip(req)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	send := req.Clone(req.Context())
	if body != nil {
		send.Body = io.NopCloser(bytes.NewReader(body))
		send.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		send.ContentLength = int64(len(body))
	}
	what := req.Method + " " + req.URL.RequestURI()

	check := req.Clone(context.WithoutCancel(req.Context()))
	check.Body = io.NopCloser(bytes.NewReader(body))
	route, params, routeErr := c.router.FindRoute(check)

	resp, err := c.base.RoundTrip(send)
	if err != nil {
		return nil, err
	}
	c.requests.Add(1)
	status := resp.StatusCode
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if routeErr != nil {
		// Not an operation of the document: only the api's own 404 and
		// 405 answers under /api are checked, for the error model.
		if strings.HasPrefix(req.URL.Path, "/api/") && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
			b, err := readBody(resp)
			if err != nil {
				return nil, err
			}
			if err := c.validate("#/components/schemas/Error", b); err != nil || mt != "application/json" {
				c.report(host, "%s → %d %s: not the error model: %v", what, status, mt, err)
			}
		}
		return resp, nil
	}

	c.count(req.Method + " " + route.Path + " " + strconv.Itoa(status))
	opts := &openapi3filter.Options{
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, SkipSettingDefaults: true, IncludeResponseStatus: true,
		ExcludeRequestBody: true, ExcludeResponseBody: true,
	}
	in := &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(check.Context(), in)
	if reqErr == nil {
		reqErr = c.checkRequestBody(route, req.Header.Get("Content-Type"), body)
	}
	if reqErr != nil && status < 400 {
		c.report(host, "%s → %d: the api accepted a request the document refuses: %v", what, status, reqErr)
	}

	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: resp.Header, Options: opts}
	if err := openapi3filter.ValidateResponse(check.Context(), out); err != nil {
		c.report(host, "%s → %d: %v", what, status, err)
	}
	ref := route.Operation.Responses.Status(status)
	if ref == nil || len(ref.Value.Content) == 0 || req.Method == http.MethodHead {
		return resp, nil // undocumented statuses were reported above
	}
	base := ref.Ref
	if base == "" {
		base = "#/paths/" + pointer(route.Path) + "/" + strings.ToLower(req.Method) + "/responses/" + strconv.Itoa(status)
	}
	loc, ok := mediaSchema(base, ref.Value.Content, mt)
	if !ok {
		c.report(host, "%s → %d: Content-Type %q is not among the answer's media types", what, status, resp.Header.Get("Content-Type"))
		return resp, nil
	}
	if mt == "text/event-stream" {
		resp.Body = &sseChecker{c: c, host: host, what: what, body: resp.Body}
		return resp, nil
	}
	b, err := readBody(resp)
	if err != nil {
		return nil, err
	}
	if loc != "" && strings.HasSuffix(mt, "json") {
		if err := c.validate(loc, b); err != nil {
			c.report(host, "%s → %d: body %s: %v", what, status, clip(string(b)), err)
		}
	}
	if reqErr == nil && status >= 400 && mt == "application/json" {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && refusedAsMalformed[e.Error.Code] {
			c.report(host, "%s → %d %s (%s): the api refused a request the document allows", what, status, e.Error.Code, e.Error.Message)
		}
	}
	return resp, nil
}

// checkRequestBody checks a request's body against its operation's.
func (c *contractChecker) checkRequestBody(route *routers.Route, ctype string, body []byte) error {
	rb := route.Operation.RequestBody
	if rb == nil {
		if len(body) > 0 {
			return fmt.Errorf("the operation takes no body")
		}
		return nil
	}
	if len(body) == 0 {
		if rb.Value.Required {
			return fmt.Errorf("the body is required")
		}
		return nil
	}
	mt, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return fmt.Errorf("Content-Type %q: %w", ctype, err)
	}
	base := rb.Ref
	if base == "" {
		base = "#/paths/" + pointer(route.Path) + "/" + strings.ToLower(route.Method) + "/requestBody"
	}
	loc, ok := mediaSchema(base, rb.Value.Content, mt)
	switch {
	case !ok:
		return fmt.Errorf("Content-Type %q is not among the request's media types", ctype)
	case loc == "":
		return nil
	}
	return c.validate(loc, body)
}

// readBody reads resp's body whole and puts it back for the caller.
func readBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// sseChecker passes an event stream through to its reader and checks each
// event as it completes: a documented name, an id, and one line of data
// that validates against the name's schema.
type sseChecker struct {
	c          *contractChecker
	host, what string
	body       io.ReadCloser

	line []byte // the partial line read so far
	cr   bool   // the last read ended with \r
	// The event being read.
	id, event string
	data      []string
	hasID     bool
}

func (s *sseChecker) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	s.feed(p[:n])
	return n, err
}

func (s *sseChecker) Close() error { return s.body.Close() }

func (s *sseChecker) feed(b []byte) {
	if s.cr && len(b) > 0 && b[0] == '\n' {
		b = b[1:] // the \n of a \r\n split between two reads
	}
	s.cr = false
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			s.line = append(s.line, b...)
			return
		}
		s.line = append(s.line, b[:i]...)
		if b[i] == '\r' {
			if i+1 == len(b) {
				s.cr = true
			} else if b[i+1] == '\n' {
				i++
			}
		}
		b = b[i+1:]
		s.processLine(string(s.line))
		s.line = s.line[:0]
	}
}

func (s *sseChecker) processLine(line string) {
	if line == "" {
		s.dispatch()
		return
	}
	if strings.HasPrefix(line, ":") {
		return // a comment (": ping")
	}
	field, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	switch field {
	case "id":
		s.id, s.hasID = value, true
	case "event":
		s.event = value
	case "data":
		s.data = append(s.data, value)
	case "retry":
		if value == "" || strings.Trim(value, "0123456789") != "" {
			s.c.report(s.host, "%s: retry: %q is not a number of milliseconds", s.what, value)
		}
	default:
		s.c.report(s.host, "%s: undocumented SSE field %q", s.what, field)
	}
}

func (s *sseChecker) dispatch() {
	if s.data == nil && s.event == "" && !s.hasID {
		return
	}
	defer func() { s.id, s.event, s.data, s.hasID = "", "", nil, false }()
	s.c.eventsSeen.Add(1)
	name := s.event
	if name == "" {
		name = "message"
	}
	where := fmt.Sprintf("%s: event %s (id %s)", s.what, name, s.id)
	if !s.hasID || !s.c.eventID.MatchString(s.id) {
		s.c.report(s.host, "%s: the id is not an event id", where)
	}
	loc, ok := s.c.events[name]
	s.c.count("event " + name)
	if !ok {
		s.c.report(s.host, "%s: not an event of the document (%s names %s)", where, openapi.EventsExtension, eventNames(s.c.events))
		return
	}
	if len(s.data) != 1 {
		s.c.report(s.host, "%s: %d data lines, want one line of JSON", where, len(s.data))
	}
	data := strings.Join(s.data, "\n")
	if err := s.c.validate(loc, []byte(data)); err != nil {
		s.c.report(s.host, "%s: data %s: %v", where, clip(data), err)
	}
}

func eventNames(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// TestContractOtherRoutes exercises, under the contract, the operations
// the other tests do not reach: monitoring, health, and the document and
// its reference page (once the api mounts them).
func TestContractOtherRoutes(t *testing.T) {
	t.Parallel()
	e := startStack(t, 1, nil, nil)
	id := submit(t, e, client.SubmitRequest{Question: "Is this measured?", Complexity: "brief", TimePoints: []client.TimePoint{{Date: "2023-01-01"}}})
	if evs := collect(t, e, id); terminalStatus(t, evs) != "completed" {
		t.Fatalf("job ended %s", terminalStatus(t, evs))
	}
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(e.apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// The job's timings reach the monitoring samples when it ends.
	waitUntil(t, 10*time.Second, func() bool {
		status, b := get("/api/monitoring/stats?window=15m")
		var st struct{ Jobs int }
		return status == http.StatusOK && json.Unmarshal(b, &st) == nil && st.Jobs > 0
	})
	for path, want := range map[string]int{
		"/api/monitoring/stats":                       http.StatusOK,
		"/api/monitoring/latency-breakdown":           http.StatusOK,
		"/api/monitoring/latency-breakdown?window=1h": http.StatusOK,
		"/api/monitoring/alerts":                      http.StatusOK,
		"/api/monitoring/alerts?window=soon":          http.StatusBadRequest,
		"/api/models":                                 http.StatusOK,
		"/api/usage":                                  http.StatusOK,
		"/healthz":                                    http.StatusOK,
		"/readyz":                                     http.StatusOK,
	} {
		if status, b := get(path); status != want {
			t.Errorf("GET %s: %d %s, want %d", path, status, b, want)
		}
	}
	// The document and the page, where the api serves them: asked outside
	// the contract first, as a 404 would be a mismatch.
	resp, err := contract.base.RoundTrip(mustRequest(t, e.apiURL+"/openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Log("the api does not serve /openapi.json and /docs yet")
		return
	}
	if status, b := get("/openapi.json"); status != http.StatusOK || !bytes.Equal(b, openapi.JSON()) {
		t.Errorf("GET /openapi.json: %d, %d bytes, not the document", status, len(b))
	}
	noRedirect := &http.Client{Transport: contract, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]int{"/docs": http.StatusMovedPermanently, "/docs/": http.StatusOK} {
		resp, err := noRedirect.Get(e.apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestContractChecker checks the checker itself on canned streams and
// answers, without an api: a checker that passed everything would hide
// drift.
func TestContractChecker(t *testing.T) {
	id := "0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f"
	const host = "contract.test:1"
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	c.owners[host] = nil // mismatches go to c.orphans
	collect := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		m := c.orphans
		c.orphans = nil
		return m
	}

	stream := "retry: 2000\n\n" +
		"id: 1-0\nevent: job.accepted\ndata: {\"job_id\":\"" + id + "\",\"kind\":\"timetravel\",\"question\":\"q\",\"complexity\":\"brief\",\"deadline\":\"2024-01-01T00:00:00Z\",\"time_points\":[]}\n\n" +
		": ping\n\n" +
		"id: 1-1\r\nevent: snapshot.delta\r\ndata: {\"index\":0,\"text\":\"a\"}\r\n\r\n" +
		"id: 1-2\nevent: job.completed\ndata: {\"job_id\":\"" + id + "\",\"status\":\"completed\"}\n\n"
	// Read in chunks of any size, the stream is fine.
	for size := 1; size <= len(stream); size *= 3 {
		s := &sseChecker{c: c, host: host, what: "GET stream", body: io.NopCloser(strings.NewReader(stream))}
		buf := make([]byte, size)
		for {
			if _, err := s.Read(buf); err != nil {
				break
			}
		}
		if m := collect(); len(m) > 0 {
			t.Fatalf("chunks of %d: %v", size, m)
		}
		if c.eventsSeen.Load() == 0 {
			t.Fatal("no event was checked")
		}
	}
	for _, bad := range []string{
		"id: 1-0\nevent: snapshot.delta\ndata: {\"text\":\"no index\"}\n\n",
		"id: 1-0\nevent: job.vanished\ndata: {}\n\n",
		"event: job.completed\ndata: {\"job_id\":\"" + id + "\",\"status\":\"completed\"}\n\n",
		"id: 1-0\nevent: job.completed\ndata: {\"job_id\":\"" + id + "\",\"status\":\"completed\",\"cached\":false}\n\n",
		"id: 1-0\nevent: narrative.delta\ndata: not json\n\n",
	} {
		s := &sseChecker{c: c, host: host, what: "GET stream", body: io.NopCloser(strings.NewReader(bad))}
		_, _ = io.Copy(io.Discard, s)
		if m := collect(); len(m) == 0 {
			t.Errorf("%q passes", bad)
		}
	}

	// Whole exchanges, against a fake api.
	answer := func(status int, ctype, body string, h map[string]string) http.RoundTripper {
		return rtFunc(func(*http.Request) (*http.Response, error) {
			hd := http.Header{"Content-Type": {ctype}}
			for k, v := range h {
				hd.Set(k, v)
			}
			return &http.Response{StatusCode: status, Header: hd, Body: io.NopCloser(strings.NewReader(body))}, nil
		})
	}
	noCache := map[string]string{"Cache-Control": "no-cache"}
	// The handlers of package openapi, as the api mounts them.
	mux := http.NewServeMux()
	mux.Handle("/openapi.json", openapi.Handler())
	mux.Handle("/docs", openapi.DocsHandler("/docs"))
	mux.Handle("/docs/", openapi.DocsHandler("/docs"))
	served := rtFunc(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		return rec.Result(), nil
	})
	for _, x := range []struct {
		name         string
		method, path string
		body         string
		rt           http.RoundTripper
		wantMismatch bool
	}{
		{"incomplete job", "GET", "/api/jobs/" + id, "", answer(200, "application/json", `{"job_id":"`+id+`"}`, nil), true},
		{"404", "GET", "/api/jobs/" + id, "", answer(404, "application/json", `{"error":{"code":"job_not_found","message":"no job"}}`, nil), false},
		{"404 with a code the document lacks", "GET", "/api/jobs/" + id, "", answer(404, "application/json", `{"error":{"code":"gone","message":"no job"}}`, nil), true},
		{"undocumented status", "GET", "/api/jobs/" + id, "", answer(418, "application/json", `{"error":{"code":"internal","message":"x"}}`, nil), true},
		{"401 without its challenge", "GET", "/api/usage", "", answer(401, "application/json", `{"error":{"code":"unauthorized","message":"x"}}`, nil), true},
		{"bad request refused", "POST", "/api/time-travel", `{"colour":"red"}`, answer(400, "application/json", `{"error":{"code":"unknown_field","message":"x","field":"colour"}}`, nil), false},
		{"bad request accepted", "POST", "/api/time-travel", `{"colour":"red"}`, answer(202, "application/json", `{"job_id":"`+id+`","status":"queued","links":{"self":"/api/jobs/`+id+`","events":"/api/jobs/`+id+`/events"}}`, map[string]string{"Location": "/api/jobs/" + id}), true},
		{"good request refused as malformed", "POST", "/api/time-travel", `{"question":"q"}`, answer(400, "application/json", `{"error":{"code":"unknown_field","message":"x","field":"question"}}`, nil), true},
		{"accepted", "POST", "/api/time-travel", `{"question":"q"}`, answer(202, "application/json", `{"job_id":"`+id+`","status":"queued","links":{"self":"/api/jobs/`+id+`","events":"/api/jobs/`+id+`/events?token=a.1.b"}}`, map[string]string{"Location": "/api/jobs/" + id}), false},
		{"accepted without Location", "POST", "/api/time-travel", `{"question":"q"}`, answer(202, "application/json", `{"job_id":"`+id+`","status":"queued","links":{"self":"/api/jobs/`+id+`","events":"/api/jobs/`+id+`/events"}}`, nil), true},
		{"trailing data refused", "POST", "/api/time-travel", `{"question":"q"} {}`, answer(400, "application/json", `{"error":{"code":"malformed_json","message":"x"}}`, nil), false},
		{"stream", "GET", "/api/jobs/" + id + "/events", "", answer(200, "text/event-stream", "retry: 2000\n\nid: 1-0\nevent: narrative.delta\ndata: {\"text\":\"n\"}\n\n", noCache), false},
		{"stream with a bad event", "GET", "/api/jobs/" + id + "/events", "", answer(200, "text/event-stream", "id: 1-0\nevent: narrative.delta\ndata: {}\n\n", noCache), true},
		{"stream without Cache-Control", "GET", "/api/jobs/" + id + "/events", "", answer(200, "text/event-stream", "", nil), true},
		{"stream resumed after the end", "GET", "/api/jobs/" + id + "/events", "", answer(204, "", "", nil), false},
		{"bad Last-Event-ID accepted", "GET", "/api/jobs/" + id + "/events?last_event_id=x", "", answer(200, "text/event-stream", "", noCache), true},
		{"the document", "GET", "/openapi.json", "", served, false},
		{"the page's address", "GET", "/docs", "", served, false},
		{"the page", "GET", "/docs/", "", served, false},
		{"unrouted 404", "GET", "/api/nothing", "", answer(404, "application/json", `{"error":{"code":"not_found","message":"x"}}`, nil), false},
		{"unrouted 404 not the error model", "GET", "/api/nothing", "", answer(404, "text/plain", `404 page not found`, nil), true},
	} {
		c.base = x.rt
		var body io.Reader = http.NoBody
		if x.body != "" {
			body = strings.NewReader(x.body)
		}
		req, _ := http.NewRequest(x.method, "http://"+host+x.path, body)
		if x.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", x.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		m := collect()
		if (len(m) > 0) != x.wantMismatch {
			t.Errorf("%s: mismatches %v, want any: %v", x.name, m, x.wantMismatch)
		}
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
