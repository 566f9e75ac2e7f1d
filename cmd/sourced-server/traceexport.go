package main

import (
	"context"
	stdlog "log"
	"sync"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// countingExporter passes spans on to an exporter and, when an export
// fails, counts the batch and its spans as dropped and logs through zap:
// once at Warn when exports start failing, once at Info when one works
// again. It returns nil for a failed export, so the batch processor does
// not hand the error to OpenTelemetry's global handler (which prints plain
// text to stderr).
type countingExporter struct {
	sdktrace.SpanExporter
	log *zap.Logger
	m   *opsMetrics

	mu      sync.Mutex
	failing bool
	dropped int
}

// ExportSpans implements sdktrace.SpanExporter.
func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.m.exportFailures.Inc()
		e.m.spansDropped.Add(float64(len(spans)))
		e.dropped += len(spans)
		if !e.failing {
			e.failing = true
			e.log.Warn("trace export failed; spans are dropped until it works again (sourced_trace_spans_dropped_total)",
				zap.Int("spans", len(spans)), zap.Error(err))
		}
		return nil
	}
	if e.failing {
		e.failing = false
		e.log.Info("trace export works again", zap.Int("dropped_spans", e.dropped))
		e.dropped = 0
	}
	return nil
}

// otelErrors routes OpenTelemetry's own error reports (a process-wide
// handler, whose default prints plain text to stderr) through log while the
// server runs, and returns what puts a plain handler back when it stops.
func otelErrors(log *zap.Logger) (restore func()) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", zap.Error(err)) }))
	return func() { otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { stdlog.Print(err) })) }
}
