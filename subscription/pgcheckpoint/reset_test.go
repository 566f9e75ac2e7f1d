package pgcheckpoint_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func TestResetTo(t *testing.T) {
	ctx := context.Background()
	s, _ := fresh(t)
	e := entry(9)
	require.NoError(t, s.Apply("list", func(context.Context, pgx.Tx, transport.FeedEntry) error { return nil })(ctx, e))
	require.NoError(t, subscription.Reset(ctx, s, "list", 4))
	c, ok, err := s.LoadCheckpoint(ctx, "list")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, subscription.Checkpoint{Sequence: 4}, c, "moved back, the entry forgotten")
	require.NoError(t, subscription.Reset(ctx, s, "fresh", 0))
	c, ok, err = s.LoadCheckpoint(ctx, "fresh")
	require.NoError(t, err)
	assert.True(t, ok, "a reset to the start is a checkpoint at 0 (not none: FromHead would skip)")
	assert.Equal(t, subscription.Checkpoint{}, c)
	require.ErrorIs(t, subscription.Reset(ctx, s, "list", -1), subscription.ErrReset)

	// A live lease on a partition of the group refuses the reset of the
	// group, and changes nothing.
	for i := range 3 {
		require.NoError(t, s.Save(ctx, subscription.PartitionName("list", 3, i), 7))
	}
	m, err := s.Join(ctx, "list", "a", 3)
	require.NoError(t, err)
	st, err := m.Sync(ctx)
	require.NoError(t, err)
	require.Len(t, st.Held, 3)
	err = subscription.ResetGroup(ctx, s, "list", 3, 0)
	require.ErrorIs(t, err, subscription.ErrNameInUse)
	assert.Contains(t, err.Error(), `member "a"`)
	for i := range 3 {
		seq, _, err := s.Load(ctx, subscription.PartitionName("list", 3, i))
		require.NoError(t, err)
		assert.Equal(t, int64(7), seq)
	}
	require.NoError(t, m.Release(ctx, 0, 1, 2))
	require.NoError(t, subscription.ResetGroup(ctx, s, "list", 3, 0))
	for i := range 3 {
		seq, _, err := s.Load(ctx, subscription.PartitionName("list", 3, i))
		require.NoError(t, err)
		assert.Equal(t, int64(0), seq)
	}
	require.NoError(t, m.Close(ctx))
}

// TestStaleCheckpointRebuildsAGroup: a consumer group whose read model in
// PostgreSQL was built from another store stops with ErrStaleCheckpoint,
// or, with Rebuild, each partition clears its rows and rebuilds while it
// holds its lease.
func TestStaleCheckpointRebuildsAGroup(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".rows (id text PRIMARY KEY, part int NOT NULL)")
	require.NoError(t, err)
	store := func(tr *memory.Transport, n int) {
		for i := range n {
			id := uuid.NewString()
			for transport.PartitionOf(id, 2) != i%2 { // both partitions hold entries
				id = uuid.NewString()
			}
			data, _ := json.Marshal(map[string]int{"a": 1})
			require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any))
		}
	}
	count := func() (n int) {
		require.NoError(t, p.QueryRow(ctx, "SELECT count(*) FROM "+s.Schema()+".rows").Scan(&n))
		return n
	}
	const parts = 2
	run := func(tr *memory.Transport, rebuild bool) error {
		head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
		require.NoError(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		subs := make(chan *subscription.Subscription, parts)
		res := make(chan error, 1)
		go func() {
			res <- group.Run(runCtx, s, "rows", "m", parts, func(pt transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
				cps := s.WithFence(fence)
				opts := []subscription.Option{subscription.Partition(pt.Count, pt.Number), subscription.Wait(10 * time.Millisecond)}
				if rebuild {
					opts = append(opts, subscription.OnStale(subscription.Rebuild(func(ctx context.Context) error {
						return pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
							if err := cps.CheckFence(ctx, tx); err != nil {
								return err
							}
							_, err := tx.Exec(ctx, "DELETE FROM "+s.Schema()+".rows WHERE part = $1", pt.Number)
							return err
						})
					})))
				}
				sub, err := subscription.New(tr, "rows", cps, opts...)
				if err != nil {
					return nil, err
				}
				sub.OnEntry(cps.Apply(sub.Name(), func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+s.Schema()+".rows (id, part) VALUES ($1, $2)", e.AggregateID, pt.Number)
					return err
				}))
				subs <- sub
				return sub, nil
			}, group.Every(50*time.Millisecond))
		}()
		for range parts {
			var sub *subscription.Subscription
			select {
			case sub = <-subs:
			case err := <-res:
				return err
			}
			if err := sub.Await(ctx, head); err != nil {
				cancel()
				return <-res
			}
		}
		cancel()
		return <-res
	}
	old := memory.New()
	store(old, 8)
	require.NoError(t, run(old, false))
	require.Equal(t, 8, count())

	tr := memory.New()
	store(tr, 5)
	err = run(tr, false)
	require.ErrorIs(t, err, subscription.ErrStaleCheckpoint)
	assert.Equal(t, 8, count(), "nothing applied")
	require.NoError(t, run(tr, true))
	assert.Equal(t, 5, count(), "every partition rebuilt from the new feed")
}

func TestCheckFence(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	m, err := s.Join(ctx, "g", "a", 1)
	require.NoError(t, err)
	st, err := m.Sync(ctx)
	require.NoError(t, err)
	require.Len(t, st.Held, 1)
	fence := st.Held[0]
	check := func(f group.Fence) error {
		return pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error { return s.WithFence(f).CheckFence(ctx, tx) })
	}
	require.NoError(t, check(fence))
	require.NoError(t, check(group.Fence{}), "the zero fence checks nothing")
	require.NoError(t, m.Close(ctx)) // leaves: b claims the partition again
	m2, err := s.Join(ctx, "g", "b", 1)
	require.NoError(t, err)
	st, err = m2.Sync(ctx)
	require.NoError(t, err)
	require.Len(t, st.Held, 1)
	require.ErrorIs(t, check(fence), group.ErrFenced, "a new generation fences the old claim")
	require.NoError(t, m2.Close(ctx))
}
