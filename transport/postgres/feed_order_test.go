package postgres_test

import (
	"context"
	"strconv"
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

// TestNoSkipWhenTheLowerCommitsLast forces the interleaving that breaks a
// feed numbered at insert: A opens its transaction first (its id is the
// lower), B opens later and commits first, A commits last. B is numbered
// once it has committed (a read that starts after B's Store returned holds
// it, without waiting for A), and A, committing last, is numbered after it:
// no reader sees B and then, behind its position, A.
func TestNoSkipWhenTheLowerCommitsLast(t *testing.T) {
	tr := fresh(t)
	other := sameStore(t, tr) // another process, say, on the same schema
	ctx := context.Background()
	a, b := transport.Ref{Type: "order", ID: uuid.NewString()}, transport.Ref{Type: "order", ID: uuid.NewString()}
	all := transport.Scope{Type: transport.AllTypes}

	inTx, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	postgres.SetBeforeCommit(tr, func(ctx context.Context, tx pgx.Tx) {
		if first.CompareAndSwap(false, true) {
			close(inTx) // A has written its batch and holds its transaction open
			<-release
		}
	})
	aDone := make(chan error, 1)
	go func() {
		aDone <- tr.Store(ctx, a, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist)
	}()
	<-inTx
	// A feed that waits for A fails here rather than hang.
	var released atomic.Bool
	var once sync.Once
	end := func() { once.Do(func() { released.Store(true); close(release) }) }
	defer end()
	guard := time.AfterFunc(5*time.Second, end)
	defer guard.Stop()

	// A reader tails the feed the whole time.
	var seen []transport.FeedEntry
	readerDone := make(chan error, 1)
	rctx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	go func() {
		since := int64(0)
		for len(seen) < 2 {
			p, err := tr.ReadFeed(rctx, transport.FeedQuery{Feed: all, Since: since, Wait: 10 * time.Second})
			if err != nil {
				readerDone <- err
				return
			}
			for _, e := range p.Entries {
				seen = append(seen, e)
				since = e.Sequence
			}
		}
		readerDone <- nil
	}()

	// B commits and returns while the older A is still open: a writer never
	// waits for another.
	require.NoError(t, tr.Store(ctx, b, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))

	// A read that starts now holds B, and not A, which has not committed.
	p, err := other.ReadFeed(ctx, transport.FeedQuery{Feed: all})
	require.NoError(t, err)
	require.False(t, released.Load(), "the read waited for the open transaction A")
	require.Len(t, p.Entries, 1)
	assert.Equal(t, b.ID, p.Entries[0].AggregateID)

	end() // A commits last
	require.NoError(t, <-aDone)
	var txA, txB string
	require.NoError(t, other.Pool().QueryRow(ctx, `SELECT (SELECT tx::text FROM `+tr.Schema()+`.batches WHERE aggregate_id = $1),
		(SELECT tx::text FROM `+tr.Schema()+`.batches WHERE aggregate_id = $2)`, a.ID, b.ID).Scan(&txA, &txB))
	assert.Less(t, atoi(t, txA), atoi(t, txB), "A's transaction is the older")

	p, err = other.ReadFeed(ctx, transport.FeedQuery{Feed: all})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.Equal(t, b.ID, p.Entries[0].AggregateID, "B, committed first, is numbered first")
	assert.Equal(t, a.ID, p.Entries[1].AggregateID)

	require.NoError(t, <-readerDone)
	require.Len(t, seen, 2, "the tailing reader saw both batches")
	assert.Equal(t, b.ID, seen[0].AggregateID)
	assert.Equal(t, a.ID, seen[1].AggregateID)
	assert.Less(t, seen[0].Sequence, seen[1].Sequence)
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err)
	return n
}

// TestReadersNumberWhatTheWriterLeft: a writer whose process stopped right
// after its stores left batches without numbers; a reader elsewhere gets
// them all the same, in its read, its head and its counts.
func TestReadersNumberWhatTheWriterLeft(t *testing.T) {
	writer := fresh(t)
	reader := sameStore(t, writer)
	postgres.StopBackground(writer)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, writer.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	require.NoError(t, writer.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(1)))

	head, err := reader.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, int64(2), head)
	infos, err := reader.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 2, Events: 2}}, infos)
	p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.Equal(t, []int64{1, 2}, []int64{p.Entries[0].Version, p.Entries[1].Version})
}

