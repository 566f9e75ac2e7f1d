package docs_test

// docs/feeds.md: the stale-checkpoint check, reset and replay, blue/green,
// lag and metrics. Each Go block of those sections stands here line for
// line (TestDocBlocksCompile), and the tests below run them.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// orderList is the read model of these snippets: the last event type of
// each order, in a bucket of the read model's bbolt file.
func orderList(bucket string) func(ctx context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
	return func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(e.AggregateID), []byte(e.Events[len(e.Events)-1].EventType))
	}
}

func replayStale(ctx context.Context, store transport.Feeder, db *bbolt.DB, cps *boltcheckpoint.Store) error {
	sub, err := subscription.New(store, "order-list", cps, subscription.Feed("order"),
		subscription.OnStale(subscription.Rebuild(func(ctx context.Context) error {
			return db.Update(func(tx *bbolt.Tx) error { // empty the read model; the feed refills it
				if tx.Bucket([]byte("orders")) == nil {
					return nil
				}
				return tx.DeleteBucket([]byte("orders"))
			})
		})))
	if err != nil {
		return err
	}
	sub.OnEntry(cps.Apply(sub.Name(), orderList("orders")))
	return sub.Run(ctx)
}

func replayStaleError(ctx context.Context, sub *subscription.Subscription) error {
	err := sub.Run(ctx)
	if errors.Is(err, subscription.ErrStaleCheckpoint) {
		// The feed no longer holds the entry the checkpoint stands on (the
		// message names the subscription, the checkpoint and the head): empty
		// the read model and Reset the checkpoint, or use Rebuild.
		return fmt.Errorf("the order list needs a rebuild: %w", err)
	}
	return err
}

func replayReset(ctx context.Context, cps subscription.Checkpoints) error {
	// The subscription is stopped, and its read model emptied (or its
	// handlers idempotent): replay the whole feed.
	if err := subscription.Reset(ctx, cps, "order-list", 0); err != nil {
		return err
	}
	// Every partition of a group of 8, from sequence number 1200 on.
	return subscription.ResetGroup(ctx, cps, "order-totals", 8, 1200)
}

func replayBlueGreen(ctx context.Context, store transport.Feeder, db *bbolt.DB, cps *boltcheckpoint.Store,
	v1 *subscription.Subscription, v1Done <-chan error, reads *atomic.Value) (*subscription.Subscription, <-chan error, error) {
	// 1. v2 beside v1: a new name (its own checkpoint) and its own bucket.
	v2, err := subscription.New(store, "order-list-v2", cps, subscription.Feed("order"))
	if err != nil {
		return nil, nil, err
	}
	v2.OnEntry(cps.Apply(v2.Name(), orderList("orders-v2")))
	v2Done := make(chan error, 1)
	go func() { v2Done <- v2.Run(ctx) }()

	// 2. Wait until v2 has caught up with the feed as it stands now.
	head, err := store.FeedHead(ctx, transport.Scope{Type: "order"})
	if err != nil {
		return nil, nil, err
	}
	if err := v2.Await(ctx, head); err != nil {
		return nil, nil, err
	}

	// 3. Take over: reads go to v2's bucket, then v1 stops.
	reads.Store("orders-v2")
	if err := v1.Close(ctx); err != nil {
		return nil, nil, err
	}
	if err := <-v1Done; err != nil {
		return nil, nil, err
	}

	// 4. Drop v1: its bucket and its checkpoint.
	err = db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte("orders-v1")) })
	if err != nil {
		return nil, nil, err
	}
	return v2, v2Done, cps.Reset(ctx, "order-list-v1")
}

func replayMetrics(store transport.Feeder, cps *boltcheckpoint.Store, reg prometheus.Registerer) (*subscription.Subscription, error) {
	// reg: prometheus.DefaultRegisterer, or the registry your /metrics serves
	sub, err := subscription.New(store, "order-list", cps, subscription.Feed("order"), subscription.Metrics(reg))
	if err != nil {
		return nil, err
	}
	sub.OnEntry(cps.Apply(sub.Name(), orderList("orders")))
	return sub, nil
}

func replayGroupMetrics(ctx context.Context, coord group.Coordinator, member string, newSub group.NewSubscription, reg prometheus.Registerer) error {
	return group.Run(ctx, coord, "order-list", member, 8, newSub, group.Metrics(reg))
}

func openView(t *testing.T) (*bbolt.DB, *boltcheckpoint.Store) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, &bbolt.Options{NoSync: true}) // a test: no fsync
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)
	return db, cps
}

func storeOrders(t *testing.T, store transport.Transport, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		require.NoError(t, store.Store(context.Background(), transport.Ref{Type: "order", ID: ids[i]},
			[]transport.Event{{EventType: "OrderPlaced", Data: []byte(`{}`)}}, transport.Any))
	}
	return ids
}

// bucket returns a bucket's keys and values, nil when it does not exist.
func bucket(t *testing.T, db *bbolt.DB, name string) map[string]string {
	t.Helper()
	var out map[string]string
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return nil
		}
		out = map[string]string{}
		return b.ForEach(func(k, v []byte) error { out[string(k)] = string(v); return nil })
	}))
	return out
}

