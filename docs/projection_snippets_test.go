package docs_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// docs/feeds.md: projections.

func feedsProjection(ctx context.Context, store transport.Feeder, db *bbolt.DB) error {
	type OrderPaid = feedOrderPaid
	cps, err := boltcheckpoint.New(db) // db: the read model's own bbolt file
	if err != nil {
		return err
	}
	p := projection.New(cps)
	projection.On(p, func(ctx context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPaid) error {
		paid, err := tx.CreateBucketIfNotExists([]byte("paid")) // the read model's own bucket
		if err != nil {
			return err
		}
		sum, _ := strconv.Atoi(string(paid.Get([]byte(env.AggregateID))))
		return paid.Put([]byte(env.AggregateID), []byte(strconv.Itoa(sum+e.Amount)))
	})
	sub, err := subscription.New(store, "paid-per-order", cps, subscription.Feed("order"))
	if err != nil {
		return err
	}
	p.Attach(sub) // the projection is the subscription's page handler
	return sub.Run(ctx)
}

func feedsProjectionGroup(ctx context.Context, store transport.Feeder, pool *pgxpool.Pool, member string) error {
	type OrderPaid = feedOrderPaid
	cps, err := pgcheckpoint.New(ctx, pool) // pool: a *pgxpool.Pool on the read model's database
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS paid (id text PRIMARY KEY, amount bigint NOT NULL)"); err != nil {
		return err
	}
	p := projection.New(cps)
	projection.On(p, func(ctx context.Context, tx pgx.Tx, env eventbus.Envelope, e OrderPaid) error {
		_, err := tx.Exec(ctx, "INSERT INTO paid (id, amount) VALUES ($1, $2) "+
			"ON CONFLICT (id) DO UPDATE SET amount = paid.amount + excluded.amount", env.AggregateID, e.Amount)
		return err
	})
	return group.Run(ctx, cps, "paid", member, 8, func(part transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
		fenced := cps.WithFence(fence)
		sub, err := subscription.New(store, "paid", fenced, subscription.Feed("order"), subscription.Partition(part.Count, part.Number))
		if err != nil {
			return nil, err
		}
		p.Using(fenced).Attach(sub)
		return sub, nil
	})
}

func feedsProjectionBatched(cps *pgcheckpoint.Store) *projection.Projection[*pgcheckpoint.Batch] {
	type OrderPaid = feedOrderPaid
	p := projection.New(cps.Batched())
	projection.On(p, func(ctx context.Context, tx *pgcheckpoint.Batch, env eventbus.Envelope, e OrderPaid) error {
		tx.Queue("INSERT INTO paid (id, amount) VALUES ($1, $2) "+
			"ON CONFLICT (id) DO UPDATE SET amount = paid.amount + excluded.amount", env.AggregateID, e.Amount)
		return nil
	})
	return p
}

func TestFeedsProjectionSnippet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := memory.New()
	id := uuid.NewString()
	for range 2 {
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))
	}
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil) // a fresh file: the snippet creates its bucket
	require.NoError(t, err)
	defer db.Close()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- feedsProjection(rctx, store, db) }()
	require.Eventually(t, func() bool {
		var v []byte
		_ = db.View(func(tx *bbolt.Tx) error {
			if b := tx.Bucket([]byte("paid")); b != nil {
				v = b.Get([]byte(id))
			}
			return nil
		})
		return string(v) == "14"
	}, 5*time.Second, time.Millisecond)
	stop()
	require.NoError(t, <-done)
}

// The PostgreSQL snippets run against a throwaway PostgreSQL (skipped
// without one, unless SOURCED_REQUIRE_POSTGRES=1).
func TestFeedsProjectionGroupSnippet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = uuid.NewString()
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: ids[i]}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))
	}
	sum := func() int {
		var n int
		_ = pool.QueryRow(ctx, "SELECT coalesce(sum(amount), 0) FROM paid").Scan(&n)
		return n
	}
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- feedsProjectionGroup(gctx, store, pool, "replica-1") }()
	require.Eventually(t, func() bool { return sum() > 0 }, 30*time.Second, 10*time.Millisecond) // its table exists
	go func() { done <- feedsProjectionGroup(gctx, store, pool, "replica-2") }()                 // joins, takes its share
	require.Eventually(t, func() bool {
		var n int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM sourced_subscriptions.members WHERE grp = 'paid'").Scan(&n)
		return n == 2
	}, 30*time.Second, 10*time.Millisecond)
	for range 20 {
		id := uuid.NewString()
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return sum() == 7*len(ids) }, 30*time.Second, 10*time.Millisecond)
	stop()
	require.NoError(t, <-done)
	require.NoError(t, <-done)

	// The batched projection, over the same table, on the same feed under
	// another name: every amount once more.
	cps, err := pgcheckpoint.New(ctx, pool)
	require.NoError(t, err)
	sub, err := subscription.New(store, "paid-batched", cps, subscription.Feed("order"))
	require.NoError(t, err)
	feedsProjectionBatched(cps).Attach(sub)
	go func() { done <- sub.Run(ctx) }()
	require.NoError(t, sub.Await(ctx, int64(len(ids))))
	require.NoError(t, sub.Close(ctx))
	require.NoError(t, <-done)
	require.Equal(t, 2*7*len(ids), sum())
}
