package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func TestMain(m *testing.M) {
	if runCrashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

type OrderPlaced struct {
	Total int `json:"total"`
}

type OrderPaid struct {
	Amount int `json:"amount"`
}

func put(t testing.TB, tr transport.Transport, ref transport.Ref, typ string, data any) {
	t.Helper()
	b, err := json.Marshal(data)
	require.NoError(t, err)
	require.NoError(t, tr.Store(context.Background(), ref, []transport.Event{{EventType: typ, Data: b}}, transport.Any))
}

func noRetry() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) }

func boltDB(t *testing.T) (*bbolt.DB, *boltcheckpoint.Store) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)
	return db, cps
}

// run runs sub until it has handled the feed up to seq, then closes it.
func run(t *testing.T, sub *subscription.Subscription, seq int64) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sub.Run(context.Background()) }()
	require.NoError(t, sub.Await(context.Background(), seq))
	require.NoError(t, sub.Close(context.Background()))
	require.NoError(t, <-done)
}

// orders is a bolt read model: per order its total and amount paid, and
// per sequence number how often it was applied.
func orders(p *projection.Projection[*bbolt.Tx]) {
	add := func(tx *bbolt.Tx, bucket, key string, n int) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		cur, _ := strconv.Atoi(string(b.Get([]byte(key))))
		return b.Put([]byte(key), []byte(strconv.Itoa(cur+n)))
	}
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
		return add(tx, "total", env.AggregateID, e.Total)
	})
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPaid) error {
		return add(tx, "paid", env.AggregateID, e.Amount)
	})
	p.OnEntry(func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		return add(tx, "applied", strconv.FormatInt(e.Sequence, 10), 1)
	})
}

func bucket(t *testing.T, db *bbolt.DB, name string) map[string]int {
	t.Helper()
	out := map[string]int{}
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			n, _ := strconv.Atoi(string(v))
			out[string(k)] = n
			return nil
		})
	}))
	return out
}

// Typed handlers get the events decoded, with their envelope and the
// page's transaction; an event type with no handler is skipped; the
// checkpoint stands on the last entry, with its event id.
func TestTypedHandlersInTheTransaction(t *testing.T) {
	tr := memory.New()
	a, b := uuid.NewString(), uuid.NewString()
	put(t, tr, transport.Ref{Type: "order", ID: a}, "OrderPlaced", OrderPlaced{Total: 10})
	put(t, tr, transport.Ref{Type: "order", ID: b}, "OrderPlaced", OrderPlaced{Total: 20})
	put(t, tr, transport.Ref{Type: "order", ID: a}, "OrderNoted", map[string]string{"note": "no handler"})
	put(t, tr, transport.Ref{Type: "order", ID: a}, "OrderPaid", OrderPaid{Amount: 10})

	db, cps := boltDB(t)
	p := projection.New(cps)
	orders(p)
	var envs []eventbus.Envelope
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, _ OrderPaid) error {
		assert.True(t, tx.Writable(), "the page's read-write transaction")
		envs = append(envs, env)
		return nil
	})
	sub, err := subscription.New(tr, "orders", cps, subscription.Wait(time.Second))
	require.NoError(t, err)
	p.Attach(sub)
	run(t, sub, 4)

	assert.Equal(t, map[string]int{a: 10, b: 20}, bucket(t, db, "total"))
	assert.Equal(t, map[string]int{a: 10}, bucket(t, db, "paid"))
	assert.Equal(t, map[string]int{"1": 1, "2": 1, "3": 1, "4": 1}, bucket(t, db, "applied"))
	require.Len(t, envs, 1)
	assert.Equal(t, int64(4), envs[0].Sequence)
	assert.Equal(t, a, envs[0].AggregateID)
	assert.Equal(t, "OrderPaid", envs[0].EventType)

	page, err := tr.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 3, Limit: 1})
	require.NoError(t, err)
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		c, ok := boltcheckpoint.GetCheckpoint(tx, "orders")
		assert.True(t, ok)
		assert.Equal(t, subscription.CheckpointOf(page.Entries[0]), c, "the checkpoint stands on the last entry, with its event id")
		return nil
	}))
}

// A handler that fails on one entry: its page rolls back, the entries go
// one at a time, the good ones are applied once each, the bad one is
// parked (or stops Run, the checkpoint before it). Nothing is skipped,
// nothing applied twice.
func TestFailingEntryInAPage(t *testing.T) {
	for _, policy := range []string{"park", "stop"} {
		t.Run(policy, func(t *testing.T) {
			tr := memory.New()
			for i := range 5 {
				put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i + 1})
			}
			db, cps := boltDB(t)
			p := projection.New(cps)
			orders(p)
			projection.On(p, func(_ context.Context, _ *bbolt.Tx, env eventbus.Envelope, _ OrderPlaced) error {
				if env.Sequence == 3 {
					return errors.New("cannot apply 3")
				}
				return nil
			})
			opts := []subscription.Option{subscription.Wait(time.Second), subscription.Retry(noRetry)}
			if policy == "park" {
				opts = append(opts, subscription.OnFailure(subscription.Park(cps)))
			}
			sub, err := subscription.New(tr, "orders", cps, opts...)
			require.NoError(t, err)
			p.Attach(sub)
			if policy == "park" {
				run(t, sub, 5)
				assert.Equal(t, map[string]int{"1": 1, "2": 1, "4": 1, "5": 1}, bucket(t, db, "applied"))
				parked, err := cps.ListParked(context.Background(), "orders")
				require.NoError(t, err)
				require.Len(t, parked, 1)
				assert.Equal(t, int64(3), parked[0].Entry.Sequence)
				pos, _, _ := cps.Load(context.Background(), "orders")
				assert.Equal(t, int64(5), pos)
				return
			}
			err = sub.Run(context.Background())
			assert.ErrorIs(t, err, eventbus.ErrHandler)
			assert.Equal(t, map[string]int{"1": 1, "2": 1}, bucket(t, db, "applied"))
			pos, _, _ := cps.Load(context.Background(), "orders")
			assert.Equal(t, int64(2), pos, "the checkpoint stays before the failing entry")
		})
	}
}

