package boltcheckpoint

import (
	"context"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/projection"
)

var _ projection.ParkedStore[*bbolt.Tx] = (*Store)(nil)

// Update implements projection.Store: fn runs in one read-write bbolt
// transaction (one commit, one fsync).
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx *bbolt.Tx) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error { return fn(ctx, tx) })
}

// Checkpoint implements projection.Store: the checkpoint of the
// subscription called name, with the event id of its entry ("" when it
// was saved without one).
func (s *Store) Checkpoint(_ context.Context, tx *bbolt.Tx, name string) (subscription.Checkpoint, bool, error) {
	c, ok := GetCheckpoint(tx, name)
	return c, ok, nil
}

// SetCheckpoint implements projection.Store.
func (s *Store) SetCheckpoint(_ context.Context, tx *bbolt.Tx, name string, c subscription.Checkpoint) error {
	return PutCheckpoint(tx, name, c)
}
