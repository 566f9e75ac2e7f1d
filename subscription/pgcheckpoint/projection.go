package pgcheckpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/projection"
)

var _ projection.Store[pgx.Tx] = (*Store)(nil)

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
	var c subscription.Checkpoint
	var id *string
	err := tx.QueryRow(ctx, "SELECT seq, first_event_id FROM "+s.s+".checkpoints WHERE name = $1 FOR UPDATE", name).Scan(&c.Sequence, &id)
	if errors.Is(err, pgx.ErrNoRows) {
		return subscription.Checkpoint{}, false, nil
	}
	if err != nil {
		return subscription.Checkpoint{}, false, fmt.Errorf("pgcheckpoint: loading checkpoint %q: %w", name, err)
	}
	if id != nil {
		c.EventID = *id
	}
	return c, true, nil
}

// SetCheckpoint implements projection.Store: it writes the checkpoint
// with its entry's event id (first_event_id) in tx; the fence was checked
// by Update.
func (s *Store) SetCheckpoint(ctx context.Context, tx pgx.Tx, name string, c subscription.Checkpoint) error {
	return s.SaveFenced(ctx, tx, name, Position{Sequence: c.Sequence, FirstEventID: c.EventID}, group.Fence{})
}