func TestReplayStaleSnippet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, cps := openView(t)
	run := func(store *memory.Transport) {
		head, err := store.FeedHead(ctx, transport.Scope{Type: "order"})
		require.NoError(t, err)
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- replayStale(rctx, store, db, cps) }()
		require.Eventually(t, func() bool { seq, _, _ := cps.Load(ctx, "order-list"); return seq == head }, 5*time.Second, time.Millisecond)
		stop()
		require.NoError(t, <-done)
	}
	old := memory.New()
	storeOrders(t, old, 5)
	run(old)
	require.Len(t, bucket(t, db, "orders"), 5)
	restarted := memory.New() // a server restarted on memory, at the same address
	ids := storeOrders(t, restarted, 2)
	run(restarted)
	got := bucket(t, db, "orders")
	require.Len(t, got, 2, "rebuilt, not stale")
	for _, id := range ids {
		assert.Contains(t, got, id)
	}

	// Without Rebuild: the error.
	sub, err := subscription.New(memory.New(), "order-list", cps, subscription.Feed("order"))
	require.NoError(t, err)
	sub.OnEntry(cps.Apply(sub.Name(), orderList("orders")))
	err = replayStaleError(ctx, sub)
	require.ErrorIs(t, err, subscription.ErrStaleCheckpoint)
	assert.Contains(t, err.Error(), "head 0")
}

func TestReplayResetSnippet(t *testing.T) {
	ctx := context.Background()
	_, cps := openView(t)
	require.NoError(t, cps.Save(ctx, "order-list", 40))
	require.NoError(t, replayReset(ctx, cps))
	seq, ok, err := cps.Load(ctx, "order-list")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(0), seq)
	seq, _, err = cps.Load(ctx, "order-totals#7/8")
	require.NoError(t, err)
	assert.Equal(t, int64(1200), seq)
}

// TestBlueGreen runs the blue/green recipe while orders are being
// written: v2 catches up beside v1, takes over, and v1 is dropped; v2 then
// equals a read model rebuilt from scratch, and goes on following.
func TestBlueGreen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := memory.New()
	ids := storeOrders(t, store, 200)
	db, cps := openView(t)
	var reads atomic.Value
	reads.Store("orders-v1")

	v1, err := subscription.New(store, "order-list-v1", cps, subscription.Feed("order"))
	require.NoError(t, err)
	v1.OnEntry(cps.Apply(v1.Name(), orderList("orders-v1")))
	v1Done := make(chan error, 1)
	go func() { v1Done <- v1.Run(ctx) }()
	require.NoError(t, v1.Await(ctx, 200))

	// Writers go on during the switch.
	var mu sync.Mutex
	stopWriting := make(chan struct{})
	written := make(chan struct{})
	go func() {
		defer close(written)
		for range 1000 {
			select {
			case <-stopWriting:
				return
			default:
			}
			id := uuid.NewString()
			if err := store.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{}`)}}, transport.Any); err != nil {
				return
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
	}()

	v2, v2Done, err := replayBlueGreen(ctx, store, db, cps, v1, v1Done, &reads)
	require.NoError(t, err)
	assert.Equal(t, "orders-v2", reads.Load())
	assert.Nil(t, bucket(t, db, "orders-v1"), "v1's bucket dropped")
	_, ok, err := cps.Load(ctx, "order-list-v1")
	require.NoError(t, err)
	assert.False(t, ok, "v1's checkpoint dropped")

	close(stopWriting)
	<-written
	more := storeOrders(t, store, 10) // v2 goes on following
	head, err := store.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	require.NoError(t, v2.Await(ctx, head))
	require.NoError(t, v2.Close(ctx))
	require.NoError(t, <-v2Done)

	mu.Lock()
	all := append(append([]string(nil), ids...), more...)
	mu.Unlock()
	got := bucket(t, db, "orders-v2")
	assert.Len(t, got, len(all), "one row per order, none missing")
	for _, id := range all {
		assert.Equal(t, "OrderPlaced", got[id])
	}
	// The same as a rebuild from scratch.
	rdb, rcps := openView(t)
	r, err := subscription.New(store, "rebuild", rcps, subscription.Feed("order"))
	require.NoError(t, err)
	r.OnEntry(rcps.Apply(r.Name(), orderList("orders-v2")))
	rDone := make(chan error, 1)
	go func() { rDone <- r.Run(ctx) }()
	require.NoError(t, r.Await(ctx, head))
	require.NoError(t, r.Close(ctx))
	require.NoError(t, <-rDone)
	assert.Equal(t, bucket(t, rdb, "orders-v2"), got)
}

func TestReplayMetricsSnippet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := memory.New()
	storeOrders(t, store, 3)
	_, cps := openView(t)
	reg := prometheus.NewRegistry()
	sub, err := replayMetrics(store, cps, reg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	require.NoError(t, sub.Await(ctx, 3))
	require.Eventually(t, func() bool { return count(reg, "sourced_subscription_head") == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, sub.Close(ctx))
	require.NoError(t, <-done)

	gctx, stop := context.WithCancel(ctx)
	gdone := make(chan error, 1)
	newSub := func(p transport.Partition, _ group.Fence) (*subscription.Subscription, error) {
		s, err := subscription.New(store, "order-list", subscription.NewMemoryCheckpoints(), subscription.Partition(p.Count, p.Number))
		if err != nil {
			return nil, err
		}
		s.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
		return s, nil
	}
	go func() {
		gdone <- replayGroupMetrics(gctx, group.NewMemory(time.Now), "replica-1", newSub, reg)
	}()
	require.Eventually(t, func() bool { return count(reg, "sourced_group_partition_lag") == 8 }, 5*time.Second, time.Millisecond)
	stop()
	require.NoError(t, <-gdone)
}

// count counts the series of a metric that reg gathers (-1 when
// gathering fails).
func count(reg *prometheus.Registry, name string) int {
	n, err := testutil.GatherAndCount(reg, name)
	if err != nil {
		return -1
	}
	return n
}
