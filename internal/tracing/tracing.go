// Package tracing holds what the library's OpenTelemetry spans share: the
// instrumentation name and the W3C trace-context propagator. Tracing is
// opt-in: without a tracer provider, no span is made and nothing is paid.
package tracing

import (
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of every span the library makes.
const Name = "github.com/sourced-go/sourced"

// Propagator carries the trace context in the standard traceparent and
// tracestate headers.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Tracer returns the library's tracer of tp, or nil for a nil tp.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(Name)
}
