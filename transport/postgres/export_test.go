package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// SetBeforeCommit makes every store call f just before COMMIT (tests only).
func SetBeforeCommit(t *Transport, f func(ctx context.Context, tx pgx.Tx)) { t.beforeCommit = f }

// SetBeforeBatch makes a store of several batches call f before it writes
// batch i (tests only).
func SetBeforeBatch(t *Transport, f func(i int)) { t.beforeBatch = f }

// StopBackground stops the sequencer and the listener but keeps the pool,
// as if the process had stopped right after its stores (tests only).
func StopBackground(t *Transport) {
	t.stop()
	t.wg.Wait()
}

// MigrateTo creates schema on pool with the migrations up to version upTo
// only, as an older release of this package left it (tests only).
func MigrateTo(ctx context.Context, pool *pgxpool.Pool, schema string, upTo int) error {
	t := &Transport{pool: pool, schema: schema, log: zap.NewNop()}
	return t.migrateTo(ctx, upTo)
}

// SetAfterRead makes ReadFeed call f after each of its reads (tests only).
func SetAfterRead(t *Transport, f func()) { t.afterRead = f }

// SetOnRun makes every numbering run call f with how many batches it
// numbered (tests only).
func SetOnRun(t *Transport, f func(numbered int64)) { t.onRun.Store(&f) }

// SetSequencerChunk sets the most batches one numbering run numbers
// (tests only).
func SetSequencerChunk(t *Transport, n int) { t.chunk.Store(int64(n)) }

// FeedQueries returns the numbering run's statement and the readers'
// check for unnumbered batches (tests only).
func FeedQueries(t *Transport) (sequence, pendingNow string) { return t.q.sequence, t.q.pendingNow }

// SequencerLock returns the key of the sequencers' advisory lock on schema
// (tests only).
func SequencerLock(schema string) int64 { return lockKey("sourced.sequencer." + schema) }

// MigrationLock is the advisory lock key migrations of schema take (tests
// only).
func MigrationLock(schema string) int64 { return lockKey("sourced.migrate." + schema) }
