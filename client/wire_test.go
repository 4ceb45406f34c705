package client_test

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/api"
	"github.com/timetravel-ai/timetravel/internal/ensemble"
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
	"github.com/timetravel-ai/timetravel/internal/timetravel"
)

// fill sets every field reachable from v to a non-zero value: pointers are
// allocated, slices get one element, numbers and strings differ per field.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(*n) * time.Second)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.String:
		v.SetString("s" + strconv.Itoa(*n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Bool:
		v.SetBool(true)
	}
}

// filled returns a pointer to a T with every field set.
func filled[T any]() *T {
	var t T
	n := 0
	fill(reflect.ValueOf(&t).Elem(), &n)
	return &t
}

// roundTrip encodes from (a server's value), decodes it into a new value of
// to's type (a client's) refusing members that type lacks, encodes that
// again and checks that both encodings are the same JSON object.
func roundTrip(t *testing.T, from any, to reflect.Type) {
	t.Helper()
	a, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	dst := reflect.New(to)
	dec := json.NewDecoder(bytes.NewReader(a))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst.Interface()); err != nil {
		t.Fatalf("%T → %s: %v\n%s", from, to, err, a)
	}
	b, err := json.Marshal(dst.Interface())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decodeJSON(t, a), decodeJSON(t, b)) {
		t.Errorf("%T → %s changes the JSON\n from %s\n   to %s", from, to, a, b)
	}
}

func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

// shape is the form of the JSON value v: an object's members and their
// shapes, a list's first element's shape, a scalar's JSON type.
func shape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = shape(e)
		}
		return out
	case []any:
		if len(v) == 0 {
			return []any{}
		}
		return []any{shape(v[0])}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	}
	return "null"
}

// sameShape checks that server and client (filled values) encode with the
// same members, of the same JSON types, at every depth: no member of the
// client's type is missing from the server's. Members named in skip (at
// the top level) are left out of the comparison.
func sameShape(t *testing.T, server, client any, skip ...string) {
	t.Helper()
	enc := func(v any) map[string]any {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := shape(decodeJSON(t, b)).(map[string]any)
		if !ok {
			t.Fatalf("%T encodes as %s, not a JSON object", v, b)
		}
		for _, k := range skip {
			delete(m, k)
		}
		return m
	}
	if s, c := enc(server), enc(client); !reflect.DeepEqual(s, c) {
		sb, _ := json.Marshal(s)
		cb, _ := json.Marshal(c)
		t.Errorf("%T and %T differ in shape\n server %s\n client %s", server, client, sb, cb)
	}
}

// ttSpec is a time-travel spec with one time point.
func ttSpec() job.Spec {
	spec := timetravel.Spec("q", timetravel.Params{
		TimePoints: []timetravel.TimePoint{{Date: "2023-01-01", Label: "January 2023"}},
		Complexity: timetravel.ComplexityBrief, ForceTimeTravel: true,
	})
	spec.Model = "gpt-4o"
	return spec
}

// ttMember is a filled time-travel member, as the server keeps it.
func ttMember() job.Member {
	m := *filled[job.Member]()
	m.Ref = map[string]string{"date": "2023-01-01"}
	return m
}

// memberEvent is the payload of a member event as the server writes it:
// the member's identity (job.Member.RefData) and the fields kv.
func memberEvent(m job.Member, kv ...any) map[string]any {
	d := m.RefData()
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i].(string)] = kv[i+1]
	}
	return d
}

// ttTimings are filled timings of a time-travel job.
func ttTimings() job.TimingsView {
	tm := *filled[job.Timings]()
	tm.Parts = []job.PartTiming{
		{Name: timetravel.PartKeyChanges, MS: 5, LLMAttempts: 2},
		{Name: timetravel.PartNarrative, MS: 6, LLMAttempts: 3},
	}
	return job.TimingsView{Timings: tm, Noun: timetravel.Noun}
}

