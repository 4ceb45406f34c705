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
	"github.com/timetravel-ai/timetravel/internal/events"
	"github.com/timetravel-ai/timetravel/internal/job"
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

// roundTrip encodes from, decodes it into a new value of to's type refusing
// members that type lacks, encodes that again and checks that both
// encodings are the same JSON object.
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
	var av, bv any
	if err := json.Unmarshal(a, &av); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &bv); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(av, bv) {
		t.Errorf("%T → %s changes the JSON\n from %s\n   to %s", from, to, a, b)
	}
}

// TestWireTypes checks that each of the client's types carries exactly the
// JSON members of the server's type it mirrors, with the same types and the
// same omission of empty values: every member of either side survives a
// trip through the other.
func TestWireTypes(t *testing.T) {
	tests := []struct {
		name           string
		server, client any // pointers to filled values
	}{
		{"job view", filled[api.JobView](), filled[client.JobView]()},
		{"accepted", filled[api.Accepted](), filled[client.Accepted]()},
		{"usage", filled[api.UsageView](), filled[client.Usage]()},
		{"models", filled[api.ModelsView](), filled[client.Models]()},
		{"job.accepted", filled[events.AcceptedData](), filled[client.JobAcceptedData]()},
		{"snapshot.started", filled[events.SnapshotStartedData](), filled[client.SnapshotStartedData]()},
		{"snapshot.delta", filled[events.DeltaData](), filled[client.SnapshotDeltaData]()},
		{"snapshot.completed", filled[events.SnapshotCompletedData](), filled[client.SnapshotCompletedData]()},
		{"aggregate.started", filled[events.AggregateStartedData](), filled[client.AggregateStartedData]()},
		{"key_changes.completed", filled[events.KeyChangesData](), filled[client.KeyChangesData]()},
		{"narrative.completed", filled[events.NarrativeData](), filled[client.TextData]()},
		{"narrative.delta", &events.DeltaData{Text: "t"}, &client.TextData{Text: "t"}},
		{"failed", filled[events.ErrorData](), filled[client.FailedData]()},
		{"job.completed", filled[events.CompletedData](), filled[client.JobCompletedData]()},
		{"webhook", filled[events.WebhookData](), filled[client.WebhookData]()},
		{"empty job view", &api.JobView{}, &client.JobView{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roundTrip(t, tt.server, reflect.TypeOf(tt.client).Elem())
			roundTrip(t, tt.client, reflect.TypeOf(tt.server).Elem())
		})
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
		{client.EventSnapshotStarted, events.SnapshotStarted},
		{client.EventSnapshotDelta, events.SnapshotDelta},
		{client.EventSnapshotCompleted, events.SnapshotCompleted},
		{client.EventSnapshotFailed, events.SnapshotFailed},
		{client.EventKeyChangesCompleted, events.KeyChangesCompleted},
		{client.EventKeyChangesFailed, events.KeyChangesFailed},
		{client.EventAggregateStarted, events.AggregateStarted},
		{client.EventNarrativeDelta, events.NarrativeDelta},
		{client.EventNarrativeCompleted, events.NarrativeCompleted},
		{client.EventNarrativeFailed, events.NarrativeFailed},
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
		{string(client.SnapshotPending), string(job.SnapshotPending)},
		{string(client.SnapshotRunning), string(job.SnapshotRunning)},
		{string(client.SnapshotCompleted), string(job.SnapshotCompleted)},
		{string(client.SnapshotFailed), string(job.SnapshotFailed)},
		{string(client.SnapshotCanceled), string(job.SnapshotCanceled)},
		{string(client.SnapshotExpired), string(job.SnapshotExpired)},
		{string(client.WebhookPending), string(job.WebhookPending)},
		{string(client.WebhookDelivered), string(job.WebhookDelivered)},
		{string(client.WebhookFailed), string(job.WebhookFailed)},
		{client.ComplexityBrief, string(job.ComplexityBrief)},
		{client.ComplexityStandard, string(job.ComplexityStandard)},
		{client.ComplexityDetailed, string(job.ComplexityDetailed)},
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
