package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestChunkedRunsWithOpenStoresBelow (issue 23): numbering runs of two
// batches at most, while bulk stores of one process stay open across
// other processes' commits (their transactions below the runs' scan_from,
// in scan_also), so runs stop mid-backlog with transactions open below
// where they stopped. A tailing reader gets every batch once, numbers
// without a gap, each aggregate's versions in order.
func TestChunkedRunsWithOpenStoresBelow(t *testing.T) {
	tr := fresh(t)
	other, slow, reader := sameStore(t, tr), sameStore(t, tr), sameStore(t, tr)
	for _, tp := range []*postgres.Transport{tr, other, slow, reader} {
		postgres.SetSequencerChunk(tp, 2)
	}
	postgres.SetBeforeCommit(slow, func(ctx context.Context, tx pgx.Tx) {
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond) // only to vary the interleavings
	})
	ctx := context.Background()
	ids := make([]string, 5)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	const writers, rounds = 6, 15
	var wg sync.WaitGroup
	var stored atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := []*postgres.Transport{tr, other, slow}[w%3]
			for r := range rounds {
				id := ids[(w+r)%len(ids)]
				ref := transport.Ref{Type: "order", ID: id}
				var err error
				if tp == slow || r%2 == 0 {
					next := ids[(w+r+1)%len(ids)]
					err = tp.StoreBulk(ctx, transport.Scope{Type: "order"}, []transport.Batch{
						{AggregateID: id, Events: placed}, {AggregateID: next, Events: placed}, {AggregateID: ids[(w+r+2)%len(ids)], Events: placed},
					})
					if err == nil {
						stored.Add(2)
					}
				} else {
					err = tp.Store(ctx, ref, placed, transport.Any)
				}
				if !assert.NoError(t, err) {
					return
				}
				stored.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	finished := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	last := map[string]int64{}
	since, n := int64(0), int64(0)
	for !finished() || n < stored.Load() {
		p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since, Wait: time.Second})
		require.NoError(t, err)
		for _, e := range p.Entries {
			require.Equal(t, since+1, e.Sequence, "numbers without a gap")
			require.Equal(t, last[e.AggregateID]+1, e.Version, "versions of %s in order", e.AggregateID)
			last[e.AggregateID] = e.Version
			since = e.Sequence
			n++
		}
		if len(p.Entries) == 0 && finished() {
			break
		}
	}
	var total int64
	for _, v := range last {
		total += v
	}
	assert.Equal(t, stored.Load(), n, "every batch in the feed")
	assert.Equal(t, n, total)
	head, err := tr.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, n, head)
}

// TestDeletesWhileBatchesWait (issue 23): deletes of an aggregate and of a
// type while some of their batches wait for a number (no sequencer runs
// but the reads'), in two tenants: the counts lose only what was
// numbered, what was deleted never reaches the feed, the other tenant's
// waiting batch does, and numbering goes on after.
func TestDeletesWhileBatchesWait(t *testing.T) {
	tr := fresh(t)
	postgres.StopBackground(tr)
	ctx := context.Background()
	uuids, names := map[string]string{}, map[string]string{}
	order := func(tenant, name string) transport.Ref {
		if uuids[name] == "" {
			uuids[name] = uuid.NewString()
			names[uuids[name]] = name
		}
		return transport.Ref{Tenant: tenant, Type: "order", ID: uuids[name]}
	}
	del := func(target transport.DeleteTarget) {
		token, err := tr.RequestDelete(ctx, target)
		require.NoError(t, err)
		require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	}
	ids := func(tenant string) []string {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Tenant: tenant, Type: transport.AllTypes}})
		require.NoError(t, err)
		out := []string{}
		for _, e := range p.Entries {
			out = append(out, fmt.Sprintf("%s/%d", names[e.AggregateID], e.Version))
		}
		return out
	}
	overview := func(tenant string) []transport.FeedInfo {
		infos, err := tr.FeedOverview(ctx, tenant)
		require.NoError(t, err)
		return infos
	}
	store := func(ref transport.Ref) { require.NoError(t, tr.Store(ctx, ref, placed, transport.Any)) }

	t1, t2 := uuid.NewString(), uuid.NewString()
	store(order(t1, "a"))
	require.Equal(t, []string{"a/1"}, ids(t1)) // numbered
	store(order(t1, "a"))                      // a/2 waits
	store(order(t1, "b"))                      // waits
	store(order(t2, "c"))                      // waits, other tenant
	del(transport.DeleteAggregate(order(t1, "a")))
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 1, Events: 1}}, overview(t1))
	assert.Equal(t, []string{"b/1"}, ids(t1))

	store(order(t1, "d")) // waits
	del(transport.DeleteAllOfType(transport.Scope{Tenant: t1, Type: "order"}))
	assert.Empty(t, overview(t1))
	assert.Empty(t, ids(t1))
	assert.Equal(t, []string{"c/1"}, ids(t2))
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 1, Events: 1}}, overview(t2))

	delete(uuids, "a")
	store(order(t1, "a")) // a new aggregate a
	assert.Equal(t, []string{"a/1"}, ids(t1))
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 1, Events: 1}}, overview(t1))
	head, err := tr.FeedHead(ctx, transport.Scope{Tenant: t1, Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, int64(4), head, "a/1 1, b/1 2, c/1 3 (t2), d/1 none (deleted before its number), the new a/1 4")
}