// ttView is a filled view of a time-travel job, as the api shows it.
func ttView(t *testing.T) *api.JobView {
	t.Helper()
	v := *filled[job.View]()
	v.Kind = timetravel.Name
	v.Timings = ttTimings()
	kc, err := json.Marshal([]timetravel.KeyChange{*filled[timetravel.KeyChange]()})
	if err != nil {
		t.Fatal(err)
	}
	j := &job.Job{Spec: ttSpec(), Noun: timetravel.Noun, Members: []job.Member{ttMember()},
		Result: &job.Result{Parts: []job.Part{{Name: timetravel.PartKeyChanges, Value: kc}, {Name: timetravel.PartNarrative, Text: "n"}}}}
	if v.Fields, err = (timetravel.Kind{}).View(j); err != nil {
		t.Fatal(err)
	}
	return &api.JobView{View: v, Links: *filled[api.Links]()}
}

// ttAccepted is the payload of a time-travel job's job.accepted.
func ttAccepted(t *testing.T) json.RawMessage {
	t.Helper()
	common := *filled[events.AcceptedData]()
	common.Kind = timetravel.Name
	spec := ttSpec()
	fields, err := (timetravel.Kind{}).Accepted(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.AcceptedPayload(common, extra)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ensAccepted is the payload of an ensemble's job.accepted.
func ensAccepted(t *testing.T) json.RawMessage {
	t.Helper()
	common := *filled[events.AcceptedData]()
	common.Kind = ensemble.Name
	fields, err := (ensemble.Kind{}).Accepted(ensemble.Spec("q", ensemble.Params{Models: []string{"a", "b"}, SynthesisModel: "s"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.AcceptedPayload(common, extra)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWireTypes checks that each of the client's types carries exactly the
// JSON members of what the server writes, with the same types and the
// same omission of empty values: every member the server writes survives
// a trip through the client's type, and the client's type has no member
// the server does not write.
func TestWireTypes(t *testing.T) {
	m := ttMember()
	i := m.Index
	kc, err := json.Marshal([]timetravel.KeyChange{*filled[timetravel.KeyChange]()})
	if err != nil {
		t.Fatal(err)
	}
	answer := job.Member{Index: 1, Label: "model-b"}
	analysis, err := json.Marshal(filled[ensemble.Analysis]())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		server, client any // filled values
		// kind, when set, is the kind of the client's value (its
		// encoding then has that kind's fields only).
		kind string
		skip []string
	}{
		{name: "job view", server: ttView(t), client: filled[client.JobView](), kind: client.KindTimeTravel, skip: []string{"timings"}},
		{name: "accepted", server: filled[api.Accepted](), client: filled[client.Accepted]()},
		{name: "usage", server: filled[api.UsageView](), client: filled[client.Usage]()},
		{name: "models", server: filled[api.ModelsView](), client: filled[client.Models]()},
		{name: "job list", server: filled[api.JobList](), client: filled[client.JobList]()},
		{name: "job.accepted", server: ttAccepted(t), client: filled[client.JobAcceptedData](), kind: client.KindTimeTravel},
		{name: "snapshot.started", server: memberEvent(m, "attempt", 2, "cached", true), client: filled[client.SnapshotStartedData]()},
		{name: "snapshot.delta", server: events.DeltaData{Index: &i, Text: "t"}, client: filled[client.SnapshotDeltaData]()},
		{name: "snapshot.completed", server: memberEvent(m, "model", "gpt-4o", "text", "t", "duration_ms", 3, "cached", true),
			client: filled[client.SnapshotCompletedData]()},
		{name: "snapshot.failed", server: memberEvent(m, "error", "e"), client: filled[client.SnapshotFailedData]()},
		{name: "aggregate.started", server: filled[events.AggregateStartedData](), client: filled[client.AggregateStartedData]()},
		{name: "key_changes.completed", server: map[string]any{timetravel.PartKeyChanges: json.RawMessage(kc), "cached": true},
			client: filled[client.KeyChangesData]()},
		{name: "narrative.completed", server: map[string]any{"text": "t", "cached": true}, client: filled[client.TextData]()},
		{name: "narrative.delta", server: filled[events.PartDeltaData](), client: filled[client.TextDeltaData]()},
		{name: "narrative.delta as TextData", server: &events.PartDeltaData{Text: "t"}, client: &client.TextData{Text: "t"}},
		{name: "failed", server: filled[events.ErrorData](), client: filled[client.FailedData]()},
		{name: "job.completed", server: filled[events.CompletedData](), client: filled[client.JobCompletedData]()},
		{name: "webhook", server: filled[events.WebhookData](), client: filled[client.WebhookData]()},
		{name: "webhook.delivered", server: filled[events.WebhookDeliveredData](), client: filled[client.WebhookDeliveredData]()},
		{name: "webhook.failed", server: filled[events.WebhookFailedData](), client: filled[client.WebhookFailedData]()},
		{name: "ensemble job.accepted", server: ensAccepted(t), client: filled[client.JobAcceptedData](), kind: client.KindEnsemble},
		{name: "answer.started", server: memberEvent(answer, "attempt", 2, "cached", true), client: filled[client.AnswerStartedData]()},
		{name: "answer.delta", server: filled[events.MemberDeltaData](), client: filled[client.SnapshotDeltaData]()},
		{name: "answer.completed", server: memberEvent(answer, "model", "a", "text", "t", "duration_ms", 3, "cached", true),
			client: filled[client.AnswerCompletedData]()},
		{name: "answer.failed", server: memberEvent(answer, "error", "e"), client: filled[client.AnswerFailedData]()},
		{name: "synthesis.completed", server: filled[events.PartTextData](), client: filled[client.TextData]()},
		{name: "analysis.completed", server: events.PartValueData(ensemble.PartAnalysis, analysis, true), client: filled[client.AnalysisData]()},
		{name: "empty job view", server: &api.JobView{View: job.View{Kind: timetravel.Name, Fields: timetravel.View{}}},
			client: &client.JobView{Kind: client.KindTimeTravel}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.kind != "" {
				reflect.ValueOf(tt.client).Elem().FieldByName("Kind").SetString(tt.kind)
			}
			roundTrip(t, tt.server, reflect.TypeOf(tt.client).Elem())
			sameShape(t, tt.server, tt.client, tt.skip...)
		})
	}
}

// The client's Timings has the stages of every kind: together, exactly
// those the server shows for each.
func TestWireTimings(t *testing.T) {
	ens := *filled[job.Timings]()
	ens.Parts = []job.PartTiming{{Name: ensemble.PartSynthesis, MS: 5, LLMAttempts: 2}, {Name: ensemble.PartAnalysis, MS: 6, LLMAttempts: 3}}
	union := map[string]any{}
	for _, tv := range []job.TimingsView{ttTimings(), {Timings: ens, Noun: ensemble.Noun}} {
		roundTrip(t, tv, reflect.TypeFor[client.Timings]())
		b, err := json.Marshal(tv)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range shape(decodeJSON(t, b)).(map[string]any) {
			union[k] = v
		}
	}
	b, err := json.Marshal(filled[client.Timings]())
	if err != nil {
		t.Fatal(err)
	}
	if c := shape(decodeJSON(t, b)); !reflect.DeepEqual(c, union) {
		ub, _ := json.Marshal(union)
		cb, _ := json.Marshal(c)
		t.Errorf("client timings differ from the server's\n server %s\n client %s", ub, cb)
	}
}

// TestWireErrorBody checks that every member of the API's error body lands
// in APIError.
func TestWireErrorBody(t *testing.T) {
	d := filled[api.ErrorDetail]()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		writeJSON(w, http.StatusTooManyRequests, api.ErrorBody{Error: *d})
	}))
	defer srv.Close()
	_, err := client.New(srv.URL).Job(t.Context(), "j")
	want := &client.APIError{StatusCode: 429, Code: d.Code, Message: d.Message, Field: d.Field, Limit: d.Limit,
		Allowed: d.Allowed, RetryAfter: 3 * time.Second}
	if got, ok := err.(*client.APIError); !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", err, want)
	}
	if n := reflect.TypeFor[api.ErrorDetail]().NumField(); n != 5 {
		t.Errorf("api.ErrorDetail has %d fields: does APIError read them all?", n)
	}
}

