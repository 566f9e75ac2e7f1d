package boltcheckpoint

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
)

// ErrNotParked: Retry, Discard or TakeParked named an entry that is not
// parked.
var ErrNotParked = errors.New("boltcheckpoint: no such parked entry")

// TakeParked removes, inside tx, the entry that the subscription called
// name parked at sequence, and returns it (projection.ParkedStore); an
// error wrapping ErrNotParked when there is none.
func (s *Store) TakeParked(_ context.Context, tx *bbolt.Tx, name string, sequence int64) (transport.FeedEntry, error) {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(sequence))
	var b *bbolt.Bucket
	if root := tx.Bucket(bucketParked); root != nil {
		b = root.Bucket([]byte(name))
	}
	var v []byte
	if b != nil {
		v = b.Get(k[:])
	}
	if v == nil {
		return transport.FeedEntry{}, fmt.Errorf("%w: %q sequence number %d", ErrNotParked, name, sequence)
	}
	var p Parked
	if err := json.Unmarshal(v, &p); err != nil {
		return transport.FeedEntry{}, fmt.Errorf("boltcheckpoint: parked entry %d of %q: %w", sequence, name, err)
	}
	return p.Entry, b.Delete(k[:])
}

// Retry hands a parked entry to fn (for example the function given to
// Apply) in one transaction that also removes it from the parked entries:
// the entry is applied once, or stays parked when fn fails. With a
// projection, use its Retry instead: it runs the typed handlers.
func (s *Store) Retry(ctx context.Context, name string, sequence int64, fn func(ctx context.Context, tx *bbolt.Tx, entry transport.FeedEntry) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		e, err := s.TakeParked(ctx, tx, name, sequence)
		if err != nil {
			return err
		}
		return fn(ctx, tx, e)
	})
}

// Discard removes a parked entry without handling it; an error wrapping
// ErrNotParked when there is none (Unpark, which it replaces, says
// nothing then).
func (s *Store) Discard(ctx context.Context, name string, sequence int64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		_, err := s.TakeParked(ctx, tx, name, sequence)
		return err
	})
}
