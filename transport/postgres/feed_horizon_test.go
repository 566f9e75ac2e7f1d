package postgres_test

import (
	"context"
	"errors"
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

// holdCap is how long a test keeps a transaction open at most: a feed that
// waits for it then fails the test (the batch came only after it ended)
// instead of hanging. Nothing is measured against it.
const holdCap = 5 * time.Second

// held is a transaction kept open until end is called, or holdCap has
// passed; ended tells which came first.
type held struct {
	once  sync.Once
	ended atomic.Bool
	stop  func()
	timer *time.Timer
}

func hold(stop func()) *held {
	h := &held{stop: stop}
	h.timer = time.AfterFunc(holdCap, h.end)
	return h
}

func (h *held) end() {
	h.once.Do(func() {
		h.ended.Store(true)
		h.timer.Stop()
		h.stop()
	})
}

// openIn opens a transaction on a connection of its own to url, runs
// stmts in it (the transaction takes an id) and leaves it open.
func openIn(t *testing.T, url string, stmts ...string) *held {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	for _, s := range stmts {
		_, err := tx.Exec(ctx, s)
		require.NoError(t, err)
	}
	h := hold(func() {
		_ = tx.Rollback(ctx)
		_ = conn.Close(ctx)
	})
	t.Cleanup(h.end)
	return h
}

// deliveredWhileOpen: a reader (another process) waits on the feed; a
// batch is stored; the reader gets it while h's transaction is still
// open.
func deliveredWhileOpen(t *testing.T, tr *postgres.Transport, h *held) {
	t.Helper()
	ctx := context.Background()
	reader := sameStore(t, tr)
	read := make(chan struct{}, 1)
	postgres.SetAfterRead(reader, func() {
		select {
		case read <- struct{}{}:
		default:
		}
	})
	since, err := reader.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	got := make(chan transport.FeedPage, 1)
	go func() {
		p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since, Wait: time.Minute})
		assert.NoError(t, err)
		got <- p
	}()
	<-read // the reader waits
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, placed, transport.MustNotExist))
	p := <-got
	require.False(t, h.ended.Load(), "the reader got the batch only after the other transaction ended")
	require.Len(t, p.Entries, 1)
	assert.Equal(t, ref.ID, p.Entries[0].AggregateID)

	// A read that starts now, in yet another process, has it too.
	head, err := sameStore(t, tr).FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, p.Entries[0].Sequence, head)
	require.False(t, h.ended.Load())
	h.end()
}

// TestUnrelatedTransactionsHoldNothingBack (issue 23): transactions that
// store no batch, open on the same server, leave the feed alone: a batch
// stored meanwhile reaches a waiting reader while they are still open.
func TestUnrelatedTransactionsHoldNothingBack(t *testing.T) {
	url := database(t)
	t.Run("a write transaction running a statement", func(t *testing.T) {
		tr := fresh(t)
		ctx, cancel := context.WithCancel(context.Background())
		conn, err := pgx.Connect(context.Background(), url)
		require.NoError(t, err)
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "CREATE TEMP TABLE nightly (n int); INSERT INTO nightly VALUES (1)")
		require.NoError(t, err)
		sleeping := make(chan struct{})
		go func() {
			defer close(sleeping)
			_, _ = tx.Exec(ctx, "SELECT pg_sleep(60)") // a long batch job
		}()
		h := hold(func() {
			cancel()
			<-sleeping
			_ = tx.Rollback(context.Background())
			_ = conn.Close(context.Background())
		})
		t.Cleanup(h.end)
		deliveredWhileOpen(t, tr, h)
	})
	t.Run("an idle-in-transaction session", func(t *testing.T) {
		tr := fresh(t)
		h := openIn(t, url, "SELECT pg_current_xact_id()")
		var state string
		require.NoError(t, tr.Pool().QueryRow(context.Background(),
			"SELECT count(*)::text FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL").Scan(&state))
		require.NotEqual(t, "0", state)
		deliveredWhileOpen(t, tr, h)
	})
	t.Run("a transaction in another database", func(t *testing.T) {
		tr := fresh(t)
		other, err := cluster.NewDatabase(context.Background())
		require.NoError(t, err)
		h := openIn(t, other, "CREATE TABLE report (n int)", "INSERT INTO report VALUES (1)")
		deliveredWhileOpen(t, tr, h)
	})
}

