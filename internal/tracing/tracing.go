// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and carries W3C trace context through asynq task
// headers, so that one trace follows a job from its POST through every
// snapshot task, the aggregation and the webhook.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER=otlp is set:
// the global tracer provider then stays OpenTelemetry's no-op one, which
// costs next to nothing on the hot path.
//
// Spans go out over OTLP/HTTP, or over gRPC with
// OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
// grpc. OTEL_PROPAGATORS chooses the propagators among tracecontext,
// baggage and xray (default tracecontext,baggage); with xray, trace ids are
// also made the way AWS X-Ray wants them (their first 32 bits the start
// time), so that the traces exported to X-Ray through a collector keep
// their ids.
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/contrib/propagators/aws/xray"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of the service's spans.
const Name = "github.com/timetravel-ai/timetravel"

// Tracer returns the service's tracer from the global provider (looked up
// at each call, so that a provider set later, e.g. by a test, is used).
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// defaultPropagator is W3C trace context plus baggage.
var defaultPropagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// current is the propagator of task headers and HTTP requests: the one
// Setup chose (Propagators), whatever the global one.
var current atomic.Pointer[propagation.TextMapPropagator]

func propagator() propagation.TextMapPropagator {
	if p := current.Load(); p != nil {
		return *p
	}
	return defaultPropagator
}

// Choice is what the environment asks of the trace context: its
// propagators and whether trace ids are X-Ray's.
type Choice struct {
	Propagator propagation.TextMapPropagator
	XRayIDs    bool
}

// Propagators parses OTEL_PROPAGATORS: a comma-separated list of
// tracecontext, baggage and xray (empty: tracecontext,baggage). With xray
// the trace ids are X-Ray's too. Other names (b3, jaeger, ...) are
// refused rather than ignored: a trace that silently loses its parent is
// worse than a process that says why it will not start.
func Propagators(v string) (Choice, error) {
	if strings.TrimSpace(v) == "" {
		return Choice{Propagator: defaultPropagator}, nil
	}
	var (
		ps   []propagation.TextMapPropagator
		c    Choice
		seen = map[string]bool{}
	)
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if seen[name] {
			continue
		}
		seen[name] = true
		switch name {
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		case "xray":
			ps = append(ps, xray.Propagator{})
			c.XRayIDs = true
		case "none":
		default:
			return Choice{}, fmt.Errorf("OTEL_PROPAGATORS: %q is not supported (tracecontext, baggage, xray, none)", name)
		}
	}
	c.Propagator = propagation.NewCompositeTextMapPropagator(ps...)
	return c, nil
}

// exporter returns the OTLP exporter the protocol variables ask for:
// http/protobuf (the default) or grpc.
func exporter(ctx context.Context, getenv func(string) string) (*otlptrace.Exporter, error) {
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "", "http/protobuf":
		return otlptracehttp.New(ctx)
	case "grpc":
		return otlptracegrpc.New(ctx)
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf or grpc are supported, got %q", proto)
}

// Enabled reports whether the environment asks for traces to be exported.
func Enabled(getenv func(string) string) bool {
	switch getenv("OTEL_TRACES_EXPORTER") {
	case "none":
		return false
	case "otlp":
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the propagators of OTEL_PROPAGATORS and, when the
// environment asks for it (see Enabled), a tracer provider that exports
// spans over OTLP (HTTP or gRPC) in batches, configured by the standard
// OTEL_* variables (endpoint, headers, protocol, sampler, service name,
// resource attributes), with X-Ray's trace ids when xray propagates. service names the process when
// OTEL_SERVICE_NAME is unset. shutdown flushes the spans; it does nothing
// when tracing is off.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	choice, err := Propagators(os.Getenv("OTEL_PROPAGATORS"))
	if err != nil {
		return nil, err
	}
	current.Store(&choice.Propagator)
	otel.SetTextMapPropagator(choice.Propagator)
	if !Enabled(os.Getenv) {
		return func(context.Context) error { return nil }, nil
	}
	if v := os.Getenv("OTEL_TRACES_EXPORTER"); v != "" && v != "otlp" {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: only otlp or none are supported, got %q", v)
	}
	exp, err := exporter(ctx, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", serviceName(service))))
	if err != nil {
		res = resource.Default()
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if choice.XRayIDs {
		opts = append(opts, sdktrace.WithIDGenerator(xray.NewIDGenerator()))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

func serviceName(def string) string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "timetravel-" + def
}

// Headers returns the trace context of ctx as asynq task headers; nil when
// ctx carries no span.
func Headers(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	h := map[string]string{}
	propagator().Inject(ctx, propagation.MapCarrier(h))
	return h
}

// Extract returns ctx with the trace context of a task's headers.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return propagator().Extract(ctx, propagation.MapCarrier(headers))
}

// ExtractHTTP returns ctx with the trace context of an HTTP request's
// headers (traceparent), if any.
func ExtractHTTP(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return propagator().Extract(ctx, carrier)
}

// LogAttrs returns the trace_id attribute of ctx's span for a log line, or
// nothing when ctx carries no recorded span (tracing off).
func LogAttrs(ctx context.Context) []any {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return nil
	}
	return []any{"trace_id", sc.TraceID().String()}
}
