package repository_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

func TestUpdateSpanCountsAttemptsAndConflicts(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx := context.Background()
	tr := memory.New()
	repo := newRepo(t, tr, repository.WithTracerProvider(tp))
	other := newRepo(t, tr)
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	rec.Reset()

	first := true
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		if first { // another writer gets in between: one conflict
			first = false
			_, err := other.Update(ctx, id, increment)
			require.NoError(t, err)
		}
		return increment(r)
	})
	require.NoError(t, err)
	_, err = repo.Load(ctx, id)
	require.NoError(t, err)

	spans := rec.Ended()
	require.Len(t, spans, 2)
	update, load := spans[0], spans[1]
	assert.Equal(t, "sourced.repository.update", update.Name())
	values := map[string]int64{}
	for _, kv := range update.Attributes() {
		values[string(kv.Key)] = kv.Value.AsInt64()
	}
	assert.Equal(t, int64(2), values["sourced.attempts"])
	assert.Equal(t, int64(1), values["sourced.conflicts"])
	assert.Equal(t, int64(3), values["sourced.version"])
	assert.Equal(t, "sourced.repository.load", load.Name())
}
