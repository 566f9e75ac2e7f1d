package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestRestoreIntoAnotherCluster: a schema restored into another cluster
// keeps the old cluster's transaction ids, far ahead of the new one's
// (simulated here by moving every stored id a billion ahead). Open numbers
// the batches the old cluster left without a number, after the others and
// in their order, and rebases the ids: stores after old batches succeed,
// new batches are numbered and reach a waiting reader, nothing is numbered
// twice, and the next Open finds nothing to do.
func TestRestoreIntoAnotherCluster(t *testing.T) {
	ctx := context.Background()
	tr := fresh(t)
	a := transport.Ref{Type: "order", ID: uuid.NewString()}
	b := transport.Ref{Type: "order", ID: uuid.NewString()}
	c := transport.Ref{Type: "payment", ID: uuid.NewString()}
	d := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, a, placed, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, b, placed, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, a, placed, transport.Exactly(1)))
	head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)
	require.Equal(t, int64(3), head)

	// The process stops numbering; three more batches stay without one.
	postgres.StopBackground(tr)
	require.NoError(t, tr.Store(ctx, c, placed, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, b, placed, transport.Exactly(1)))
	require.NoError(t, tr.Store(ctx, d, placed, transport.MustNotExist))
	require.NoError(t, tr.Close())

	admin, err := pgxpool.New(ctx, database(t))
	require.NoError(t, err)
	defer admin.Close()
	s := pgx.Identifier{tr.Schema()}.Sanitize()
	count := func(query string) int64 {
		var n int64
		require.NoError(t, admin.QueryRow(ctx, query).Scan(&n))
		return n
	}
	require.Equal(t, int64(3), count(`SELECT count(*) FROM `+s+`.feed`))
	// The restore: every stored id a billion ahead of this cluster's.
	for _, q := range []string{
		`UPDATE ` + s + `.batches SET tx = (tx::text::bigint + 1000000000)::text::xid8`,
		`UPDATE ` + s + `.feed SET tx = (tx::text::bigint + 1000000000)::text::xid8`,
		`UPDATE ` + s + `.feed_counter SET scan_from = (scan_from::text::bigint + 1000000000)::text::xid8`,
	} {
		_, err := admin.Exec(ctx, q)
		require.NoError(t, err)
	}

	core, logs := observer.New(zapcore.WarnLevel)
	restored, err := postgres.Open(ctx, database(t), postgres.WithSchema(tr.Schema()),
		postgres.WithSequencerInterval(20*time.Millisecond), postgres.WithLogger(zap.New(core)))
	require.NoError(t, err)
	defer restored.Close()
	warned := logs.FilterMessageSnippet("restored from another cluster").All()
	if assert.Len(t, warned, 1) {
		assert.Equal(t, int64(3), warned[0].ContextMap()["batches_numbered"])
		assert.Equal(t, int64(6), warned[0].ContextMap()["batches_rebased"])
	}

	p, err := restored.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	type entry struct {
		seq     int64
		id      string
		version int64
	}
	var got []entry
	for _, e := range p.Entries {
		got = append(got, entry{e.Sequence, e.AggregateID, e.Version})
	}
	assert.Equal(t, []entry{{1, a.ID, 1}, {2, b.ID, 1}, {3, a.ID, 2}, {4, c.ID, 1}, {5, b.ID, 2}, {6, d.ID, 1}}, got,
		"the unnumbered batches after the others, in their order")

	// A reader waits for the next batch; a store after a batch of the old
	// cluster succeeds and reaches it.
	read := make(chan struct{}, 1)
	postgres.SetAfterRead(restored, func() {
		select {
		case read <- struct{}{}:
		default:
		}
	})
	waited := make(chan transport.FeedPage, 1)
	go func() {
		p, err := restored.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 6, Wait: transport.MaxFeedWait})
		assert.NoError(t, err)
		waited <- p
	}()
	<-read
	require.NoError(t, restored.Store(ctx, a, placed, transport.Exactly(2)))
	p = <-waited
	require.Len(t, p.Entries, 1)
	assert.Equal(t, int64(7), p.Entries[0].Sequence)
	assert.Equal(t, a.ID, p.Entries[0].AggregateID)
	assert.Equal(t, int64(3), p.Entries[0].Version)
	require.NoError(t, restored.Store(ctx, b, placed, transport.Any))
	head, err = restored.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)
	assert.Equal(t, int64(8), head)
	assert.Equal(t, int64(8), count(`SELECT count(DISTINCT batch_id) FROM `+s+`.feed`), "nothing numbered twice")
	assert.Equal(t, int64(8), count(`SELECT count(*) FROM `+s+`.feed`))
	assert.Equal(t, int64(8), count(`SELECT sum(batches) FROM `+s+`.feed_stats`))

	// The next Open finds nothing to repair.
	core, logs = observer.New(zapcore.WarnLevel)
	again, err := postgres.Open(ctx, database(t), postgres.WithSchema(tr.Schema()), postgres.WithLogger(zap.New(core)))
	require.NoError(t, err)
	require.NoError(t, again.Close())
	assert.Zero(t, logs.Len())
	assert.Equal(t, int64(8), count(`SELECT count(*) FROM `+s+`.feed`))
}
