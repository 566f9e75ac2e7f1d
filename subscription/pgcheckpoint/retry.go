package pgcheckpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/transport"
)

// TakeParked removes, inside tx, the entry that the subscription called
// name parked at sequence, and returns it (projection.ParkedStore), after
// checking the view's fence; an error wrapping ErrNotParked when there is
// none.
func (s *Store) TakeParked(ctx context.Context, tx pgx.Tx, name string, sequence int64) (transport.FeedEntry, error) {
	if err := s.checkFence(ctx, tx, s.fence); err != nil {
		return transport.FeedEntry{}, permanentIfFenced(err)
	}
	var data []byte
	err := tx.QueryRow(ctx, "DELETE FROM "+s.s+".parked WHERE name = $1 AND seq = $2 RETURNING entry", name, sequence).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return transport.FeedEntry{}, fmt.Errorf("%w: %q sequence number %d", ErrNotParked, name, sequence)
	}
	if err != nil {
		return transport.FeedEntry{}, fmt.Errorf("pgcheckpoint: taking parked entry %d of %q: %w", sequence, name, err)
	}
	e, err := decodeEntry(data)
	if err != nil {
		return transport.FeedEntry{}, fmt.Errorf("pgcheckpoint: parked entry %d of %q: %w", sequence, name, err)
	}
	return e, nil
}

// TakeParked implements projection.ParkedStore: Store.TakeParked in the
// batch's transaction.
func (b Batched) TakeParked(ctx context.Context, tx *Batch, name string, sequence int64) (transport.FeedEntry, error) {
	return b.s.TakeParked(ctx, tx.Tx, name, sequence)
}
