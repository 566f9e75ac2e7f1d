package boltcheckpoint

import (
	"context"
	"encoding/binary"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/projection"
)

var _ projection.Store[*bbolt.Tx] = (*Store)(nil)

// A checkpoint's value is the 8-byte big-endian sequence number, followed
// by the event id of the entry it stands on when that is known (written
// by SetCheckpoint). Values of 8 bytes, as earlier versions wrote them,
// read with no event id.

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

// GetCheckpoint reads a checkpoint, with the event id of its entry, inside
// a transaction of the caller's.
func GetCheckpoint(tx *bbolt.Tx, name string) (subscription.Checkpoint, bool) {
	b := tx.Bucket(bucketCheckpoints)
	if b == nil {
		return subscription.Checkpoint{}, false
	}
	v := b.Get([]byte(name))
	if len(v) < 8 {
		return subscription.Checkpoint{}, false
	}
	return subscription.Checkpoint{Sequence: int64(binary.BigEndian.Uint64(v)), EventID: string(v[8:])}, true
}

// PutCheckpoint writes a checkpoint, with the event id of its entry,
// inside a read-write transaction of the caller's.
func PutCheckpoint(tx *bbolt.Tx, name string, c subscription.Checkpoint) error {
	b, err := tx.CreateBucketIfNotExists(bucketCheckpoints)
	if err != nil {
		return err
	}
	v := make([]byte, 8+len(c.EventID))
	binary.BigEndian.PutUint64(v, uint64(c.Sequence))
	copy(v[8:], c.EventID)
	return b.Put([]byte(name), v)
}
