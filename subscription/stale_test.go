package subscription_test

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// orders stores n batches of one event each, on n orders.
func orders(t testing.TB, tr transport.Transport, tenant string, n int) {
	t.Helper()
	for range n {
		put(t, tr, transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: 1})
	}
}

// handled records the entries a subscription handled.
type handled struct {
	mu   sync.Mutex
	seqs []int64
}

func (h *handled) add(_ context.Context, e transport.FeedEntry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seqs = append(h.seqs, e.Sequence)
	return nil
}

func (h *handled) get() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.seqs...)
}

// runToHead runs sub until it has handled its feed up to the feed's head
// (or Run returned), closes it and returns Run's error.
func runToHead(t *testing.T, sub *subscription.Subscription, feed transport.Feeder, scope transport.Scope) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	head, err := feed.FeedHead(ctx, scope)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	_ = sub.Await(ctx, head) // fails when Run returned early: its error tells
	require.NoError(t, sub.Close(ctx))
	return <-done
}

// follow runs a subscription called "list" over tr, recording what it
// handles, until it reached the feed's head.
func follow(t *testing.T, tr *memory.Transport, cps subscription.Checkpoints, opts ...subscription.Option) ([]int64, error) {
	t.Helper()
	sub, err := subscription.New(tr, "list", cps, append([]subscription.Option{subscription.Retry(noRetry)}, opts...)...)
	require.NoError(t, err)
	h := &handled{}
	sub.OnEntry(h.add)
	err = runToHead(t, sub, tr, transport.Scope{Type: transport.AllTypes})
	return h.get(), err
}

// copyFeed stores into to the first n batches of from, with their event
// ids: a backup of from taken after n batches.
func copyFeed(t *testing.T, from, to *memory.Transport, n int) {
	t.Helper()
	ctx := context.Background()
	page, err := from.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Limit: n})
	require.NoError(t, err)
	require.Len(t, page.Entries, n)
	for _, e := range page.Entries {
		require.NoError(t, to.Store(ctx, transport.Ref{Type: e.AggregateType, ID: e.AggregateID}, e.Events, transport.Any))
	}
}

func TestStaleCheckpoint(t *testing.T) {
	cases := map[string]struct {
		feed func(t *testing.T, old *memory.Transport) *memory.Transport
		head string
	}{
		"store reset (memory restarted, fewer entries)": {
			feed: func(t *testing.T, _ *memory.Transport) *memory.Transport {
				tr := memory.New()
				orders(t, tr, "", 2)
				return tr
			},
			head: "the feed's head 2 is below it",
		},
		"restored older backup (head below)": {
			feed: func(t *testing.T, old *memory.Transport) *memory.Transport {
				tr := memory.New()
				copyFeed(t, old, tr, 3)
				return tr
			},
			head: "the feed's head 3 is below it",
		},
		"older backup written to since (same numbers, other events)": {
			feed: func(t *testing.T, old *memory.Transport) *memory.Transport {
				tr := memory.New()
				copyFeed(t, old, tr, 3)
				orders(t, tr, "", 4)
				return tr
			},
			head: "head 7",
		},
		"same head, different events": {
			feed: func(t *testing.T, _ *memory.Transport) *memory.Transport {
				tr := memory.New()
				orders(t, tr, "", 5)
				return tr
			},
			head: "head 5",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, store := range []string{"memory", "bolt"} {
				t.Run(store, func(t *testing.T) {
					old := memory.New()
					orders(t, old, "", 5)
					var cps subscription.Checkpoints = subscription.NewMemoryCheckpoints()
					if store == "bolt" {
						_, cps = boltStore(t)
					}
					got, err := follow(t, old, cps)
					require.NoError(t, err)
					require.Equal(t, []int64{1, 2, 3, 4, 5}, got)
					c, ok, err := cps.(subscription.EntryCheckpoints).LoadCheckpoint(context.Background(), "list")
					require.NoError(t, err)
					require.True(t, ok)
					require.Equal(t, int64(5), c.Sequence)
					require.NotEmpty(t, c.EventID, "Run saves the entry's event id")

					tr := tc.feed(t, old)
					got, err = follow(t, tr, cps)
					require.ErrorIs(t, err, subscription.ErrStaleCheckpoint)
					assert.Empty(t, got, "nothing handled on a stale checkpoint")
					msg := err.Error()
					assert.Contains(t, msg, `"list"`)
					assert.Contains(t, msg, "sequence number 5")
					assert.Contains(t, msg, c.EventID)
					assert.Contains(t, msg, tc.head)

					// Rebuild: the read model is cleared, then everything
					// is handled again from the start.
					cleared := 0
					head, err := tr.FeedHead(context.Background(), transport.Scope{Type: transport.AllTypes})
					require.NoError(t, err)
					got, err = follow(t, tr, cps, subscription.OnStale(subscription.Rebuild(func(ctx context.Context) error {
						name, ok := subscription.NameOf(ctx)
						assert.True(t, ok)
						assert.Equal(t, "list", name)
						cleared++
						return nil
					})))
					require.NoError(t, err)
					assert.Equal(t, 1, cleared)
					require.Len(t, got, int(head))
					assert.Equal(t, int64(1), got[0])
					// And the rebuilt checkpoint is not stale.
					got, err = follow(t, tr, cps)
					require.NoError(t, err)
					assert.Empty(t, got)
				})
			}
		})
	}
}

