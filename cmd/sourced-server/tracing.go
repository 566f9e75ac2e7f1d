package main

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// tracing sets up span export over OTLP/HTTP to endpoint (a URL such as
// http://collector:4318), so the server's spans join the traces of clients
// that send a traceparent header. Without a path, the standard /v1/traces
// is used. It returns the provider and a shutdown
// that flushes what is buffered. wrap, when not nil, wraps the exporter
// (to count and log failed exports).
func tracing(ctx context.Context, endpoint string, wrap func(sdktrace.SpanExporter) sdktrace.SpanExporter) (trace.TracerProvider, func(context.Context) error, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("-otlp-endpoint %q: want an http or https URL such as http://127.0.0.1:4318", endpoint)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host)}
	if u.Path != "" && u.Path != "/" {
		opts = append(opts, otlptracehttp.WithURLPath(u.Path))
	}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("-otlp-endpoint: %w", err)
	}
	var se sdktrace.SpanExporter = exp
	if wrap != nil {
		se = wrap(exp)
	}
	res := resource.NewSchemaless(semconv.ServiceName("sourced-server"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(se), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
