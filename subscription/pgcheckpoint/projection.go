package pgcheckpoint

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/projection"
)

var _ projection.ParkedStore[pgx.Tx] = (*Store)(nil)

// Update implements projection.Store: fn runs in one transaction, which
// first checks the view's fence (WithFence) and holds the lease row
// against a claim until it ends, so that a member that lost its partition
// commits nothing. A fenced Update fails with group.ErrFenced, marked
// permanent for the subscription's retries.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkFence(ctx, tx, s.fence); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
	return permanentIfFenced(err)
}

// Checkpoint implements projection.Store: the checkpoint of the
// subscription called name, locked (FOR UPDATE) until tx ends.
func (s *Store) Checkpoint(ctx context.Context, tx pgx.Tx, name string) (subscription.Checkpoint, bool, error) {
	return scanCheckpoint(tx.QueryRow(ctx, "SELECT seq, first_event_id FROM "+s.s+".checkpoints WHERE name = $1 FOR UPDATE", name), name)
}

// SetCheckpoint implements projection.Store: it writes the checkpoint
// with its entry's event id (first_event_id) in tx; the fence was checked
// by Update. It never moves a checkpoint back.
func (s *Store) SetCheckpoint(ctx context.Context, tx pgx.Tx, name string, c subscription.Checkpoint) error {
	return s.SaveFenced(ctx, tx, name, c, group.Fence{})
}

// Batch is the transaction a Batched projection's handlers get: a pgx.Tx
// (for reads and for statements whose result a handler needs now) that
// also queues statements with Queue. The queued statements are sent
// together, in order, in one round trip, when the handlers of the page
// have run (or at Flush), before the commit: a read model written through
// Queue catches up many times faster than one statement per round trip.
// When one fails the page rolls back, and the subscription applies it one
// entry at a time to find the failing entry.
type Batch struct {
	pgx.Tx
	queued pgx.Batch
}

// Queue adds a statement to the batch. Reads through the Tx do not see its
// effect until Flush.
func (b *Batch) Queue(sql string, args ...any) { b.queued.Queue(sql, args...) }

// Flush sends the queued statements now.
func (b *Batch) Flush(ctx context.Context) error {
	if b.queued.Len() == 0 {
		return nil
	}
	err := b.Tx.SendBatch(ctx, &b.queued).Close()
	b.queued = pgx.Batch{}
	return err
}

// Batched is the store as a projection.Store[*Batch]: the same
// transactions, fence check and checkpoints, with handlers that queue
// their statements (Batch.Queue).
type Batched struct{ s *Store }

var _ projection.ParkedStore[*Batch] = Batched{}

// Batched returns the store (this view of it, with its fence) for
// projections whose handlers queue their statements.
func (s *Store) Batched() Batched { return Batched{s} }

// Update implements projection.Store: Store.Update, sending the queued
// statements once fn has returned.
func (b Batched) Update(ctx context.Context, fn func(ctx context.Context, tx *Batch) error) error {
	return b.s.Update(ctx, func(ctx context.Context, tx pgx.Tx) error {
		bt := &Batch{Tx: tx}
		if err := fn(ctx, bt); err != nil {
			return err
		}
		return bt.Flush(ctx)
	})
}

// Checkpoint implements projection.Store.
func (b Batched) Checkpoint(ctx context.Context, tx *Batch, name string) (subscription.Checkpoint, bool, error) {
	return b.s.Checkpoint(ctx, tx.Tx, name)
}

// SetCheckpoint implements projection.Store: the checkpoint is queued with
// the read model's statements.
func (b Batched) SetCheckpoint(_ context.Context, tx *Batch, name string, c subscription.Checkpoint) error {
	var id *string
	if c.EventID != "" {
		id = &c.EventID
	}
	tx.Queue(b.s.saveCheckpointSQL(), name, c.Sequence, id)
	return nil
}
