package postgres_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestAnOlderReleaseStoreFailsAfterMigration4 (issue 23): a process of
// the release before migration 4 still running after another process
// migrated the schema (a rolling upgrade) stores with its own statement,
// which writes no pending row. Its batch must not be stored and
// acknowledged without ever reaching the feed: the store fails instead.
// The statement is the schema-3 release's storeNew, word for word.
func TestAnOlderReleaseStoreFailsAfterMigration4(t *testing.T) {
	url, pool, schema := olderSchema(t, "old", 3)
	ctx := context.Background()
	s := pgx.Identifier{schema}.Sanitize() + "."
	oldStoreNew := `INSERT INTO ` + s + `batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload) VALUES ($1, $2, $3, 1, $5, $4, $6, $7, $8)`
	store := func(id string) error {
		_, err := pool.Exec(ctx, oldStoreNew, "", "order", id, 1, "2026-12-02T00:00:00Z", []string{"OrderPlaced"}, 0, []byte{1})
		return err
	}
	require.NoError(t, store(uuid.NewString()), "the old release stores at version 3")

	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema)) // migrates to 4
	require.NoError(t, err)
	defer tr.Close()

	late := uuid.NewString()
	err = store(late)
	if err == nil {
		// Stored and acknowledged: then it must reach the feed.
		p, rerr := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
		require.NoError(t, rerr)
		ids := []string{}
		for _, e := range p.Entries {
			ids = append(ids, e.AggregateID)
		}
		require.Contains(t, ids, late, "an older release's store after migration 4 was acknowledged but never numbered")
	}
}

// TestAnOlderReleaseStoreFailsAfterMigration5 (issue 23): a process of the
// release before migration 5, still running after another process
// migrated the schema, stores with its own statement, which also writes a
// pending row: it fails (pending is gone) rather than leave a row no one
// reads. The statement is the schema-4 release's storeNew, word for word.
func TestAnOlderReleaseStoreFailsAfterMigration5(t *testing.T) {
	url, pool, schema := olderSchema(t, "old", 4)
	ctx := context.Background()
	s := pgx.Identifier{schema}.Sanitize() + "."
	oldStoreNew := `WITH b AS (INSERT INTO ` + s + `batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx) VALUES ($1, $2, $3, 1, $5, $4, $6, $7, $8, pg_current_xact_id())
			RETURNING tx, id) INSERT INTO ` + s + `pending (tx, id) SELECT tx, id FROM b`
	store := func(id string) error {
		_, err := pool.Exec(ctx, oldStoreNew, "", "order", id, 1, "2026-12-02T00:00:00Z", []string{"OrderPlaced"}, 0, []byte{1})
		return err
	}
	first := uuid.NewString()
	require.NoError(t, store(first), "the old release stores at version 4")

	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema)) // migrates to 5
	require.NoError(t, err)
	defer tr.Close()
	require.Error(t, store(uuid.NewString()), "a version 4 store after migration 5")

	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 1, "the batch the old release stored before the migration is numbered")
	require.Equal(t, first, p.Entries[0].AggregateID)
}
