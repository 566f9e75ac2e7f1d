package memory_test

import (
	"context"
	"runtime"
	"runtime/metrics"
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

// scannableHeap is the heap the collector had to scan for pointers at its
// last cycle (pointer-free objects are not scanned).
func scannableHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// TestAStoredAggregateHoldsNoPointers stores 50,000 aggregates of one
// event and measures the heap a collection must scan for pointers: few
// objects are not enough (issue 20), a full collection at a million
// aggregates took ~70 ms chasing the pointers in the shared stream chunks
// (an id string, a batch's slice and time.Time's Location per aggregate),
// so the store must hold no pointer per aggregate: what is scanned grows
// by a pointer per 8 KB block and per 1024 streams, well under a byte per
// aggregate (it was about a hundred).
func TestAStoredAggregateHoldsNoPointers(t *testing.T) {
	const n = 50_000
	ctx := context.Background()
	tr := memory.New()
	runtime.GC()
	before := scannableHeap()
	for range n {
		ref := transport.Ref{Type: "order", ID: uuid.NewString()}
		err := tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"amount":1}`)}}, transport.MustNotExist)
		require.NoError(t, err)
	}
	_, err := tr.List(ctx, transport.Scope{Type: "order"}, 0, 1) // sorts the ids in
	require.NoError(t, err)
	runtime.GC()
	scanned := scannableHeap() - before
	t.Logf("%d bytes to scan for %d aggregates", scanned, n)
	require.Less(t, scanned, int64(n), "bytes to scan for %d aggregates", n)
	runtime.KeepAlive(tr)
}