// TestWireNames checks the client's names of codes, events and statuses
// against the server's.
func TestWireNames(t *testing.T) {
	tests := []struct{ client, server string }{
		{client.CodeMalformedJSON, api.CodeMalformedJSON},
		{client.CodeUnknownField, api.CodeUnknownField},
		{client.CodeInvalidField, api.CodeInvalidField},
		{client.CodeInvalidHeader, api.CodeInvalidHeader},
		{client.CodeInvalidEncoding, api.CodeInvalidEncoding},
		{client.CodeBodyTooLarge, api.CodeBodyTooLarge},
		{client.CodeUnsupportedMediaType, api.CodeUnsupportedMedia},
		{client.CodeUnauthorized, api.CodeUnauthorized},
		{client.CodeForbidden, api.CodeForbidden},
		{client.CodeJobNotFound, api.CodeJobNotFound},
		{client.CodeJobFinished, api.CodeJobFinished},
		{client.CodeIdempotencyInProgress, api.CodeIdempotencyInProgress},
		{client.CodeIdempotencyKeyReused, api.CodeIdempotencyMismatch},
		{client.CodeModelNotAllowed, api.CodeModelNotAllowed},
		{client.CodeQuotaExceeded, api.CodeQuotaExceeded},
		{client.CodeCacheDisabled, api.CodeCacheDisabled},
		{client.CodeUnavailable, api.CodeUnavailable},

		{client.EventJobAccepted, events.JobAccepted},
		{client.EventSnapshotStarted, events.MemberEvent(timetravel.Noun, events.VerbStarted)},
		{client.EventSnapshotDelta, events.MemberEvent(timetravel.Noun, events.VerbDelta)},
		{client.EventSnapshotCompleted, events.MemberEvent(timetravel.Noun, events.VerbCompleted)},
		{client.EventSnapshotFailed, events.MemberEvent(timetravel.Noun, events.VerbFailed)},
		{client.EventKeyChangesCompleted, events.PartEvent(timetravel.PartKeyChanges, events.VerbCompleted)},
		{client.EventKeyChangesFailed, events.PartEvent(timetravel.PartKeyChanges, events.VerbFailed)},
		{client.EventAggregateStarted, events.AggregateStarted},
		{client.EventNarrativeDelta, events.PartEvent(timetravel.PartNarrative, events.VerbDelta)},
		{client.EventNarrativeCompleted, events.PartEvent(timetravel.PartNarrative, events.VerbCompleted)},
		{client.EventNarrativeFailed, events.PartEvent(timetravel.PartNarrative, events.VerbFailed)},
		{client.EventJobCompleted, events.JobCompleted},
		{client.EventWebhookDelivered, events.WebhookDelivered},
		{client.EventWebhookFailed, events.WebhookFailed},

		{string(client.StatusQueued), string(job.StatusQueued)},
		{string(client.StatusRunning), string(job.StatusRunning)},
		{string(client.StatusAggregating), string(job.StatusAggregating)},
		{string(client.StatusCompleted), string(job.StatusCompleted)},
		{string(client.StatusPartial), string(job.StatusPartial)},
		{string(client.StatusFailed), string(job.StatusFailed)},
		{string(client.StatusCanceled), string(job.StatusCanceled)},
		{string(client.SnapshotPending), string(job.MemberPending)},
		{string(client.SnapshotRunning), string(job.MemberRunning)},
		{string(client.SnapshotCompleted), string(job.MemberCompleted)},
		{string(client.SnapshotFailed), string(job.MemberFailed)},
		{string(client.SnapshotCanceled), string(job.MemberCanceled)},
		{string(client.SnapshotExpired), string(job.MemberExpired)},
		{string(client.WebhookPending), string(job.WebhookPending)},
		{string(client.WebhookDelivered), string(job.WebhookDelivered)},
		{string(client.WebhookFailed), string(job.WebhookFailed)},
		{client.ComplexityBrief, string(timetravel.ComplexityBrief)},
		{client.ComplexityStandard, string(timetravel.ComplexityStandard)},
		{client.ComplexityDetailed, string(timetravel.ComplexityDetailed)},
		{client.KindTimeTravel, timetravel.Name},
		{client.KindEnsemble, ensemble.Name},
		{client.CacheUse, string(job.CacheUse)},
		{client.CacheBypass, string(job.CacheBypass)},
	}
	for _, tt := range tests {
		if tt.client != tt.server {
			t.Errorf("client says %q, server %q", tt.client, tt.server)
		}
	}
}

// TestStandardLibraryOnly checks the package doc's promise: the package
// (its non-test files) imports the standard library only, so that any Go
// program can use it.
func TestStandardLibraryOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s, which is not in the standard library", name, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files found")
	}
}
