package snapshot

import (
	"context"
	"encoding/json"
	"errors"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
)

var bucketSnapshots = []byte("sourced.snapshots")

// Bolt keeps snapshots in a bucket ("sourced.snapshots") of a bbolt file of
// the caller's (not the bolt transport's own file, which it holds locked).
type Bolt struct{ db *bbolt.DB }

var _ Store = (*Bolt)(nil)

// NewBolt creates the bucket if it is missing.
func NewBolt(db *bbolt.DB) (*Bolt, error) {
	if db == nil {
		return nil, errors.New("snapshot: nil database")
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSnapshots)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Bolt{db: db}, nil
}

func boltKey(ref transport.Ref) []byte {
	return []byte(ref.Tenant + "\x00" + ref.Type + "\x00" + ref.ID)
}

// Get implements Store.
func (b *Bolt) Get(_ context.Context, ref transport.Ref) (Snapshot, bool, error) {
	if err := Check(ref, nil); err != nil {
		return Snapshot{}, false, err
	}
	var s Snapshot
	var ok bool
	err := b.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketSnapshots).Get(boltKey(ref))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &s)
	})
	return s, ok, err
}

// Put implements Store.
func (b *Bolt) Put(_ context.Context, ref transport.Ref, s Snapshot) error {
	if err := Check(ref, &s); err != nil {
		return err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketSnapshots)
		if v := bk.Get(boltKey(ref)); v != nil {
			var cur Snapshot
			if json.Unmarshal(v, &cur) == nil && cur.Version > s.Version {
				return nil
			}
		}
		return bk.Put(boltKey(ref), data)
	})
}

// Delete implements Store.
func (b *Bolt) Delete(_ context.Context, ref transport.Ref) error {
	if err := Check(ref, nil); err != nil {
		return err
	}
	return b.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketSnapshots).Delete(boltKey(ref)) })
}