func TestStaleCheckpointDeletedEntryIsNot(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	orders(t, tr, "", 4)
	last := transport.Ref{Type: "order", ID: uuid.NewString()}
	put(t, tr, last, "OrderPlaced", OrderPlaced{Total: 1})
	cps := subscription.NewMemoryCheckpoints()
	got, err := follow(t, tr, cps)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4, 5}, got)

	// The aggregate of the checkpoint's entry is deleted: nothing after it.
	tok, err := tr.RequestDelete(ctx, transport.DeleteAggregate(last))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(last), tok))
	got, err = follow(t, tr, cps)
	require.NoError(t, err)
	assert.Empty(t, got)

	// Then more are stored: the next entry is past the checkpoint.
	orders(t, tr, "", 2)
	got, err = follow(t, tr, cps)
	require.NoError(t, err)
	assert.Equal(t, []int64{6, 7}, got)
}

// TestStaleCheckScopesLikeTheSubscription: the check reads the entry at
// the checkpoint in the subscription's own feed (tenant, type, partition);
// read elsewhere, the entry at that number belongs to another feed and
// every restart would look stale.
func TestStaleCheckScopesLikeTheSubscription(t *testing.T) {
	tr := memory.New()
	acme := uuid.NewString()
	scope := transport.Scope{Tenant: acme, Type: "order"}
	store := func() {
		for i := range 12 {
			orders(t, tr, acme, 1)
			put(t, tr, transport.Ref{Tenant: acme, Type: "invoice", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: i})
			orders(t, tr, "", 1)
		}
	}
	store()
	cps := subscription.NewMemoryCheckpoints()
	run := func() []int64 {
		var all []int64
		for p := range 2 {
			sub, err := subscription.New(tr, "list", cps, subscription.Tenant(acme), subscription.Feed("order"),
				subscription.Partition(2, p), subscription.Retry(noRetry), subscription.Wait(10*time.Millisecond))
			require.NoError(t, err)
			h := &handled{}
			sub.OnEntry(h.add)
			require.NoError(t, runToHead(t, sub, tr, scope))
			all = append(all, h.get()...)
		}
		return all
	}
	assert.Len(t, run(), 12)
	assert.Empty(t, run(), "a restart is not stale")
	store()
	assert.Len(t, run(), 12)
}

func TestBoltCheckpointKeepsTheEventID(t *testing.T) {
	ctx := context.Background()
	db, cps := boltStore(t)
	// A checkpoint written before event ids were kept: 8 bytes.
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 3)
		return tx.Bucket([]byte("sourced.checkpoints")).Put([]byte("old"), v)
	}))
	c, ok, err := cps.LoadCheckpoint(ctx, "old")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, subscription.Checkpoint{Sequence: 3}, c)
	seq, ok, err := cps.Load(ctx, "old")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(3), seq)

	// A save at the same number adds the id; a save without one keeps it;
	// none moves back.
	require.NoError(t, cps.SaveCheckpoint(ctx, "old", subscription.Checkpoint{Sequence: 3, EventID: "e3"}))
	require.NoError(t, cps.Save(ctx, "old", 3))
	require.NoError(t, cps.SaveCheckpoint(ctx, "old", subscription.Checkpoint{Sequence: 2, EventID: "e2"}))
	c, _, _ = cps.LoadCheckpoint(ctx, "old")
	assert.Equal(t, subscription.Checkpoint{Sequence: 3, EventID: "e3"}, c)

	// Apply writes the entry's event id with the read model.
	e := transport.FeedEntry{Sequence: 4, AggregateType: "order", AggregateID: "a", Events: []transport.Event{{EventID: "e4"}}}
	require.NoError(t, cps.Apply("old", func(context.Context, *bbolt.Tx, transport.FeedEntry) error { return nil })(ctx, e))
	c, _, _ = cps.LoadCheckpoint(ctx, "old")
	assert.Equal(t, subscription.Checkpoint{Sequence: 4, EventID: "e4"}, c)

	// The checkpoint itself stays 8 bytes, as older releases read it; when
	// one of them moves it, the event id of another entry is not trusted.
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("sourced.checkpoints"))
		require.Len(t, b.Get([]byte("old")), 8)
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 6)
		return b.Put([]byte("old"), v)
	}))
	c, _, _ = cps.LoadCheckpoint(ctx, "old")
	assert.Equal(t, subscription.Checkpoint{Sequence: 6}, c)
	require.NoError(t, cps.Reset(ctx, "old"))
	_, ok, err = cps.LoadCheckpoint(ctx, "old")
	require.NoError(t, err)
	assert.False(t, ok)
}

