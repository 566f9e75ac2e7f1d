package orderlist_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/examples/order/orderlist"
	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// gate holds the partition reads of one member's subscriptions until
// released, and counts the partitions waiting.
type gate struct {
	transport.Feeder
	mu      sync.Mutex
	waiting map[int]int
	changed chan struct{}
	open    chan struct{}
}

func newGate(f transport.Feeder) *gate {
	return &gate{Feeder: f, waiting: map[int]int{}, changed: make(chan struct{}, 1), open: make(chan struct{})}
}

func (g *gate) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	if q.Partition.Count > 1 {
		g.mu.Lock()
		g.waiting[q.Partition.Number]++
		g.mu.Unlock()
		g.signal()
		defer func() {
			g.mu.Lock()
			g.waiting[q.Partition.Number]--
			if g.waiting[q.Partition.Number] == 0 {
				delete(g.waiting, q.Partition.Number)
			}
			g.mu.Unlock()
			g.signal()
		}()
		select {
		case <-g.open:
		case <-ctx.Done():
			return transport.FeedPage{}, ctx.Err()
		}
	}
	return g.Feeder.ReadFeed(ctx, q)
}

func (g *gate) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// until waits until n partitions wait at the gate.
func (g *gate) until(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		g.mu.Lock()
		got := len(g.waiting)
		g.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-g.changed:
		case <-ctx.Done():
			t.Fatalf("%d partitions waiting, want %d", got, n)
		}
	}
}

// TestPGListMembersShareTheWork: two members catching up at the same time
// split the partitions (the first hands two over when the second joins),
// each batch applied once, and both end with the whole list.
func TestPGListMembersShareTheWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := pgtest.Start(ctx)
	defer cluster.Stop()
	pgtest.Need(t, cluster, err)
	url, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()

	store := memory.New()
	for range 40 {
		data := fmt.Sprintf(`{"customerId":%q,"orderAmount":100}`, uuid.NewString())
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: []byte(data)}}, transport.MustNotExist))
	}
	list, err := orderlist.OpenPostgres(ctx, pool)
	require.NoError(t, err)

	ga, gb := newGate(store), newGate(store)
	type result struct {
		applied int
		err     error
	}
	ra, rb := make(chan result, 1), make(chan result, 1)
	go func() { n, err := list.CatchUp(ctx, ga, "a"); ra <- result{n, err} }()
	ga.until(t, ctx, 4) // a holds every partition
	go func() { n, err := list.CatchUp(ctx, gb, "b"); rb <- result{n, err} }()
	gb.until(t, ctx, 2) // b took its share
	ga.until(t, ctx, 2) // which a handed over
	close(ga.open)
	close(gb.open)
	a, b := <-ra, <-rb
	require.NoError(t, a.err)
	require.NoError(t, b.err)
	assert.Positive(t, a.applied)
	assert.Positive(t, b.applied)
	assert.Equal(t, 40, a.applied+b.applied, "each batch applied once")
	rows, totals, err := list.Rows(ctx)
	require.NoError(t, err)
	assert.Len(t, rows, 40)
	assert.Equal(t, int64(4000), totals.Amount)
}
