package orderlist_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/examples/order/orderlist"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// After the newest orders are deleted the feed's head stays above every
// entry still readable; CatchUp ends when a read reaches the end instead of
// waiting for the head until its context ends.
func TestCatchUpEndsAtTheEndNotTheHead(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	place := func() transport.Ref {
		ref := transport.Ref{Type: "order", ID: uuid.NewString()}
		data := fmt.Sprintf(`{"customerId":%q,"orderAmount":100}`, uuid.NewString())
		require.NoError(t, store.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(data)}}, transport.MustNotExist))
		return ref
	}
	place()
	list, err := orderlist.Open(filepath.Join(t.TempDir(), "list.db"))
	require.NoError(t, err)
	defer list.Close()
	_, applied, err := list.CatchUp(ctx, store)
	require.NoError(t, err)
	assert.Equal(t, 1, applied)

	place()
	newest := place()
	token, err := store.RequestDelete(ctx, transport.DeleteAggregate(newest))
	require.NoError(t, err)
	require.NoError(t, store.ConfirmDelete(ctx, transport.DeleteAggregate(newest), token))

	bounded, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, applied, err = list.CatchUp(bounded, store)
	require.NoError(t, err)
	assert.NoError(t, bounded.Err(), "CatchUp returned when the read reached the end, not when its context ended")
	assert.Equal(t, 1, applied)
	rows, _, err := list.Rows()
	require.NoError(t, err)
	assert.Len(t, rows, 2)

	// Nothing readable after the checkpoint, the head above it: no wait.
	bounded2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	_, applied, err = list.CatchUp(bounded2, store)
	require.NoError(t, err)
	assert.NoError(t, bounded2.Err())
	assert.Equal(t, 0, applied)
}

// TestCatchUpRebuildsForANewStore: a list built from one store and caught
// up against another (a local server restarted on memory: fewer entries,
// or as many but others) is rebuilt from the new store, not trusted.
func TestCatchUpRebuildsForANewStore(t *testing.T) {
	ctx := context.Background()
	place := func(store *memory.Transport, n int) {
		for range n {
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			data := fmt.Sprintf(`{"customerId":%q,"orderAmount":100}`, uuid.NewString())
			require.NoError(t, store.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(data)}}, transport.MustNotExist))
		}
	}
	list, err := orderlist.Open(filepath.Join(t.TempDir(), "list.db"))
	require.NoError(t, err)
	defer list.Close()
	first := memory.New()
	place(first, 3)
	from, applied, err := list.CatchUp(ctx, first)
	require.NoError(t, err)
	assert.Equal(t, int64(0), from)
	assert.Equal(t, 3, applied)

	for _, n := range []int{1, 3} { // head below the checkpoint; same head, other entries
		store := memory.New()
		place(store, n)
		from, applied, err = list.CatchUp(ctx, store)
		require.NoError(t, err)
		assert.Equal(t, int64(0), from, "rebuilt")
		assert.Equal(t, n, applied)
		rows, totals, err := list.Rows()
		require.NoError(t, err)
		assert.Len(t, rows, n, "only the new store's orders")
		assert.Equal(t, n, totals.Orders)
		seq, err := list.Checkpoint(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(n), seq)
	}
}