// TestBoltApplyRebuilds: a read model kept by Apply in bolt is rebuilt
// when the feed was replaced: cleared, its checkpoint reset by the
// subscription that holds the name, every entry applied once.
func TestBoltApplyRebuilds(t *testing.T) {
	db, cps := boltStore(t)
	rows := []byte("rows")
	apply := func(tr *memory.Transport) error {
		sub, err := subscription.New(tr, "list", cps, subscription.Retry(noRetry),
			subscription.OnStale(subscription.Rebuild(func(context.Context) error {
				return db.Update(func(tx *bbolt.Tx) error {
					if tx.Bucket(rows) == nil {
						return nil
					}
					return tx.DeleteBucket(rows)
				})
			})))
		require.NoError(t, err)
		sub.OnEntry(cps.Apply(sub.Name(), func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
			b, err := tx.CreateBucketIfNotExists(rows)
			if err != nil {
				return err
			}
			return b.Put([]byte(e.AggregateID), []byte("x"))
		}))
		return runToHead(t, sub, tr, transport.Scope{Type: transport.AllTypes})
	}
	count := func() (n int) {
		require.NoError(t, db.View(func(tx *bbolt.Tx) error {
			if b := tx.Bucket(rows); b != nil {
				n = b.Stats().KeyN
			}
			return nil
		}))
		return n
	}
	old := memory.New()
	orders(t, old, "", 6)
	require.NoError(t, apply(old))
	require.Equal(t, 6, count())
	fresh := memory.New()
	orders(t, fresh, "", 3)
	require.NoError(t, apply(fresh))
	assert.Equal(t, 3, count(), "rebuilt from the new feed only")
	seq, _, err := cps.Load(context.Background(), "list")
	require.NoError(t, err)
	assert.Equal(t, int64(3), seq)
}

// TestRestartSettlesAtOnce: a partition restarted with nothing new to
// read settles (Await of the head) at its first read, not after a read
// that waits for the next batch (here 1 minute).
func TestRestartSettlesAtOnce(t *testing.T) {
	tr := memory.New()
	orders(t, tr, "", 20)
	cps := subscription.NewMemoryCheckpoints()
	for range 2 {
		for p := range 2 {
			sub, err := subscription.New(tr, "list", cps, subscription.Partition(2, p), subscription.Wait(time.Minute))
			require.NoError(t, err)
			sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
			done := start(t, sub)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, sub.Await(ctx, 20))
			require.NoError(t, sub.Close(ctx))
			require.NoError(t, <-done)
			cancel()
		}
	}
}

// countingBackOff counts the retries asked of it.
type countingBackOff struct{ n *atomic.Int64 }

func (c countingBackOff) NextBackOff() time.Duration {
	if c.n.Add(1) > 2 {
		return backoff.Stop
	}
	return 0
}
func (c countingBackOff) Reset() {}

// TestStaleCheckpointIsNotRetried: a stale checkpoint is a fact, not a
// failure that goes away: Run returns at once.
func TestStaleCheckpointIsNotRetried(t *testing.T) {
	ctx := context.Background()
	cps := subscription.NewMemoryCheckpoints()
	require.NoError(t, cps.SaveCheckpoint(ctx, "list", subscription.Checkpoint{Sequence: 9, EventID: "gone"}))
	var retries atomic.Int64
	sub, err := subscription.New(memory.New(), "list", cps, subscription.Retry(func() backoff.BackOff { return countingBackOff{&retries} }))
	require.NoError(t, err)
	sub.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
	err = sub.Run(ctx)
	require.ErrorIs(t, err, subscription.ErrStaleCheckpoint)
	assert.Contains(t, err.Error(), `subscription "list"`)
	assert.Contains(t, err.Error(), `(event "gone")`)
	assert.Contains(t, err.Error(), "head 0")
	assert.Zero(t, retries.Load())
}
