package pgcheckpoint_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

var (
	cluster  *pgtest.Cluster
	startErr error
	dbURL    string
	schemas  atomic.Int64
)

func TestMain(m *testing.M) {
	if runCrashChild() {
		return
	}
	ctx := context.Background()
	cluster, startErr = pgtest.Start(ctx)
	if startErr == nil {
		dbURL, startErr = cluster.NewDatabase(ctx)
	}
	code := m.Run()
	if code == 0 {
		// Every listener and subscription goroutine has ended (checked
		// while the server runs: its end would end a leaked listener).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	cluster.Stop()
	os.Exit(code)
}

func pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pgtest.Need(t, cluster, startErr)
	p, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// fresh returns a store on a schema of its own.
func fresh(t testing.TB, opts ...pgcheckpoint.Option) (*pgcheckpoint.Store, *pgxpool.Pool) {
	t.Helper()
	p := pool(t)
	schema := fmt.Sprintf("cp%d_%d", os.Getpid(), schemas.Add(1))
	s, err := pgcheckpoint.New(context.Background(), p, append([]pgcheckpoint.Option{pgcheckpoint.WithSchema(schema)}, opts...)...)
	require.NoError(t, err)
	return s, p
}

func entry(seq int64) transport.FeedEntry {
	return transport.FeedEntry{Sequence: seq, AggregateType: "order", AggregateID: uuid.NewString(), Version: 1,
		Events: []transport.Event{{EventID: uuid.NewString(), EventType: "OrderPlaced", Data: []byte(`{"a": 1}`), EncryptedData: "\xff\xfe raw"}}}
}

func TestCheckpoints(t *testing.T) {
	ctx := context.Background()
	s, _ := fresh(t)
	_, ok, err := s.Load(ctx, "list")
	require.NoError(t, err)
	assert.False(t, ok)

	require.NoError(t, s.Save(ctx, "list", 7))
	seq, ok, err := s.Load(ctx, "list")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(7), seq)
	require.NoError(t, s.Save(ctx, "list", 3))
	seq, _, _ = s.Load(ctx, "list")
	assert.Equal(t, int64(7), seq, "never moves back")

	// Apply records the entry the checkpoint stands on.
	e := entry(9)
	require.NoError(t, s.Apply("list", func(context.Context, pgx.Tx, transport.FeedEntry) error { return nil })(ctx, e))
	pos, ok, err := s.LoadCheckpoint(ctx, "list")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, subscription.Checkpoint{Sequence: 9, EventID: e.Events[0].EventID}, pos)
	require.NoError(t, s.Save(ctx, "list", 9)) // the subscription's page-end save keeps the id
	pos, _, _ = s.LoadCheckpoint(ctx, "list")
	assert.Equal(t, e.Events[0].EventID, pos.EventID)
	require.NoError(t, s.SaveCheckpoint(ctx, "list", subscription.Checkpoint{Sequence: 8, EventID: "x"}))
	pos, _, _ = s.LoadCheckpoint(ctx, "list")
	assert.Equal(t, subscription.Checkpoint{Sequence: 9, EventID: e.Events[0].EventID}, pos, "never moves back")
	require.NoError(t, s.SaveCheckpoint(ctx, "list", subscription.Checkpoint{Sequence: 10, EventID: "y"}))
	pos, _, _ = s.LoadCheckpoint(ctx, "list")
	assert.Equal(t, subscription.Checkpoint{Sequence: 10, EventID: "y"}, pos)

	require.NoError(t, s.Reset(ctx, "list"))
	_, ok, err = s.Load(ctx, "list")
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestApplyExactlyOnce(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY)")
	require.NoError(t, err)
	boom := errors.New("boom")
	fail := true
	apply := s.Apply("model", func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.Schema()+".model (seq) VALUES ($1)", e.Sequence); err != nil {
			return err
		}
		if fail && e.Sequence == 2 {
			return boom // after the write: it must roll back with the checkpoint
		}
		return nil
	})
	require.NoError(t, apply(ctx, entry(1)))
	require.ErrorIs(t, apply(ctx, entry(2)), boom)
	seq, _, _ := s.Load(ctx, "model")
	assert.Equal(t, int64(1), seq)
	fail = false
	require.NoError(t, apply(ctx, entry(2)))
	require.NoError(t, apply(ctx, entry(1)), "a redelivered entry is skipped")
	require.NoError(t, apply(ctx, entry(2)))
	var n int
	require.NoError(t, p.QueryRow(ctx, "SELECT count(*) FROM "+s.Schema()+".model").Scan(&n))
	assert.Equal(t, 2, n)
}

func TestSchemaNewerThanCodeRefused(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "INSERT INTO "+s.Schema()+".schema_migrations (version) VALUES (999)")
	require.NoError(t, err)
	_, err = pgcheckpoint.New(ctx, p, pgcheckpoint.WithSchema(s.Schema()))
	require.ErrorIs(t, err, pgcheckpoint.ErrSchemaNewer)
	assert.Contains(t, err.Error(), "version 999")

	_, err = pgcheckpoint.New(ctx, p, pgcheckpoint.WithSchema("Bad-Name"))
	require.ErrorIs(t, err, pgcheckpoint.ErrConfig)
	_, err = pgcheckpoint.New(ctx, nil)
	require.ErrorIs(t, err, pgcheckpoint.ErrConfig)
}

func TestParked(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY)")
	require.NoError(t, err)
	e1, e2 := entry(4), entry(5)
	require.NoError(t, s.Park(ctx, "list", e1, errors.New("bad total")))
	require.NoError(t, s.Park(ctx, "list", e2, errors.New("worse")))
	list, err := s.ListParked(ctx, "list")
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "bad total", list[0].Error)
	assert.Equal(t, e1.Events, list[0].Entry.Events, "bytes as stored, non-UTF-8 encrypted data included")
	assert.Equal(t, e1.AggregateID, list[0].Entry.AggregateID)
	assert.False(t, list[0].Parked.IsZero())

	boom := errors.New("still bad")
	err = s.Retry(ctx, "list", 4, func(context.Context, pgx.Tx, transport.FeedEntry) error { return boom })
	require.ErrorIs(t, err, boom)
	list, _ = s.ListParked(ctx, "list")
	assert.Len(t, list, 2, "a failed retry stays parked")
	require.NoError(t, s.Retry(ctx, "list", 4, func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+s.Schema()+".model (seq) VALUES ($1)", e.Sequence)
		return err
	}))
	require.NoError(t, s.Discard(ctx, "list", 5))
	list, _ = s.ListParked(ctx, "list")
	assert.Empty(t, list)
	require.ErrorIs(t, s.Discard(ctx, "list", 5), pgcheckpoint.ErrNotParked)
	require.ErrorIs(t, s.Retry(ctx, "list", 4, nil), pgcheckpoint.ErrNotParked)
	var n int
	require.NoError(t, p.QueryRow(ctx, "SELECT count(*) FROM "+s.Schema()+".model").Scan(&n))
	assert.Equal(t, 1, n)
}
