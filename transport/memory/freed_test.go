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

// TestALongLivedAggregateDoesNotPinDeletedNeighbours appends a small batch
// to one aggregate, then stores and deletes a block's worth of small
// aggregates, 200 times over: what the store holds afterwards must be of
// the order of the one live aggregate's bytes (plus a block or two), not a
// shared 8 KB block kept alive by each of its batches.
func TestALongLivedAggregateDoesNotPinDeletedNeighbours(t *testing.T) {
	const rounds, neighbours = 200, 100
	ctx := context.Background()
	tr := memory.New()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	live := transport.Ref{Type: "order", ID: uuid.NewString()}
	small := []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"amount":1}`)}}
	for range rounds {
		require.NoError(t, tr.Store(ctx, live, small, transport.Any))
		for range neighbours {
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			require.NoError(t, tr.Store(ctx, ref, small, transport.MustNotExist))
			tok, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
			require.NoError(t, err)
			require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), tok))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap: %d B held for one aggregate of %d small batches", held, rounds)
	// About 0.75 MB is the feed's: the live aggregate has an entry in each
	// of the feed's 4096-entry blocks, which keeps them, and its type's
	// index keeps every number. Its batches pinning an 8 KB arena block
	// each came to 2.4 MB.
	require.Less(t, held, int64(1500<<10), "bytes held for one live aggregate of %d small batches", rounds)
	runtime.KeepAlive(tr)
}
