// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and carries W3C trace context through asynq task
// headers, so that one trace follows a job from its POST through every
// snapshot task, the aggregation and the webhook.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER=otlp is set:
// the global tracer provider then stays OpenTelemetry's no-op one, which
// costs next to nothing on the hot path.
package tracing

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
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

// propagator is W3C trace context plus baggage, whatever the global one.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

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

// Setup installs, when the environment asks for it (see Enabled), a tracer
// provider that exports spans over OTLP/HTTP in batches, configured by the
// standard OTEL_* variables (endpoint, headers, protocol, sampler, service
// name, resource attributes). service names the process when
// OTEL_SERVICE_NAME is unset. shutdown flushes the spans; it does nothing
// when tracing is off.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagator)
	if !Enabled(os.Getenv) {
		return func(context.Context) error { return nil }, nil
	}
	if v := os.Getenv("OTEL_TRACES_EXPORTER"); v != "" && v != "otlp" {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: only otlp or none are supported, got %q", v)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", serviceName(service))))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
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
	propagator.Inject(ctx, propagation.MapCarrier(h))
	return h
}

// Extract returns ctx with the trace context of a task's headers.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(headers))
}

// ExtractHTTP returns ctx with the trace context of an HTTP request's
// headers (traceparent), if any.
func ExtractHTTP(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return propagator.Extract(ctx, carrier)
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