// TestAnOpenStoreHoldsBackOnlyItsOwnBatches (issue 23): a store whose
// transaction stays open (a bulk store here; a user's own transaction
// that stores is the same) holds back no other store's batch, not even
// one that commits between its first write and its commit; its own
// batches reach the feed once it commits, after those.
func TestAnOpenStoreHoldsBackOnlyItsOwnBatches(t *testing.T) {
	tr := fresh(t)
	other := sameStore(t, tr) // another process
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}

	early := transport.Ref{Type: "order", ID: uuid.NewString()}
	midway := make(chan struct{})
	var once atomic.Bool
	postgres.SetBeforeBatch(tr, func(i int) {
		if i == 1 && once.CompareAndSwap(false, true) {
			// The bulk has written its first batch (its transaction has
			// its id): another store commits now, and is in the feed.
			assert.NoError(t, other.Store(ctx, early, placed, transport.MustNotExist))
			close(midway)
		}
	})
	inTx, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	postgres.SetBeforeCommit(tr, func(ctx context.Context, tx pgx.Tx) {
		if first.CompareAndSwap(false, true) {
			close(inTx)
			<-release
		}
	})
	bulk := []transport.Batch{{AggregateID: uuid.NewString(), Events: placed}, {AggregateID: uuid.NewString(), Events: placed}}
	bulkDone := make(chan error, 1)
	go func() { bulkDone <- tr.StoreBulk(ctx, scope, bulk) }()
	<-midway
	<-inTx
	h := hold(func() { close(release) })
	t.Cleanup(h.end)

	p, err := other.ReadFeed(ctx, transport.FeedQuery{Feed: scope})
	require.NoError(t, err)
	require.False(t, h.ended.Load(), "the read waited for the open store")
	require.Len(t, p.Entries, 1)
	assert.Equal(t, early.ID, p.Entries[0].AggregateID)

	deliveredWhileOpen(t, other, h) // and a later store reaches a waiting reader

	require.NoError(t, <-bulkDone)
	p, err = other.ReadFeed(ctx, transport.FeedQuery{Feed: scope})
	require.NoError(t, err)
	require.Len(t, p.Entries, 4, "the bulk's batches are in the feed once it has committed")
	assert.Equal(t, early.ID, p.Entries[0].AggregateID)
	got := map[string]bool{p.Entries[2].AggregateID: true, p.Entries[3].AggregateID: true}
	assert.Equal(t, map[string]bool{bulk[0].AggregateID: true, bulk[1].AggregateID: true}, got, "after the batches that committed before it")
}

// TestVersionsAscendUnderConcurrency (issue 23): without a horizon the feed
// is no longer in transaction order across runs, but an aggregate's
// versions always are: writers in two processes race on a few aggregates
// (Any stores, exact stores, bulk stores), with an unrelated transaction
// open the whole time, and a reader tailing the feed gets every batch,
// each aggregate's versions one after another from 1, before that
// transaction ends.
func TestVersionsAscendUnderConcurrency(t *testing.T) {
	tr := fresh(t)
	other := sameStore(t, tr)
	ctx := context.Background()
	unrelated := openIn(t, database(t), "SELECT pg_current_xact_id()")
	unrelated.timer.Reset(time.Minute) // ends after the writers, whatever their speed

	ids := make([]string, 4)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	const writers, rounds = 6, 20
	var wg sync.WaitGroup
	var stored atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := []*postgres.Transport{tr, other}[w%2]
			for r := range rounds {
				id := ids[(w+r)%len(ids)]
				ref := transport.Ref{Type: "order", ID: id}
				var err error
				switch r % 3 {
				case 0:
					err = tp.Store(ctx, ref, placed, transport.Any)
				case 1:
					err = storeExactly(ctx, tp, ref)
				default:
					next := ids[(w+r+1)%len(ids)]
					err = tp.StoreBulk(ctx, transport.Scope{Type: "order"}, []transport.Batch{
						{AggregateID: id, Events: placed}, {AggregateID: next, Events: placed},
					})
					stored.Add(1)
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
	reader := sameStore(t, tr)
	for !finished() || n < stored.Load() {
		p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since, Wait: time.Second})
		require.NoError(t, err)
		for _, e := range p.Entries {
			require.Greater(t, e.Sequence, since)
			require.Equal(t, last[e.AggregateID]+1, e.Version, "versions of %s in order", e.AggregateID)
			last[e.AggregateID] = e.Version
			since = e.Sequence
			n++
		}
		require.False(t, unrelated.ended.Load(), "the feed waited for the unrelated transaction")
	}
	var total int64
	for _, v := range last {
		total += v
	}
	assert.Equal(t, int64(writers*26), n, "every batch in the feed")
	assert.Equal(t, n, total)
	assert.Equal(t, stored.Load(), n)
	unrelated.end()
}

// storeExactly stores a batch of ref as a repository does: it loads the
// version, expects it, and tries again after a conflict.
func storeExactly(ctx context.Context, tp *postgres.Transport, ref transport.Ref) error {
	for {
		exp := transport.MustNotExist
		pg, err := tp.Load(ctx, ref, 0, 0)
		switch {
		case err == nil:
			exp = transport.Exactly(pg.Version)
		case !errors.Is(err, transport.ErrNotFound):
			return err
		}
		err = tp.Store(ctx, ref, placed, exp)
		if !errors.Is(err, transport.ErrConflict) {
			return err
		}
	}
}
