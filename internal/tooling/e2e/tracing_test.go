package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/timetravel-ai/timetravel/client"
	"github.com/timetravel-ai/timetravel/internal/job"
)

// span is one span as an OTLP receiver got it.
type span struct {
	trace, id, parent string
	name, service     string
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf)
// that keeps every span it is sent.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []span
	wake  chan struct{}
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{wake: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.add(&msg)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) add(msg *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, span{
					trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), name: s.GetName(), service: service,
				})
			}
		}
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// grpcReceiver is the same receiver over OTLP/gRPC.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	r *otlpReceiver
}

func (g grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.r.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// newOTLPGRPCReceiver starts an OTLP/gRPC receiver on a free port; its
// spans go to the returned receiver, whose URL is the gRPC endpoint.
func newOTLPGRPCReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{wake: make(chan struct{}, 1)}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcReceiver{r: r})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r, "http://" + ln.Addr().String()
}

// all returns the spans received so far.
func (r *otlpReceiver) all() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// One trace follows a job across the real processes: the api's POST, the
// worker's member tasks and their model calls, the aggregation and its
// calls, and the webhook, each span the child of the one that caused it;
// with OTEL_PROPAGATORS=xray too, whose trace ids start with the time, and
// exported over gRPC as well as HTTP.
func TestTraceAcrossProcesses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		propagators string
		grpc        bool
	}{
		{"w3c", "", false},
		{"xray", "tracecontext,baggage,xray", false},
		{"grpc", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				rec      *otlpReceiver
				endpoint string
			)
			if tc.grpc {
				rec, endpoint = newOTLPGRPCReceiver(t)
			} else {
				rec = newOTLPReceiver(t)
				endpoint = rec.srv.URL
			}
			otel := map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
				// Flush every 100 ms: the test waits for the spans.
				"OTEL_BSP_SCHEDULE_DELAY": "100",
			}
			if tc.grpc {
				otel["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
			}
			if tc.propagators != "" {
				otel["OTEL_PROPAGATORS"] = tc.propagators
			}
			wh := webhookEnv(whSecretA, "")
			e := startStack(t, 1, merged(wh, otel), merged(wh, otel))
			hooks := newHookReceiver(t, whSecretA, nil)
			started := time.Now().Unix()
			id := submit(t, e, client.SubmitRequest{Question: "Who traces the traces?", TimePoints: twoDates, CallbackURL: hooks.url()})
			checkDelivered(t, e, hooks, id, job.StatusCompleted, 1)

			// The trace is complete once the webhook's span came in.
			var tr []span
			deadline := time.After(time.Minute)
			for tr == nil {
				tr = jobTrace(rec.all(), len(twoDates))
				if tr != nil {
					break
				}
				select {
				case <-rec.wake:
				case <-deadline:
					t.Fatalf("no complete trace within a minute; spans: %v", rec.all())
				}
			}
			t.Logf("trace %s: %d spans", tr[0].trace, len(tr))
			checkTrace(t, tr, len(twoDates))
			if tc.propagators != "" {
				secs, err := strconv.ParseInt(tr[0].trace[:8], 16, 64)
				if err != nil || secs < started-1 || secs > time.Now().Unix() {
					t.Errorf("trace id %s: want X-Ray's, starting with the time in seconds (%d)", tr[0].trace, started)
				}
			}
		})
	}
}

// jobTrace returns the spans of the trace that has a webhook span, once it
// also has the POST, a snapshot span per member, the aggregation and a
// model call per member plus the aggregation's two; nil before.
func jobTrace(spans []span, members int) []span {
	for _, w := range spans {
		if w.name != "webhook" {
			continue
		}
		var tr []span
		for _, s := range spans {
			if s.trace == w.trace {
				tr = append(tr, s)
			}
		}
		count := map[string]int{}
		for _, s := range tr {
			switch {
			case strings.HasPrefix(s.name, "POST "):
				count["post"]++
			default:
				count[s.name]++
			}
		}
		if count["post"] == 1 && count["snapshot"] >= members && count["aggregate"] >= 1 && count["llm.request"] >= members+2 {
			return tr
		}
	}
	return nil
}

// checkTrace asserts the shape of a job's trace: the POST is the root, in
// the api; every other span is the worker's and descends from it; the
// member tasks and the aggregation are the POST's children (it queued
// them), each model call the child of the task that made it, and the
// webhook a descendant of the aggregation that ended the job.
func checkTrace(t *testing.T, tr []span, members int) {
	t.Helper()
	byID := map[string]span{}
	var root span
	for _, s := range tr {
		byID[s.id] = s
		if strings.HasPrefix(s.name, "POST ") {
			root = s
		}
	}
	if root.parent != "" {
		t.Errorf("the POST span has a parent %s", root.parent)
	}
	if root.service != "timetravel-api" {
		t.Errorf("the POST span comes from %q, want timetravel-api", root.service)
	}
	descends := func(s span, from string) bool {
		for hops := 0; s.parent != "" && hops < 20; hops++ {
			if s.parent == from {
				return true
			}
			p, ok := byID[s.parent]
			if !ok {
				return false
			}
			s = p
		}
		return false
	}
	var agg span
	for _, s := range tr {
		if s.name == "aggregate" {
			agg = s
		}
	}
	calls := map[string]int{}
	for _, s := range tr {
		if s.id == root.id {
			continue
		}
		if s.service != "timetravel-worker" {
			t.Errorf("span %s comes from %q, want timetravel-worker", s.name, s.service)
		}
		if !descends(s, root.id) {
			t.Errorf("span %s (parent %s) does not descend from the POST", s.name, s.parent)
		}
		switch s.name {
		case "snapshot", "aggregate":
			if s.parent != root.id {
				t.Errorf("%s span's parent is %s, want the POST %s", s.name, s.parent, root.id)
			}
		case "llm.request":
			calls[byID[s.parent].name]++
		case "webhook":
			if !descends(s, agg.id) {
				t.Errorf("the webhook span does not descend from the aggregation")
			}
		}
	}
	if calls["snapshot"] < members || calls["aggregate"] < 2 || len(calls) != 2 {
		t.Errorf("model calls by parent %v, want %d under snapshot spans and 2 under the aggregation", calls, members)
	}
}