// TestBulkNeverOrdersAVersionBeforeItsPredecessor: a bulk store's
// transaction begins (and takes its transaction id) before another writer
// stores version 1 of an aggregate the bulk then follows with version 2.
// Numbered in transaction order, version 2 would come first in the feed;
// the bulk must fail with a conflict instead (a retry starts a newer
// transaction).
func TestBulkNeverOrdersAVersionBeforeItsPredecessor(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	early, late := uuid.NewString(), uuid.NewString()
	if late < early {
		early, late = late, early // a bulk store writes in id order
	}
	postgres.SetBeforeBatch(tr, func(i int) {
		if i == 1 { // the bulk has written its first batch: its id is taken
			require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: late}, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
		}
	})
	err := tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: early, Events: []transport.Event{{EventType: "OrderPlaced"}}, Expected: transport.MustNotExist},
		{AggregateID: late, Events: []transport.Event{{EventType: "OrderPaid"}}, Expected: transport.Exactly(1)},
	})
	require.ErrorIs(t, err, transport.ErrConflict)
	postgres.SetBeforeBatch(tr, nil)

	// The same bulk again, in a new transaction, goes through, and the feed
	// has every aggregate's versions in order.
	require.NoError(t, tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: early, Events: []transport.Event{{EventType: "OrderPlaced"}}, Expected: transport.MustNotExist},
		{AggregateID: late, Events: []transport.Event{{EventType: "OrderPaid"}}, Expected: transport.Exactly(1)},
	}))
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: scope})
	require.NoError(t, err)
	last := map[string]int64{}
	for _, e := range p.Entries {
		assert.Equal(t, last[e.AggregateID]+1, e.Version, "versions of %s in order", e.AggregateID)
		last[e.AggregateID] = e.Version
	}
	assert.Equal(t, map[string]int64{early: 1, late: 2}, last)

	// An Any store in a bulk holds its aggregate's lock: a store of that
	// aggregate that starts meanwhile waits for the bulk, and follows it.
	other := uuid.NewString()
	var once atomic.Bool
	stored := make(chan error, 1)
	postgres.SetBeforeBatch(tr, func(i int) {
		if i == 1 && once.CompareAndSwap(false, true) {
			go func() {
				stored <- tr.Store(ctx, transport.Ref{Type: "order", ID: other}, []transport.Event{{EventType: "OrderPlaced"}}, transport.Any)
			}()
		}
	})
	require.NoError(t, tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: uuid.NewString(), Events: []transport.Event{{EventType: "OrderPlaced"}}},
		{AggregateID: other, Events: []transport.Event{{EventType: "OrderPaid"}}},
	}))
	postgres.SetBeforeBatch(tr, nil)
	require.NoError(t, <-stored)
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: scope, Since: p.Entries[len(p.Entries)-1].Sequence})
	require.NoError(t, err)
	var types []string
	for _, e := range p.Entries {
		if e.AggregateID == other {
			assert.Equal(t, int64(len(types)+1), e.Version)
			types = append(types, e.Events[0].EventType)
		}
	}
	assert.Equal(t, []string{"OrderPaid", "OrderPlaced"}, types, "the bulk's batch first, then the store that waited for it")
}

// TestWaitingReaderWakesOnAnotherProcessesStore: a reader waiting on the
// feed in one process (whose own sequencer would not look for an hour)
// wakes when another process stores and numbers a batch: the numbering
// notifies every listener.
func TestWaitingReaderWakesOnAnotherProcessesStore(t *testing.T) {
	writer := fresh(t)
	reader := sameStore(t, writer, postgres.WithSequencerInterval(time.Hour))
	ctx := context.Background()
	got := make(chan transport.FeedPage, 1)
	go func() {
		p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: time.Minute})
		assert.NoError(t, err)
		got <- p
	}()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, writer.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	p := <-got
	require.Len(t, p.Entries, 1)
	assert.Equal(t, ref.ID, p.Entries[0].AggregateID)
}