// A crash after the commit, before the subscription knew: the entries
// come again (here: a subscription whose own checkpoints were lost) and
// change nothing.
func TestRedeliveryChangesNothing(t *testing.T) {
	tr := memory.New()
	for i := range 6 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i + 1})
	}
	db, cps := boltDB(t)
	p := projection.New(cps)
	orders(p)
	for round := range 2 {
		sub, err := subscription.New(tr, "orders", subscription.NewMemoryCheckpoints(), subscription.PageSize(4), subscription.Wait(time.Second))
		require.NoError(t, err)
		p.Using(cps).Attach(sub)
		run(t, sub, 6)
		assert.Equal(t, map[string]int{"1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "6": 1}, bucket(t, db, "applied"), "round %d", round)
	}
	// A redelivered page that straddles the checkpoint applies only what
	// is new.
	page, err := tr.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 3})
	require.NoError(t, err)
	require.NoError(t, cps.Update(context.Background(), func(ctx context.Context, tx *bbolt.Tx) error {
		return cps.SetCheckpoint(ctx, tx, "orders", subscription.CheckpointOf(page.Entries[1])) // at 5
	}))
	require.NoError(t, p.Apply(context.Background(), "orders", page.Entries)) // 4, 5, 6
	assert.Equal(t, map[string]int{"1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "6": 2}, bucket(t, db, "applied"))
}

// memStore is a user's own Store: a map copied for each transaction, and
// kept only when the transaction succeeds.
type memStore struct {
	mu    sync.Mutex
	state *memTx
	txs   int
}

type memTx struct {
	rows map[string]int
	cps  map[string]subscription.Checkpoint
}

func (m *memStore) Update(ctx context.Context, fn func(ctx context.Context, tx *memTx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.txs++
	tx := &memTx{rows: maps.Clone(m.state.rows), cps: maps.Clone(m.state.cps)}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	m.state = tx
	return nil
}

func (m *memStore) Checkpoint(_ context.Context, tx *memTx, name string) (subscription.Checkpoint, bool, error) {
	c, ok := tx.cps[name]
	return c, ok, nil
}

func (m *memStore) SetCheckpoint(_ context.Context, tx *memTx, name string, c subscription.Checkpoint) error {
	tx.cps[name] = c
	return nil
}

// A Store implemented by a user works as bolt's does: one transaction per
// page, rolled back on failure, and Checkpoints(store) for the
// subscription.
func TestUserStore(t *testing.T) {
	tr := memory.New()
	for i := range 6 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i + 1})
	}
	store := &memStore{state: &memTx{rows: map[string]int{}, cps: map[string]subscription.Checkpoint{}}}
	p := projection.New(store)
	projection.On(p, func(_ context.Context, tx *memTx, env eventbus.Envelope, e OrderPlaced) error {
		if e.Total == 5 {
			return errors.New("five")
		}
		tx.rows[strconv.FormatInt(env.Sequence, 10)] += e.Total
		return nil
	})
	parked := subscription.ParkFunc(func(context.Context, string, transport.FeedEntry, error) error { return nil })
	sub, err := subscription.New(tr, "rows", projection.Checkpoints(store), subscription.PageSize(3), subscription.Wait(time.Second),
		subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(parked)))
	require.NoError(t, err)
	p.Attach(sub)
	run(t, sub, 6)
	store.mu.Lock()
	defer store.mu.Unlock()
	assert.Equal(t, map[string]int{"1": 1, "2": 2, "3": 3, "4": 4, "6": 6}, store.state.rows)
	assert.Equal(t, int64(6), store.state.cps["rows"].Sequence)
	// Load, page 1-3, page 4-6 (fails), 4, 5 (three tries), 6, and the
	// save past... none: 6 was written by the page handler.
	assert.Equal(t, 1+1+1+1+3+1, store.txs)
}

// A handler that panics fails its page, which rolls back; one entry at a
// time, the entry that panics is parked and the others are applied once.
func TestHandlerPanicRollsBackThePage(t *testing.T) {
	tr := memory.New()
	for i := range 4 {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i + 1})
	}
	db, cps := boltDB(t)
	p := projection.New(cps)
	orders(p)
	projection.On(p, func(_ context.Context, _ *bbolt.Tx, env eventbus.Envelope, _ OrderPlaced) error {
		if env.Sequence == 2 {
			panic("cannot apply 2")
		}
		return nil
	})
	sub, err := subscription.New(tr, "orders", cps, subscription.Wait(time.Second), subscription.Retry(noRetry),
		subscription.OnFailure(subscription.Park(cps)))
	require.NoError(t, err)
	p.Attach(sub)
	run(t, sub, 4)
	assert.Equal(t, map[string]int{"1": 1, "3": 1, "4": 1}, bucket(t, db, "applied"))
	parked, err := cps.ListParked(context.Background(), "orders")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Contains(t, parked[0].Error, "cannot apply 2")
}
