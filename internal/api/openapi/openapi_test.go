package openapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"

	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/api/openapi"
	"github.com/timetravel-ai/timetravel/internal/ensemble"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/kinds"
	"github.com/timetravel-ai/timetravel/internal/metrics"
	"github.com/timetravel-ai/timetravel/internal/monitoring"
	"github.com/timetravel-ai/timetravel/internal/quota"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
	"github.com/timetravel-ai/timetravel/internal/worker"
)

// load parses and validates the document as kin-openapi does for the e2e
// suite's contract checks.
func load(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.JSON())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	return doc
}

func TestDocumentIsValidOpenAPI31(t *testing.T) {
	doc := load(t)
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	if !json.Valid(openapi.JSON()) {
		t.Fatal("JSON() is not valid JSON")
	}
	// JSON keeps the order of openapi.yaml.
	var head struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(openapi.JSON(), &head); err != nil || !bytes.HasPrefix(openapi.JSON(), []byte(`{"openapi":"3.1.0"`)) {
		t.Fatalf("document starts %.40s (%v)", openapi.JSON(), err)
	}
	// JSON returns a copy.
	b := openapi.JSON()
	b[0] = 'x'
	if openapi.JSON()[0] != '{' {
		t.Fatal("JSON shares its buffer with callers")
	}
}

// TestRoutes checks that every route of the api is in the document.
func TestRoutes(t *testing.T) {
	doc := load(t)
	for _, r := range []struct{ method, path string }{
		{"POST", "/api/time-travel"},
		{"POST", "/api/ensemble"},
		{"GET", "/api/jobs"},
		{"GET", "/api/jobs/{id}"},
		{"DELETE", "/api/jobs/{id}"},
		{"GET", "/api/jobs/{id}/events"},
		{"POST", "/api/cache/warm"},
		{"GET", "/api/usage"},
		{"GET", "/api/models"},
		{"GET", "/api/monitoring/stats"},
		{"GET", "/api/monitoring/latency-breakdown"},
		{"GET", "/api/monitoring/alerts"},
		{"GET", "/api/monitoring/system"},
		{"GET", "/healthz"},
		{"GET", "/readyz"},
		{"GET", "/metrics"},
		{"GET", "/openapi.json"},
		{"GET", "/docs"},
		{"GET", "/docs/"},
	} {
		item := doc.Paths.Value(r.path)
		if item == nil || item.GetOperation(r.method) == nil {
			t.Errorf("%s %s is not in the document", r.method, r.path)
		}
	}
}

// TestErrorCodes checks the code enum against the Code constants of
// internal/api/errors.go.
func TestErrorCodes(t *testing.T) {
	doc := load(t)
	var inDoc []string
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		inDoc = append(inDoc, v.(string))
	}
	f, err := parser.ParseFile(token.NewFileSet(), "../errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var inCode []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Code") {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			s, _ := strconv.Unquote(lit.Value)
			inCode = append(inCode, s)
		}
		return true
	})
	slices.Sort(inDoc)
	slices.Sort(inCode)
	if len(inCode) == 0 || !slices.Equal(inDoc, inCode) {
		t.Fatalf("ErrorCode enum %v, errors.go has %v", inDoc, inCode)
	}

	var limits []string
	for _, v := range doc.Components.Schemas["LimitName"].Value.Enum {
		limits = append(limits, v.(string))
	}
	want := []string{quota.LimitSubmissions, quota.LimitRunning, quota.LimitStored, quota.LimitStoredGlobal,
		quota.LimitTokens, quota.LimitSSE, quota.LimitSSEProcess}
	slices.Sort(limits)
	slices.Sort(want)
	if !slices.Equal(limits, want) {
		t.Fatalf("LimitName enum %v, package quota has %v", limits, want)
	}
}

// eventSchemas returns the event name → schema map of the events operation.
func eventSchemas(t *testing.T, doc *openapi3.T) map[string]*openapi3.Schema {
	t.Helper()
	op := doc.Paths.Value("/api/jobs/{id}/events").Get
	mt := op.Responses.Status(200).Value.Content.Get("text/event-stream")
	raw, ok := mt.Extensions[openapi.EventsExtension].(map[string]any)
	if !ok {
		t.Fatalf("no %s on the events media type", openapi.EventsExtension)
	}
	out := map[string]*openapi3.Schema{}
	for name, v := range raw {
		ref, _ := v.(map[string]any)["$ref"].(string)
		s := doc.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")]
		if s == nil || !strings.HasPrefix(ref, "#/components/schemas/") {
			t.Fatalf("event %s: $ref %q names no schema", name, ref)
		}
		out[name] = s.Value
	}
	return out
}

