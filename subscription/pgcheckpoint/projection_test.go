package pgcheckpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

type OrderPlaced struct {
	Total int `json:"total"`
}

// placedModel is a projection into the table <schema>.model: one row per
// entry, inserted without ON CONFLICT, so applying an entry twice fails.
func placedModel(t *testing.T, s *pgcheckpoint.Store) (*projection.Projection[pgx.Tx], *int) {
	t.Helper()
	_, err := pool(t).Exec(context.Background(), "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY, id text NOT NULL, total int NOT NULL)")
	require.NoError(t, err)
	ran := 0
	p := projection.New(s)
	projection.On(p, func(ctx context.Context, tx pgx.Tx, env eventbus.Envelope, e OrderPlaced) error {
		ran++
		_, err := tx.Exec(ctx, "INSERT INTO "+s.Schema()+".model (seq, id, total) VALUES ($1, $2, $3)", env.Sequence, env.AggregateID, e.Total)
		return err
	})
	return p, &ran
}

func placed(t *testing.T, n int) *memory.Transport {
	t.Helper()
	tr := memory.New()
	for i := range n {
		data := []byte(`{"total":` + string(rune('1'+i)) + `}`)
		require.NoError(t, tr.Store(context.Background(), transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any))
	}
	return tr
}

func modelRows(t *testing.T, s *pgcheckpoint.Store) map[int64]int {
	t.Helper()
	rows, err := pool(t).Query(context.Background(), "SELECT seq, total FROM "+s.Schema()+".model")
	require.NoError(t, err)
	out := map[int64]int{}
	for rows.Next() {
		var seq int64
		var total int
		require.NoError(t, rows.Scan(&seq, &total))
		out[seq] = total
	}
	require.NoError(t, rows.Err())
	return out
}

func noRetry() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) }

func runTo(t *testing.T, sub *subscription.Subscription, seq int64) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sub.Run(context.Background()) }()
	require.NoError(t, sub.Await(context.Background(), seq))
	require.NoError(t, sub.Close(context.Background()))
	require.NoError(t, <-done)
}

// Typed handlers write the read model in PostgreSQL with the checkpoint,
// one transaction per page; the checkpoint records its entry's event id;
// a redelivery (the subscription's own position lost) changes nothing.
func TestProjection(t *testing.T) {
	ctx := context.Background()
	s, _ := fresh(t)
	p, ran := placedModel(t, s)
	tr := placed(t, 5)
	for round := range 2 {
		cps := subscription.Checkpoints(s)
		if round == 1 {
			cps = subscription.NewMemoryCheckpoints() // starts from 0 again
		}
		sub, err := subscription.New(tr, "model", cps, subscription.PageSize(2), subscription.Wait(time.Second))
		require.NoError(t, err)
		p.Attach(sub)
		runTo(t, sub, 5)
		assert.Equal(t, map[int64]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, modelRows(t, s), "round %d", round)
		assert.Equal(t, 5, *ran, "round %d: each entry applied once", round)
	}
	page, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 4})
	require.NoError(t, err)
	pos, ok, err := s.LoadCheckpoint(ctx, "model")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, subscription.Checkpoint{Sequence: 5, EventID: page.Entries[0].Events[0].EventID}, pos)
}

// A member fenced out of its partition has its whole page refused: the
// handlers do not run, no row and no checkpoint is written, and its
// subscription stops with group.ErrFenced.
func TestProjectionFenced(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	model, ran := placedModel(t, s)
	tr := placed(t, 4)
	a, err := s.Join(ctx, "g", "a", 1)
	require.NoError(t, err)
	defer a.Close(ctx)
	fa := syncNow(t, a).Held[0]
	cpa := s.WithFence(fa)

	newSub := func() *subscription.Subscription {
		sub, err := subscription.New(tr, "model", cpa, subscription.PageSize(2),
			subscription.Wait(time.Second), subscription.Retry(noRetry))
		require.NoError(t, err)
		model.Using(cpa).Attach(sub)
		return sub
	}
	sub := newSub()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	require.NoError(t, sub.Await(ctx, 4))
	require.NoError(t, sub.Close(ctx))
	require.NoError(t, <-done)
	assert.Len(t, modelRows(t, s), 4)

	// a pauses past its lease; b claims the partition; more is stored.
	b, err := s.Join(ctx, "g", "b", 1)
	require.NoError(t, err)
	defer b.Close(ctx)
	expire(t, s, p, "g", "a")
	syncNow(t, b)
	for range 3 {
		require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"total":9}`)}}, transport.Any))
	}
	*ran = 0
	runCtx, cancel := context.WithTimeout(ctx, 10*time.Second) // ends Run if it were not fenced
	defer cancel()
	err = newSub().Run(runCtx)
	require.ErrorIs(t, err, group.ErrFenced)
	assert.Zero(t, *ran, "no handler runs in a fenced transaction")
	assert.Len(t, modelRows(t, s), 4, "nothing of the page commits")
	seq, _, err := s.Load(ctx, "model")
	require.NoError(t, err)
	assert.Equal(t, int64(4), seq)

	page, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 4})
	require.NoError(t, err)
	require.ErrorIs(t, model.Using(cpa).Apply(ctx, "model", page.Entries), group.ErrFenced)
	assert.Len(t, modelRows(t, s), 4)
}

// Batched: handlers queue their statements, sent at the end of the page's
// transaction. A queued statement that fails (here a CHECK) rolls the
// page back; one entry at a time, the others are applied once each and
// the bad one is parked; the checkpoint, queued too, commits with them.
func TestProjectionBatched(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY, total int NOT NULL CHECK (total < 3))")
	require.NoError(t, err)
	tr := placed(t, 5) // totals 1 to 5
	pr := projection.New(s.Batched())
	projection.On(pr, func(_ context.Context, tx *pgcheckpoint.Batch, env eventbus.Envelope, e OrderPlaced) error {
		tx.Queue("INSERT INTO "+s.Schema()+".model (seq, total) VALUES ($1, $2)", env.Sequence, e.Total%4)
		return nil
	})
	sub, err := subscription.New(tr, "model", s, subscription.Wait(time.Second), subscription.Retry(noRetry),
		subscription.OnFailure(subscription.Park(s)))
	require.NoError(t, err)
	pr.Attach(sub)
	runTo(t, sub, 5)
	assert.Equal(t, map[int64]int{1: 1, 2: 2, 4: 0, 5: 1}, modelRows(t, s))
	parked, err := s.ListParked(ctx, "model")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, int64(3), parked[0].Entry.Sequence)
	page, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 4})
	require.NoError(t, err)
	pos, _, err := s.LoadCheckpoint(ctx, "model")
	require.NoError(t, err)
	assert.Equal(t, subscription.Checkpoint{Sequence: 5, EventID: page.Entries[0].Events[0].EventID}, pos)
}
