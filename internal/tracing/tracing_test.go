package tracing

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/propagators/aws/xray"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
	} {
		if got := Enabled(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("Enabled(%v) = %v", c.env, got)
		}
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	if h := Headers(context.Background()); h != nil {
		t.Errorf("headers without a span: %v", h)
	}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("t").Start(context.Background(), "parent")
	defer span.End()
	h := Headers(ctx)
	if h["traceparent"] == "" {
		t.Fatalf("no traceparent: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsRemote() {
		t.Errorf("extracted %v, want %v", got, span.SpanContext())
	}
	if a := LogAttrs(ctx); len(a) != 2 || a[1] != span.SpanContext().TraceID().String() {
		t.Errorf("log attrs %v", a)
	}
	if a := LogAttrs(context.Background()); a != nil {
		t.Errorf("log attrs without a span: %v", a)
	}
}

func TestPropagators(t *testing.T) {
	for _, c := range []struct {
		env     string
		fields  []string // the headers the propagator writes, sorted
		xrayIDs bool
		bad     bool
	}{
		{"", []string{"baggage", "traceparent", "tracestate"}, false, false},
		{"tracecontext", []string{"traceparent", "tracestate"}, false, false},
		{"tracecontext,baggage,xray", []string{"X-Amzn-Trace-Id", "baggage", "traceparent", "tracestate"}, true, false},
		{" xray , xray ", []string{"X-Amzn-Trace-Id"}, true, false},
		{"none", nil, false, false},
		{"b3", nil, false, true},
		{"tracecontext,jaeger", nil, false, true},
	} {
		got, err := Propagators(c.env)
		if (err != nil) != c.bad {
			t.Errorf("Propagators(%q) error %v, want error %t", c.env, err, c.bad)
			continue
		}
		if c.bad {
			continue
		}
		fields := got.Propagator.Fields()
		slices.Sort(fields)
		if !slices.Equal(fields, c.fields) || got.XRayIDs != c.xrayIDs {
			t.Errorf("Propagators(%q) = fields %v, X-Ray ids %t; want %v, %t", c.env, fields, got.XRayIDs, c.fields, c.xrayIDs)
		}
	}
}

func TestExporterProtocol(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		env map[string]string
		bad bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, true},
	} {
		exp, err := exporter(ctx, func(k string) string { return c.env[k] })
		if (err != nil) != c.bad {
			t.Errorf("exporter(%v) error %v, want error %t", c.env, err, c.bad)
		}
		if exp != nil {
			_ = exp.Shutdown(ctx)
		}
	}
}

// With the X-Ray propagator, task headers carry X-Amzn-Trace-Id and come
// back as the same span; X-Ray's ids start with the time in seconds.
func TestXRayHeadersRoundTrip(t *testing.T) {
	choice, err := Propagators("xray")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithIDGenerator(xray.NewIDGenerator()))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	before := time.Now().Unix()
	ctx, span := tp.Tracer("t").Start(context.Background(), "parent")
	defer span.End()
	h := map[string]string{}
	choice.Propagator.Inject(ctx, propagation.MapCarrier(h))
	if !strings.HasPrefix(h["X-Amzn-Trace-Id"], "Root=1-") {
		t.Fatalf("headers %v, want X-Amzn-Trace-Id", h)
	}
	got := trace.SpanContextFromContext(choice.Propagator.Extract(context.Background(), propagation.MapCarrier(h)))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted %v, want %v", got, span.SpanContext())
	}
	id := span.SpanContext().TraceID().String()
	secs, err := strconv.ParseInt(id[:8], 16, 64)
	if err != nil || secs < before || secs > time.Now().Unix() {
		t.Errorf("trace id %s does not start with the time in seconds (%d)", id, before)
	}
}