// TestEventSchemas checks that every event clients get, of every kind
// (events.Catalog), has a schema, and that the payloads of package events
// (as the Go code and the store's scripts write them) validate against
// it. internal/tooling/contract compares the schemas with the catalog
// member by member.
func TestEventSchemas(t *testing.T) {
	doc := load(t)
	schemas := eventSchemas(t, doc)
	var names []string
	for _, k := range kinds.Registry().All() {
		specs, err := events.Catalog(k)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range specs {
			if !s.Internal && !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
		}
	}
	got := make([]string, 0, len(schemas))
	for n := range schemas {
		got = append(got, n)
	}
	slices.Sort(got)
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Fatalf("%s names %v, want %v", openapi.EventsExtension, got, names)
	}
	// The names the generic rules make for time travel are those.
	noun := timetravel.Kind{}.Noun()
	for name, want := range map[string]string{
		events.MemberEvent(noun, events.VerbStarted):                      timetravel.EventSnapshotStarted,
		events.MemberEvent(noun, events.VerbDelta):                        timetravel.EventSnapshotDelta,
		events.MemberEvent(noun, events.VerbCompleted):                    timetravel.EventSnapshotCompleted,
		events.MemberEvent(noun, events.VerbFailed):                       timetravel.EventSnapshotFailed,
		events.PartEvent(timetravel.PartKeyChanges, events.VerbCompleted): timetravel.EventKeyChangesCompleted,
		events.PartEvent(timetravel.PartKeyChanges, events.VerbFailed):    timetravel.EventKeyChangesFailed,
		events.PartEvent(timetravel.PartNarrative, events.VerbDelta):      timetravel.EventNarrativeDelta,
		events.PartEvent(timetravel.PartNarrative, events.VerbCompleted):  timetravel.EventNarrativeCompleted,
		events.PartEvent(timetravel.PartNarrative, events.VerbFailed):     timetravel.EventNarrativeFailed,
	} {
		if name != want {
			t.Errorf("generic event name %q, time travel's is %q", name, want)
		}
	}

	id := "0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f"
	zero := 0
	kc := []timetravel.KeyChange{{From: "2023-01-01", To: "2024-05-01", FromLabel: "January 2023", ToLabel: "May 2024", Changes: []string{"more"}}}
	// accepted is job.accepted as the store writes it: the common fields
	// and the kind's (timetravel.Kind.Accepted).
	accepted := func(common events.AcceptedData, spec job.Spec) json.RawMessage {
		t.Helper()
		k, err := kinds.Registry().Of(spec)
		if err != nil {
			t.Fatal(err)
		}
		extra, err := k.Accepted(spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(extra)
		if err != nil {
			t.Fatal(err)
		}
		b, err := events.AcceptedPayload(common, raw)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	brief := timetravel.Spec("q", timetravel.Params{Complexity: timetravel.ComplexityBrief,
		TimePoints: []timetravel.TimePoint{{Date: "2023-01-01", Label: "January 2023"}}})
	// member is a snapshot's identity, as its events carry it
	// (job.Member.RefData), with the fields kv.
	member := func(index int, date, label string, kv ...any) map[string]any {
		d := job.Member{Index: index, Label: label, Ref: map[string]string{"date": date}}.RefData()
		for i := 0; i+1 < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	answer := job.Member{Index: 1, Label: "b"}
	ensembleEvent := func(verb string) string { return events.MemberEvent(ensemble.Noun, verb) }
	analysis, err := json.Marshal(ensemble.Analysis{Consensus: []string{"c"},
		Disagreements: []ensemble.Disagreement{{Topic: "t", Positions: []ensemble.Position{{Model: "a", Position: "p"}}}},
		UniqueClaims:  []ensemble.Claim{{Model: "b", Claim: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	emptyAnalysis := json.RawMessage(`{"consensus":[],"disagreements":[],"unique_claims":[]}`)
	valid := []struct {
		event string
		data  any
	}{
		{events.JobAccepted, accepted(events.AcceptedData{JobID: id, Kind: timetravel.Name, Question: "q", Model: "m",
			Deadline: time.Now().UTC().Format(time.RFC3339Nano)}, brief)},
		{events.JobAccepted, accepted(events.AcceptedData{JobID: id, Kind: timetravel.Name, Question: "q", Deadline: "2024-05-01T10:00:00Z", Cached: true},
			timetravel.Spec("q", timetravel.Params{}))},
		{timetravel.EventSnapshotStarted, member(1, "2023-01-01", "x", "attempt", 2)},
		{timetravel.EventSnapshotStarted, member(0, "2023-01-01", "x", "attempt", 0, "cached", true)},
		{timetravel.EventSnapshotDelta, events.DeltaData{Index: &zero, Text: "a"}},
		{timetravel.EventSnapshotCompleted, member(0, "2023-01-01", "x", "model", "m", "text", "t", "duration_ms", 5)},
		{timetravel.EventSnapshotCompleted, member(0, "2023-01-01", "x", "text", "t", "duration_ms", 0, "cached", true)},
		// As the store's Lua script writes it.
		{timetravel.EventSnapshotFailed, json.RawMessage(`{"index":0,"date":"2023-01-01","label":"x","error":"boom"}`)},
		{events.AggregateStarted, events.AggregateStartedData{Attempt: 1}},
		{timetravel.EventKeyChangesCompleted, map[string]any{timetravel.PartKeyChanges: kc}},
		{timetravel.EventKeyChangesCompleted, map[string]any{timetravel.PartKeyChanges: []timetravel.KeyChange{}, "cached": true}},
		{timetravel.EventKeyChangesFailed, events.ErrorData{Error: "e"}},
		{timetravel.EventNarrativeDelta, events.DeltaData{Text: "n"}},
		{timetravel.EventNarrativeCompleted, map[string]any{"text": "n", "cached": true}},
		{timetravel.EventNarrativeFailed, events.ErrorData{Error: "e"}},
		{events.JobCompleted, events.CompletedData{JobID: id, Status: "partial", Error: "deadline"}},
		{events.JobCompleted, events.CompletedData{JobID: id, Status: "completed", Cached: true}},
		{events.WebhookDelivered, events.WebhookData{WebhookID: "msg_" + id, Attempts: 1, StatusCode: 204}},
		{events.WebhookFailed, events.WebhookData{WebhookID: "msg_" + id, Attempts: 8, StatusCode: 503, Error: "receiver answered 503"}},
		{events.WebhookFailed, events.WebhookData{WebhookID: "msg_" + id, Attempts: 1, Error: "post: connection refused"}},
		{events.WebhookDelivered, events.WebhookDeliveredData{WebhookID: "msg_" + id, Attempts: 2}},
		{events.WebhookFailed, events.WebhookFailedData{WebhookID: "msg_" + id, Attempts: 8, Error: "receiver answered 503"}},
		// An ensemble's.
		{events.JobAccepted, accepted(events.AcceptedData{JobID: id, Kind: ensemble.Name, Question: "q", Deadline: "2024-05-01T10:00:00Z"},
			ensemble.Spec("q", ensemble.Params{Models: []string{"a", "b"}, SynthesisModel: "s"}))},
		{events.JobAccepted, accepted(events.AcceptedData{JobID: id, Kind: ensemble.Name, Question: "q", Deadline: "2024-05-01T10:00:00Z", Cached: true},
			ensemble.Spec("q", ensemble.Params{Models: []string{"a", "b"}}))},
		{ensembleEvent(events.VerbStarted), memberPayload(t, answer, events.MemberStartedData{Attempt: 1})},
		{ensembleEvent(events.VerbStarted), memberPayload(t, answer, events.MemberStartedData{Cached: true})},
		{ensembleEvent(events.VerbDelta), events.MemberDeltaData{Index: 1, Text: "a"}},
		{ensembleEvent(events.VerbCompleted), memberPayload(t, answer, events.MemberCompletedData{Model: "b", Text: "t", DurationMS: 4})},
		{ensembleEvent(events.VerbFailed), memberPayload(t, answer, events.ErrorData{Error: "e"})},
		{events.PartEvent(ensemble.PartSynthesis, events.VerbDelta), events.PartDeltaData{Text: "s"}},
		{events.PartEvent(ensemble.PartSynthesis, events.VerbCompleted), events.PartTextData{Text: "s", Cached: true}},
		{events.PartEvent(ensemble.PartSynthesis, events.VerbFailed), events.ErrorData{Error: "e"}},
		{events.PartEvent(ensemble.PartAnalysis, events.VerbCompleted), events.PartValueData(ensemble.PartAnalysis, analysis, false)},
		{events.PartEvent(ensemble.PartAnalysis, events.VerbCompleted), events.PartValueData(ensemble.PartAnalysis, emptyAnalysis, true)},
		{events.PartEvent(ensemble.PartAnalysis, events.VerbFailed), events.ErrorData{Error: "e"}},
	}
	for _, c := range valid {
		if err := visit(schemas[c.event], c.data); err != nil {
			t.Errorf("%s %+v: %v", c.event, c.data, err)
		}
	}
	invalid := []struct {
		event string
		data  string
	}{
		{timetravel.EventSnapshotDelta, `{"text":"no index"}`},
		{timetravel.EventNarrativeDelta, `{"index":0,"text":"an index"}`},
		{events.JobCompleted, `{"job_id":"` + id + `","status":"running"}`},
		{events.JobCompleted, `{"job_id":"` + id + `","status":"completed","cached":false}`},
		{timetravel.EventSnapshotStarted, `{"index":0,"date":"2023-01-01","label":"x","attempt":1,"extra":1}`},
		{events.AggregateStarted, `{}`},
		// job.accepted without its kind.
		{events.JobAccepted, `{"job_id":"` + id + `","question":"q","complexity":"brief","deadline":"2024-05-01T10:00:00Z","time_points":[]}`},
		// An ensemble's job.accepted with time points, a time-travel job's with models.
		{events.JobAccepted, `{"job_id":"` + id + `","kind":"ensemble","question":"q","deadline":"2024-05-01T10:00:00Z","models":["a"],"time_points":[]}`},
		{events.JobAccepted, `{"job_id":"` + id + `","kind":"timetravel","question":"q","complexity":"brief","deadline":"2024-05-01T10:00:00Z","time_points":[],"models":["a"]}`},
		{ensembleEvent(events.VerbStarted), `{"index":0,"label":"a","date":"2023-01-01","attempt":1}`},
		{events.PartEvent(ensemble.PartSynthesis, events.VerbDelta), `{"text":"t","cached":true}`},
		{events.PartEvent(ensemble.PartAnalysis, events.VerbCompleted), `{"analysis":{"consensus":[],"disagreements":[]}}`},
		{events.WebhookFailed, `{"webhook_id":"msg_` + id + `","attempts":1}`},
	}
	for _, c := range invalid {
		if err := visit(schemas[c.event], json.RawMessage(c.data)); err == nil {
			t.Errorf("%s %s validates", c.event, c.data)
		}
	}
}

// TestGoTypes checks the api's answers, as its Go types marshal them,
// against the document's schemas: with every optional member set, and
// with none. The e2e suite checks the answers the api really gives; this
// also covers those it does not reach (monitoring, warming, webhooks).
func TestGoTypes(t *testing.T) {
	doc := load(t)
	id := "0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f"
	links := api.Links{Self: "/api/jobs/" + id, Events: "/api/jobs/" + id + "/events?token=38e6e8d228b8462d.1796239262.y-GicG7909AD8I2b8mYtvYr6SYn_GlymnZJY69lFJJ8"}
	created := time.Date(2026, 5, 1, 10, 0, 0, 123456789, time.UTC)

	fresh := &job.Job{ID: id, Status: job.StatusQueued, CreatedAt: created, Deadline: created.Add(2 * time.Minute),
		Noun: timetravel.Noun,
		Spec: timetravel.Spec("q", timetravel.Params{Complexity: timetravel.ComplexityStandard,
			TimePoints: []timetravel.TimePoint{{Date: "2023-01-01", Label: "January 2023"}}}),
		Members: []job.Member{{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberPending}}}
	delivered := created.Add(time.Minute)
	endedSpec := timetravel.Spec("q", timetravel.Params{Complexity: timetravel.ComplexityBrief, ForceTimeTravel: true})
	endedSpec.Model, endedSpec.Cache, endedSpec.CallbackURL, endedSpec.Warm = "gpt-4o", job.CacheBypass, "https://user:pw@example.com/hook?token=x#f", true
	kcValue, _ := json.Marshal([]timetravel.KeyChange{{From: "2023-01-01", To: "2024-05-01", FromLabel: "a", ToLabel: "b", Changes: []string{}}})
	ended := &job.Job{ID: id, Status: job.StatusPartial, CreatedAt: created, Deadline: created.Add(2 * time.Minute),
		FinishedAt: created.Add(90 * time.Second), Error: "deadline passed", Noun: timetravel.Noun,
		Spec: endedSpec,
		Members: []job.Member{
			{Index: 0, Label: "January 2023", Ref: map[string]string{"date": "2023-01-01"}, Status: job.MemberCompleted, Text: "t", Model: "gpt-4o", Attempts: 1,
				LLMAttempts: 2, StartedAt: created.UnixMilli() + 10, CompletedAt: created.UnixMilli() + 500, Cached: true},
			{Index: 1, Label: "May 2024", Ref: map[string]string{"date": "2024-05-01"}, Status: job.MemberFailed, Attempts: 3, LLMAttempts: 3, Error: "e",
				StartedAt: created.UnixMilli() + 10, CompletedAt: created.UnixMilli() + 900},
			{Index: 2, Label: "Today", Ref: map[string]string{"date": "2026-05-01"}, Status: job.MemberExpired, Attempts: 1, StartedAt: created.UnixMilli() + 10},
		},
		Result: &job.Result{Parts: []job.Part{
			{Name: timetravel.PartKeyChanges, Value: kcValue, Error: "k", MS: 5, LLMAttempts: 1},
			{Name: timetravel.PartNarrative, Text: "n", Error: "x", MS: 6, LLMAttempts: 2},
		}, StartedAt: created.UnixMilli() + 1000, Cached: true},
		Webhook: &job.Webhook{Status: job.WebhookDelivered, Attempts: 2, LastStatusCode: 204, DeliveredAt: &delivered},
	}
	ensFresh := &job.Job{ID: id, Status: job.StatusRunning, CreatedAt: created, Deadline: created.Add(2 * time.Minute),
		Noun: ensemble.Noun, Spec: ensemble.Spec("q", ensemble.Params{Models: []string{"a", "b"}}),
		Members: []job.Member{{Index: 0, Label: "a", Status: job.MemberRunning, Model: "a", Attempts: 1, StartedAt: created.UnixMilli() + 5},
			{Index: 1, Label: "b", Status: job.MemberPending}}}
	ensSpec := ensemble.Spec("q", ensemble.Params{Models: []string{"a", "b", "c"}, SynthesisModel: "s"})
	ensSpec.Cache, ensSpec.CallbackURL = job.CacheBypass, "https://example.com/hook?token=x"
	analysis, _ := json.Marshal(ensemble.Analysis{Consensus: []string{"c"},
		Disagreements: []ensemble.Disagreement{{Topic: "t", Positions: []ensemble.Position{{Model: "a", Position: "p"}, {Model: "b", Position: "q"}}}},
		UniqueClaims:  []ensemble.Claim{{Model: "b", Claim: "x"}}})
	ensEnded := &job.Job{ID: id, Status: job.StatusPartial, CreatedAt: created, Deadline: created.Add(2 * time.Minute),
		FinishedAt: created.Add(30 * time.Second), Noun: ensemble.Noun, Spec: ensSpec,
		Members: []job.Member{
			{Index: 0, Label: "a", Status: job.MemberCompleted, Text: "t", Model: "a-fallback", Attempts: 1, LLMAttempts: 2,
				StartedAt: created.UnixMilli() + 10, CompletedAt: created.UnixMilli() + 500},
			{Index: 1, Label: "b", Status: job.MemberCompleted, Text: "u", Model: "b", Attempts: 0,
				StartedAt: created.UnixMilli() + 10, CompletedAt: created.UnixMilli() + 11, Cached: true},
			{Index: 2, Label: "c", Status: job.MemberFailed, Attempts: 1, LLMAttempts: 1, Error: "provider answered 401",
				StartedAt: created.UnixMilli() + 10, CompletedAt: created.UnixMilli() + 300},
		},
		Result: &job.Result{Parts: []job.Part{
			{Name: ensemble.PartSynthesis, Text: "s", Model: "s", MS: 700, LLMAttempts: 1},
			{Name: ensemble.PartAnalysis, Value: analysis, MS: 400, LLMAttempts: 3},
		}, StartedAt: created.UnixMilli() + 600},
		Webhook: &job.Webhook{Status: job.WebhookFailed, Attempts: 8, LastStatusCode: 503, LastError: "receiver answered 503"},
	}
	// The analysis failed: the view's analysis is null.
	ensNoAnalysis := *ensEnded
	ensNoAnalysis.Result = &job.Result{Parts: []job.Part{
		{Name: ensemble.PartSynthesis, Text: "s", MS: 700, LLMAttempts: 1},
		{Name: ensemble.PartAnalysis, Error: "not JSON", MS: 400, LLMAttempts: 2},
	}, StartedAt: created.UnixMilli() + 600}

	reg := kinds.Registry()
	view := func(j *job.Job) job.View {
		t.Helper()
		v, err := reg.View(j)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	hook := view(ended)
	hook.Webhook = nil
	ensHook := view(ensEnded)
	ensHook.Webhook = nil

	samples := []monitoring.Sample{
		{JobID: id, Status: "completed", Stages: map[string]int64{metrics.StageQueueWait: 5, metrics.StageSnapshots: 900,
			metrics.StageFanIn: 3, metrics.StageKeyChanges: 200, metrics.StageNarrative: 300, metrics.StageTotal: 120000},
			Noun: string(timetravel.Noun), Members: []int64{500, 900}},
		{JobID: id, Status: "failed", Stages: map[string]int64{metrics.StageQueueWait: 5}},
		monitoring.FromJob(ensEnded),
	}
	stats := monitoring.Stats(samples)
	th := monitoring.Thresholds{TotalP95Warning: time.Second, TotalP95Critical: time.Minute, SnapshotP95Warning: time.Millisecond}

	for _, c := range []struct {
		schema string
		value  any
	}{
		{"Accepted", api.Accepted{JobID: id, Status: job.StatusQueued, Links: links}},
		{"Accepted", api.Accepted{JobID: id, Status: job.StatusCompleted, Joined: true, Cached: true, CachedSnapshots: 2, Links: links}},
		{"JobView", api.JobView{View: view(fresh), Links: links}},
		{"JobView", api.JobView{View: view(ended), Links: links}},
		{"WebhookBody", worker.WebhookBody{Type: "job.partial", Timestamp: "2026-05-01T10:01:30.000Z", Data: hook}},
		{"JobView", api.JobView{View: view(ensFresh), Links: links}},
		{"JobView", api.JobView{View: view(ensEnded), Links: links}},
		{"JobView", api.JobView{View: view(&ensNoAnalysis), Links: links}},
		{"WebhookBody", worker.WebhookBody{Type: "job.partial", Timestamp: "2026-05-01T10:00:30.000Z", Data: ensHook}},
		{"WarmAccepted", api.WarmAccepted{Results: []api.WarmResult{{Question: "q", Outcome: api.WarmCached},
			{Question: "r", Outcome: api.WarmQueued, JobID: id, Links: &links}, {Question: "s", Outcome: api.WarmJoined, JobID: id, Links: &links}}}},
		{"UsageView", api.UsageView{Key: api.KeyView{ID: "anonymous"}}},
		{"UsageView", api.UsageView{Key: api.KeyView{ID: "0123456789abcdef", Name: "team-a"},
			Limits: api.LimitsView{SubmissionsPerMinute: 60, RunningJobs: 16, StoredJobs: 5000, TokensPerDay: 2000000, SSEConnections: 32},
			Usage:  api.UsageNow{SubmissionsAvailable: 57, RunningJobs: 2, StoredJobs: 311, TokensToday: 48211, SSEConnections: 1}}},
		{"ModelsView", api.ModelsView{Default: "gpt-4o", Models: []string{"gpt-4o", "gpt-4o-mini"}}},
		{"JobList", api.JobList{Jobs: []api.JobSummary{}}},
		{"JobList", api.JobList{Jobs: []api.JobSummary{
			{JobID: id, Kind: timetravel.Name, Status: job.StatusQueued, Question: "q", CreatedAt: created},
			{JobID: id, Kind: ensemble.Name, Status: job.StatusCompleted, Question: "q", CreatedAt: created, FinishedAt: &delivered,
				TotalMS: new(int64), Cached: true},
		}, NextCursor: "MTc2MjE3ODQwMDEyMy4wMTkw_-x"}},
		{"StatsResponse", api.StatsResponse{Window: "1h0m0s", Jobs: 2, Stages: stats}},
		{"StatsResponse", api.StatsResponse{Window: "15m0s", Stages: monitoring.Stats(nil)}},
		{"BreakdownResponse", api.BreakdownResponse{Window: "1h0m0s", Breakdown: monitoring.LatencyBreakdown(samples)}},
		{"BreakdownResponse", api.BreakdownResponse{Window: "1h0m0s", Breakdown: monitoring.LatencyBreakdown(nil)}},
		{"AlertsResponse", api.AlertsResponse{Window: "1h0m0s", Alerts: monitoring.Alerts(stats, th, time.Hour)}},
		{"AlertsResponse", api.AlertsResponse{Window: "1h0m0s", Alerts: monitoring.Alerts(nil, th, time.Hour)}},
		{"SystemResponse", api.SystemResponse{At: created, Queues: []api.QueueDepth{{Queue: "snapshot", Pending: 3, LatencyMS: 20}},
			Breakers:   []api.BreakerStatus{{Provider: "p", Model: "m", State: "open", OpenUntil: &delivered}, {Provider: "p", Model: "n", State: "closed"}},
			Thresholds: api.Thresholds{WindowMS: 900_000, TotalP95WarningMS: 45_000, TotalP95CriticalMS: 90_000, SnapshotP95WarningMS: 30_000}, AdminURL: "/admin/queues"}},
		{"SystemResponse", api.SystemResponse{At: created, Queues: []api.QueueDepth{}, Breakers: []api.BreakerStatus{}}},
		{"Error", api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeInvalidField, Message: "m", Field: "question"}}},
		{"Error", api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeQuotaExceeded, Message: "m", Limit: quota.LimitTokens}}},
		{"Error", api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeModelNotAllowed, Message: "m", Field: "model", Allowed: []string{"a"}}}},
	} {
		if err := visit(doc.Components.Schemas[c.schema].Value, c.value); err != nil {
			b, _ := json.Marshal(c.value)
			t.Errorf("%s %s: %v", c.schema, b, err)
		}
	}
	if len(monitoring.Alerts(stats, th, time.Hour)) == 0 || len(monitoring.LatencyBreakdown(samples).Stages) == 0 {
		t.Fatal("the monitoring samples make no alert or no breakdown: the test checks less than it should")
	}
}

// TestJobViewKinds checks that the job view's schema holds each kind to
// its own fields: a view with another kind's fields, or without its own,
// does not validate.
func TestJobViewKinds(t *testing.T) {
	doc := load(t)
	common := `"job_id":"0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f","status":"queued","question":"q","cache":"use","cached":false,` +
		`"created_at":"2026-05-01T10:00:00Z","deadline":"2026-05-01T10:02:00Z","errors":[],` +
		`"links":{"self":"/api/jobs/0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f","events":"/api/jobs/0190b4e2-7c1a-7d3e-9f00-5a1b2c3d4e5f/events"}`
	tt := `"kind":"timetravel","complexity":"brief","force_time_travel":false,"snapshots":[],"key_changes":[],"narrative":""`
	ens := `"kind":"ensemble","models":["a","b"],"answers":[],"synthesis":"","analysis":null`
	answer := `{"index":0,"label":"a","status":"pending","attempts":0}`
	snapshot := `{"index":0,"label":"May 2024","date":"2024-05-01","status":"pending","attempts":0}`
	for _, c := range []struct {
		name, body string
		valid      bool
	}{
		{"time travel", `{` + common + `,` + tt + `,"timings":{}}`, true},
		{"ensemble", `{` + common + `,` + ens + `,"timings":{}}`, true},
		{"ensemble with an answer and timings", `{` + common + `,` + strings.Replace(ens, `"answers":[]`, `"answers":[`+answer+`]`, 1) +
			`,"timings":{"queue_wait_ms":1,"answers_ms":2,"answer_ms":[2],"synthesis_ms":3,"analysis_llm_attempts":1}}`, true},
		{"ensemble with an analysis", `{` + common + `,` + strings.Replace(ens, `null`, `{"consensus":[],"disagreements":[],"unique_claims":[]}`, 1) + `,"timings":{}}`, true},
		{"unknown kind", `{` + common + `,` + strings.Replace(ens, `"ensemble"`, `"other"`, 1) + `,"timings":{}}`, false},
		{"ensemble with snapshots", `{` + common + `,` + ens + `,"snapshots":[],"timings":{}}`, false},
		{"ensemble with a complexity", `{` + common + `,` + ens + `,"complexity":"brief","timings":{}}`, false},
		{"ensemble without its answers", `{` + common + `,` + strings.Replace(ens, `,"answers":[]`, ``, 1) + `,"timings":{}}`, false},
		{"ensemble without its analysis", `{` + common + `,` + strings.Replace(ens, `,"analysis":null`, ``, 1) + `,"timings":{}}`, false},
		{"ensemble with a snapshot's timings", `{` + common + `,` + ens + `,"timings":{"snapshots_ms":2}}`, false},
		{"ensemble answer with a date", `{` + common + `,` + strings.Replace(ens, `"answers":[]`, `"answers":[`+snapshot+`]`, 1) + `,"timings":{}}`, false},
		{"time travel with models", `{` + common + `,` + tt + `,"models":["a","b"],"timings":{}}`, false},
		{"time travel with an answer's timings", `{` + common + `,` + tt + `,"timings":{"synthesis_ms":2}}`, false},
		{"snapshot without its date", `{` + common + `,` + strings.Replace(tt, `"snapshots":[]`, `"snapshots":[`+answer+`]`, 1) + `,"timings":{}}`, false},
		{"without links", `{` + strings.Split(common, `,"links"`)[0] + `,` + ens + `,"timings":{}}`, false},
	} {
		if err := visit(doc.Components.Schemas["JobView"].Value, json.RawMessage(c.body)); (err == nil) != c.valid {
			t.Errorf("%s: valid %v, want %v (%v)", c.name, err == nil, c.valid, err)
		}
	}
}

// TestEnsembleRequest checks the body schema of POST /api/ensemble against
// the kind's decoding: what the document allows the kind decodes (or
// refuses as a field's value, never as malformed), and what it refuses
// the kind refuses too.
func TestEnsembleRequest(t *testing.T) {
	doc := load(t)
	schema := doc.Paths.Value("/api/ensemble").Post.RequestBody.Value.Content.Get("application/json").Schema.Value
	for _, c := range []struct {
		body  string
		valid bool
	}{
		{`{"question":"q","models":["a","b"]}`, true},
		{`{"question":"q","models":[" a ","b"],"synthesis_model":" s ","cache":"bypass","callback_url":"https://example.com/h"}`, true},
		{`{"question":"q","models":["a","b","c","d","e","f","g","h"],"synthesis_model":"","cache":""}`, true},
		{`{"question":"q","models":["a"]}`, false},
		{`{"question":"q","models":["a","b","c","d","e","f","g","h","i"]}`, false},
		{`{"question":"q","models":["a","a"]}`, false},
		{`{"question":"q","models":["a",""]}`, false},
		{`{"question":"q","models":["a","b c"]}`, false},
		{`{"question":"q"}`, false},
		{`{"models":["a","b"]}`, false},
		{`{"question":"","models":["a","b"]}`, false},
		{`{"question":"q","models":["a","b"],"model":"a"}`, false},
		{`{"question":"q","models":["a","b"],"time_points":["2024-01-01"]}`, false},
		{`{"question":"q","models":["a","b"],"cache":"never"}`, false},
		{`{"question":"q","models":["a","b"],"synthesis_model":"-s"}`, false},
	} {
		err := visitRequest(schema, json.RawMessage(c.body))
		if (err == nil) != c.valid {
			t.Errorf("%s: valid %v, want %v (%v)", c.body, err == nil, c.valid, err)
			continue
		}
		_, derr := ensemble.Kind{}.Decode([]byte(c.body), time.Now())
		var ferr *job.FieldError
		switch {
		case c.valid && derr != nil && !errors.As(derr, &ferr):
			t.Errorf("%s: the document allows it, the kind refuses it as malformed: %v", c.body, derr)
		case !c.valid && derr == nil:
			t.Errorf("%s: the document refuses it, the kind accepts it", c.body)
		}
	}
}

// TestStages checks the monitoring stage enum against the stages of the
// registered kinds (job.Timings.Stages and each member's own: queue_wait,
// <noun>, <noun>s, fan_in, each part, total).
func TestStages(t *testing.T) {
	doc := load(t)
	var inDoc []string
	for _, v := range doc.Components.Schemas["Stage"].Value.Enum {
		inDoc = append(inDoc, v.(string))
	}
	want := []string{metrics.StageQueueWait, metrics.StageFanIn, metrics.StageTotal}
	for _, k := range kinds.Registry().All() {
		d, ok := k.(events.Declarer)
		if !ok {
			t.Fatalf("kind %s declares no event contract", k.Name())
		}
		want = append(want, string(k.Noun()), k.Noun().Plural())
		for _, p := range d.EventContract().Parts {
			want = append(want, p.Name)
		}
	}
	slices.Sort(inDoc)
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(inDoc, want) {
		t.Fatalf("Stage enum %v, the kinds' stages are %v", inDoc, want)
	}
}

// memberPayload is the payload of an event of member m with data.
func memberPayload(t *testing.T, m job.Member, data any) json.RawMessage {
	t.Helper()
	b, err := events.MemberPayload(m, data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// visitRequest validates the request body v against s.
func visitRequest(s *openapi3.Schema, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var val any
	if err := json.Unmarshal(b, &val); err != nil {
		return err
	}
	return s.VisitJSON(val, openapi3.EnableJSONSchema2020(), openapi3.VisitAsRequest())
}

func visit(s *openapi3.Schema, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var val any
	if err := json.Unmarshal(b, &val); err != nil {
		return err
	}
	return s.VisitJSON(val, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse())
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(openapi.Handler())
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/openapi.json", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, openapi.JSON()) {
		t.Fatalf("GET: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("not cacheable: %v", resp.Header)
	}

	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d, want 304", resp.StatusCode)
	}

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/openapi.json", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("ETag") == etag {
		t.Fatalf("gzip: %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(zr); !bytes.Equal(b, openapi.JSON()) {
		t.Fatal("gzip body differs")
	}

	resp, err = http.Post(srv.URL+"/openapi.json", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", resp.StatusCode)
	}
}

// TestDocsOnGin mounts the routes as internal/api/server.go does, and reads
// the reference page and everything it loads.
func TestDocsOnGin(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/openapi.json", gin.WrapH(openapi.Handler()))
	docs := gin.WrapH(openapi.DocsHandler("/docs"))
	r.GET("/docs", docs)
	r.GET("/docs/*file", docs)
	srv := httptest.NewServer(r)
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if resp, _ := get("/openapi.json"); resp.StatusCode != 200 {
		t.Fatalf("/openapi.json: %d", resp.StatusCode)
	}
	resp, _ := get("/docs")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "docs/" {
		t.Fatalf("/docs: %d Location %q, want 301 docs/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := get("/docs/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs/: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "http") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}
	// The page loads nothing from elsewhere: only relative URLs.
	for _, other := range []string{"http:", "https:", `="//`} {
		if strings.Contains(page, other) {
			t.Fatalf("the page names another site (%s):\n%s", other, page)
		}
	}
	for _, want := range []string{`spec-url="openapi.json"`, `src="redoc.standalone.js"`} {
		if !strings.Contains(page, want) {
			t.Fatalf("page lacks %s", want)
		}
	}
	for path, ctype := range map[string]string{
		"/docs/index.html":                      "text/html",
		"/docs/openapi.json":                    "application/json",
		"/docs/redoc.standalone.js":             "text/javascript",
		"/docs/LICENSE":                         "text/plain",
		"/docs/redoc.standalone.js.LICENSE.txt": "text/plain",
	} {
		resp, body := get(path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || body == "" {
			t.Errorf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, body := get("/docs/openapi.json"); body != string(openapi.JSON()) {
		t.Errorf("/docs/openapi.json differs from the document (%d)", resp.StatusCode)
	}
	resp, body := get("/docs/nothing.js")
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if resp.StatusCode != 404 || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "not_found" {
		t.Fatalf("/docs/nothing.js: %d %s", resp.StatusCode, body)
	}
}

func TestDocsHandlerPrefixes(t *testing.T) {
	for _, prefix := range []string{"/api/docs/", "/api/docs"} {
		h := openapi.DocsHandler(prefix)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/api/docs?x=1", nil))
		if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "docs/?x=1" {
			t.Fatalf("prefix %q: %d %q", prefix, rec.Code, rec.Header().Get("Location"))
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodHead, "/api/docs/", nil))
		if rec.Code != 200 || rec.Body.Len() != 0 {
			t.Fatalf("prefix %q: HEAD %d, %d bytes", prefix, rec.Code, rec.Body.Len())
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodDelete, "/api/docs/", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("prefix %q: DELETE %d", prefix, rec.Code)
		}
	}
}
