package serialized_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestOneTraceFromRepositoryToServer: an Update's span is the parent of the
// client's HTTP spans, and the server's spans join the same trace through
// the traceparent header.
func TestOneTraceFromRepositoryToServer(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	srv := localserver.NewServer(memory.New(), localserver.WithKeys(testAccess, testSecret), localserver.WithTracerProvider(tp))
	defer srv.Close()
	client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), serialized.WithTracerProvider(tp))
	require.NoError(t, err)
	repo := repository.New(client, tallies, repository.WithTracerProvider(tp))
	ctx := context.Background()
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, count)
	require.NoError(t, err)
	rec.Reset()

	_, err = repo.Update(ctx, id, func(r *aggregate.Root[tally]) error { return count(r) })
	require.NoError(t, err)

	spans := rec.Ended()
	var update sdktrace.ReadOnlySpan
	var clients, servers []sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch {
		case s.Name() == "sourced.repository.update":
			update = s
		case s.Name() == "sourced.http GET" || s.Name() == "sourced.http POST":
			clients = append(clients, s)
		case s.Name() == "sourced-server GET" || s.Name() == "sourced-server POST":
			servers = append(servers, s)
		}
	}
	require.NotNil(t, update, "an Update span")
	assert.Equal(t, int64(1), attr(update, "sourced.attempts").AsInt64())
	assert.Equal(t, int64(0), attr(update, "sourced.conflicts").AsInt64())
	assert.Equal(t, int64(2), attr(update, "sourced.version").AsInt64())
	require.Len(t, clients, 2, "a load and a store")
	require.Len(t, servers, 2)
	trace := update.SpanContext().TraceID()
	for _, c := range clients {
		assert.Equal(t, trace, c.SpanContext().TraceID())
		assert.Equal(t, update.SpanContext().SpanID(), c.Parent().SpanID(), "client spans are children of the Update")
		assert.Equal(t, int64(200), attr(c, "http.response.status_code").AsInt64())
	}
	parents := map[string]bool{clients[0].SpanContext().SpanID().String(): true, clients[1].SpanContext().SpanID().String(): true}
	for _, s := range servers {
		assert.Equal(t, trace, s.SpanContext().TraceID(), "the server's spans join the trace")
		assert.True(t, parents[s.Parent().SpanID().String()], "each server span's parent is a client span")
	}
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			assert.NotContains(t, kv.Value.String(), testSecret, "no secret in span %s", s.Name())
		}
	}
}
