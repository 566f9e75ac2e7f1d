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

// TestAStoredAggregateIsNotAnObjectOfItsOwn stores 50,000 aggregates of one
// event and counts the heap objects the store keeps: the garbage
// collector's work at every cycle grows with them, so a store of millions
// must not keep a few per aggregate (it kept about six: the stream, its
// slices, the event id, the data, the caller's id) but share large blocks
// (issue 20: the cost per Create must not grow with the store).
func TestAStoredAggregateIsNotAnObjectOfItsOwn(t *testing.T) {
	const n = 50_000
	ctx := context.Background()
	tr := memory.New()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		ref := transport.Ref{Type: "order", ID: uuid.NewString()}
		err := tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"amount":1}`)}}, transport.MustNotExist)
		require.NoError(t, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept := int64(after.HeapObjects) - int64(before.HeapObjects)
	t.Logf("%d objects kept for %d aggregates", kept, n)
	require.Less(t, kept, int64(n/20), "heap objects kept for %d aggregates", n)
	runtime.KeepAlive(tr)
}
