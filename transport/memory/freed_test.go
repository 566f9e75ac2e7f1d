package memory_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// TestDeletingEveryAggregateFreesTheirMemory stores 20,000 aggregates,
// deletes them one by one, and measures the heap the store still holds
// after a collection: it must be a small constant, not a share of every
// aggregate the store ever held (positions, id slots, feed numbers).
func TestDeletingEveryAggregateFreesTheirMemory(t *testing.T) {
	const n = 20_000
	ctx := context.Background()
	tr := memory.New()
	var before, full, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	refs := make([]transport.Ref, n)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
		require.NoError(t, tr.Store(ctx, refs[i], []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"amount":1}`)}}, transport.MustNotExist))
	}
	_, err := tr.List(ctx, transport.Scope{Type: "order"}, 0, 1)
	require.NoError(t, err)
	runtime.GC()
	runtime.ReadMemStats(&full)
	for _, ref := range refs {
		tok, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
		require.NoError(t, err)
		require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), tok))
	}
	refs = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap: %d B with %d aggregates, %d B after deleting them all", int64(full.HeapAlloc)-int64(before.HeapAlloc), n, held)
	require.Less(t, held, int64(256<<10), "bytes the store still holds after deleting all %d aggregates", n)
	runtime.KeepAlive(tr)
}
