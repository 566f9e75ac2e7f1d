// Package boltcheckpoint keeps subscription checkpoints, and parked
// entries, in a bbolt file of the user's: the same file as the read model
// the subscription maintains, so that the model's change and the
// checkpoint commit in one transaction and each batch applies exactly
// once, crashes included.
//
//	db, _ := bbolt.Open("orders-view.db", 0o600, nil)
//	cps, _ := boltcheckpoint.New(db)
//	sub, _ := subscription.New(store, "order-list", cps, subscription.Feed("order"))
//	sub.OnEntry(cps.Apply(sub.Name(), func(ctx context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
//		return tx.Bucket([]byte("orders")).Put([]byte(e.AggregateID), summary(e))
//	}))
//
// Apply skips an entry whose sequence number the checkpoint has already
// passed, so the redelivery that follows a crash changes nothing.
//
// What cannot be exact is refused with an error wrapping
// subscription.ErrSetup, before Apply applies anything: an Apply handler
// beside another handler on one subscription (when the other one failed,
// the checkpoint would already be past the entry) and two Apply handlers
// for one subscription (Apply checks, at each entry, the subscription it
// runs in; an Apply made for a subscription that never ran refuses
// nothing), and a subscription whose checkpoints were kept under
// another partition count (changing the count would apply entries again,
// or, with FromHead, skip those stored in between): Reset the old names to
// rebuild instead. Two subscriptions of one name running on one Store are
// refused with subscription.ErrNameInUse.
//
// Experimental: this package is outside the compatibility promise (see
// README, "Compatibility"); its API may change in any minor version.
package boltcheckpoint

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/internal/runinfo"
	"github.com/sourced-go/sourced/transport"
)

var (
	bucketCheckpoints = []byte("sourced.checkpoints")
	bucketEntries     = []byte("sourced.checkpoint-entries")
	bucketParked      = []byte("sourced.parked")
)

// Store keeps checkpoints in three buckets of a bbolt file:
// "sourced.checkpoints" (name -> 8-byte big-endian sequence number, as
// older releases wrote and read it), "sourced.checkpoint-entries" (name ->
// the same 8 bytes, then the first event id of the entry the checkpoint
// stands on; an event id counts only while its number is the checkpoint's,
// so a checkpoint moved by an older release is never paired with another
// entry's id) and "sourced.parked" (one nested bucket per subscription
// name).
type Store struct {
	db  *bbolt.DB
	now func() time.Time

	mu      sync.Mutex
	writers map[string]int  // Apply handlers made, by subscription name
	running map[string]bool // names claimed by running subscriptions
}

var (
	_ subscription.Checkpoints       = (*Store)(nil)
	_ subscription.EntryCheckpoints  = (*Store)(nil)
	_ subscription.Resetter          = (*Store)(nil)
	_ subscription.Parker            = (*Store)(nil)
	_ subscription.Claimer           = (*Store)(nil)
	_ subscription.SelfCheckpointing = (*Store)(nil)
)

// Claim implements subscription.Claimer.
func (s *Store) Claim(name string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[name] {
		return nil, fmt.Errorf("%w: %q runs already on this checkpoint store", subscription.ErrNameInUse, name)
	}
	s.running[name] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.running, name)
			s.mu.Unlock()
		})
	}, nil
}

// TakeCheckpointWriters implements subscription.SelfCheckpointing: the
// number of Apply handlers made for name since the last call.
func (s *Store) TakeCheckpointWriters(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.writers[name]
	delete(s.writers, name)
	return n
}

// New creates the buckets if they are missing.
func New(db *bbolt.DB) (*Store, error) {
	if db == nil {
		return nil, errors.New("boltcheckpoint: nil database")
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketCheckpoints, bucketEntries, bucketParked} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltcheckpoint: %w", err)
	}
	return &Store{db: db, now: time.Now, writers: map[string]int{}, running: map[string]bool{}}, nil
}

// Load implements subscription.Checkpoints. It fails with an error
// wrapping subscription.ErrSetup when checkpoints of the same subscription
// are kept under another partition count.
func (s *Store) Load(_ context.Context, name string) (int64, bool, error) {
	var seq int64
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		if err := samePartitions(tx, name); err != nil {
			return err
		}
		seq, ok = Get(tx, name)
		return nil
	})
	return seq, ok, err
}

// LoadCheckpoint implements subscription.EntryCheckpoints, with Load's
// partition-count check. A checkpoint written before event ids were kept
// (or by Put) has EventID "".
func (s *Store) LoadCheckpoint(_ context.Context, name string) (subscription.Checkpoint, bool, error) {
	var c subscription.Checkpoint
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		if err := samePartitions(tx, name); err != nil {
			return err
		}
		c, ok = GetCheckpoint(tx, name)
		return nil
	})
	return c, ok, err
}

// SaveCheckpoint implements subscription.EntryCheckpoints. Like Save, it
// never moves a checkpoint back, and a save at the checkpoint's own
// sequence number keeps the event id it has.
func (s *Store) SaveCheckpoint(_ context.Context, name string, c subscription.Checkpoint) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		if cur, ok := GetCheckpoint(tx, name); ok && (cur.Sequence > c.Sequence || cur.Sequence == c.Sequence && (cur.EventID != "" || c.EventID == "")) {
			return nil
		}
		return PutCheckpoint(tx, name, c)
	})
}

// ResetTo implements subscription.Resetter: the checkpoints of names are
// set to seq in one transaction, refused with subscription.ErrNameInUse
// when one of them runs on this Store, and with subscription.ErrReset
// when a name's subscription has checkpoints under another partition
// count (ResetGroup with the wrong count).
func (s *Store) ResetTo(ctx context.Context, seq int64, names ...string) error {
	if err := subscription.CheckReset(seq, names...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock() // no Claim until the reset is done
	for _, name := range names {
		if s.running[name] && !subscription.RebuildingItself(ctx, name) {
			return fmt.Errorf("%w: %q runs on this checkpoint store: stop it before a reset", subscription.ErrNameInUse, name)
		}
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range names {
			// A reset under another partition count than the one the
			// checkpoints were kept with would stop the subscription from
			// starting (Load refuses mixed counts): refused.
			if err := samePartitions(tx, name); err != nil {
				return fmt.Errorf("%w: %w", subscription.ErrReset, err)
			}
			if err := Put(tx, name, seq); err != nil {
				return err
			}
		}
		return nil
	})
}

// splitName returns a checkpoint name's subscription and partition count
// (1 without the "#<number>/<count>" suffix).
func splitName(name string) (base string, count int) {
	i := strings.LastIndexByte(name, '#')
	if i < 0 {
		return name, 1
	}
	num, cnt, ok := strings.Cut(name[i+1:], "/")
	if !ok {
		return name, 1
	}
	if _, err := strconv.Atoi(num); err != nil {
		return name, 1
	}
	c, err := strconv.Atoi(cnt)
	if err != nil || c < 1 {
		return name, 1
	}
	return name[:i], c
}

// samePartitions refuses name when checkpoints of its subscription exist
// under another partition count.
func samePartitions(tx *bbolt.Tx, name string) error {
	b := tx.Bucket(bucketCheckpoints)
	if b == nil {
		return nil
	}
	base, count := splitName(name)
	c := b.Cursor()
	for k, _ := c.Seek([]byte(base)); k != nil && strings.HasPrefix(string(k), base); k, _ = c.Next() {
		other, n := splitName(string(k))
		if other != base || n == count {
			continue
		}
		return fmt.Errorf("%w: checkpoint %q was kept with %d partition(s) and %q asks for %d: changing the count would apply entries again, or skip some; Reset the old checkpoints (and rebuild the read model) to change it",
			subscription.ErrSetup, string(k), n, name, count)
	}
	return nil
}

// Save implements subscription.Checkpoints. It never moves a checkpoint
// back: one that Apply wrote ahead of the subscription stays.
func (s *Store) Save(_ context.Context, name string, seq int64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		if cur, ok := Get(tx, name); ok && cur >= seq {
			return nil
		}
		return Put(tx, name, seq)
	})
}

// Reset forgets the checkpoint of the subscription called name, so that it
// starts over: for a read model rebuilt from scratch, or a store that was
// replaced by an empty one (its feed head below the checkpoint).
func (s *Store) Reset(_ context.Context, name string) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketCheckpoints).Delete([]byte(name)); err != nil {
			return err
		}
		if b := tx.Bucket(bucketEntries); b != nil {
			return b.Delete([]byte(name))
		}
		return nil
	})
}

// Get reads a checkpoint inside a transaction of the caller's.
func Get(tx *bbolt.Tx, name string) (int64, bool) {
	b := tx.Bucket(bucketCheckpoints)
	if b == nil {
		return 0, false
	}
	c, ok := GetCheckpoint(tx, name)
	return c.Sequence, ok
}

// GetCheckpoint reads a checkpoint, with the event id of its entry,
// inside a transaction of the caller's.
func GetCheckpoint(tx *bbolt.Tx, name string) (subscription.Checkpoint, bool) {
	b := tx.Bucket(bucketCheckpoints)
	if b == nil {
		return subscription.Checkpoint{}, false
	}
	v := b.Get([]byte(name))
	if len(v) != 8 {
		return subscription.Checkpoint{}, false
	}
	c := subscription.Checkpoint{Sequence: int64(binary.BigEndian.Uint64(v))}
	if e := tx.Bucket(bucketEntries); e != nil {
		if w := e.Get([]byte(name)); len(w) > 8 && string(w[:8]) == string(v) {
			c.EventID = string(w[8:])
		}
	}
	return c, true
}

// Put writes a checkpoint (without an event id) inside a read-write
// transaction of the caller's.
func Put(tx *bbolt.Tx, name string, seq int64) error {
	return PutCheckpoint(tx, name, subscription.Checkpoint{Sequence: seq})
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
	if err := b.Put([]byte(name), v[:8]); err != nil {
		return err
	}
	e, err := tx.CreateBucketIfNotExists(bucketEntries)
	if err != nil {
		return err
	}
	if c.EventID == "" {
		return e.Delete([]byte(name))
	}
	return e.Put([]byte(name), v)
}

// Apply returns an entry handler that runs fn and writes the checkpoint of
// the subscription called name in one transaction, and skips entries the
// checkpoint has passed. name must be the subscription's Name().
//
// It must be the subscription's only handler, and the only Apply for name:
// Run refuses other set-ups with subscription.ErrSetup; and name must be
// the name of the subscription that runs it (with the partition suffix),
// or the subscription stops with ErrSetup at its first entry.
func (s *Store) Apply(name string, fn func(ctx context.Context, tx *bbolt.Tx, entry transport.FeedEntry) error) func(context.Context, transport.FeedEntry) error {
	s.mu.Lock()
	s.writers[name]++
	s.mu.Unlock()
	return func(ctx context.Context, e transport.FeedEntry) error {
		if run, ok := runinfo.From(ctx); ok {
			if run.Name != name {
				return fmt.Errorf("%w: Apply(%q) runs on subscription %q: its checkpoint would not be the subscription's; pass sub.Name()", subscription.ErrSetup, name, run.Name)
			}
			if run.Handlers > 1 {
				return fmt.Errorf("subscription %q: %w: an entry handler that writes the checkpoint (Apply) must be the subscription's only handler (it has %d): when another one fails, the checkpoint has already passed the entry and a restart would skip it, and a second Apply would never run; give the other handlers a subscription of their own", name, subscription.ErrSetup, run.Handlers)
			}
		}
		return s.db.Update(func(tx *bbolt.Tx) error {
			if cur, ok := Get(tx, name); ok && cur >= e.Sequence {
				return nil // applied before a crash or a restart
			}
			if err := fn(ctx, tx, e); err != nil {
				return err
			}
			return PutCheckpoint(tx, name, subscription.CheckpointOf(e))
		})
	}
}

// Parked is one entry a handler could not handle.
type Parked struct {
	Entry  transport.FeedEntry `json:"entry"`
	Error  string              `json:"error"`
	Parked time.Time           `json:"parked"`
}

// Park implements subscription.Parker: the entry and the error are kept
// under the subscription's name until a person removes them.
func (s *Store) Park(_ context.Context, name string, entry transport.FeedEntry, cause error) error {
	data, err := json.Marshal(Parked{Entry: entry, Error: cause.Error(), Parked: s.now().UTC()})
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(bucketParked).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		k := make([]byte, 8)
		binary.BigEndian.PutUint64(k, uint64(entry.Sequence))
		return b.Put(k, data)
	})
}

// ListParked returns the entries parked by the subscription called name,
// in sequence order.
func (s *Store) ListParked(_ context.Context, name string) ([]Parked, error) {
	var out []Parked
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketParked).Bucket([]byte(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var p Parked
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// Unpark removes a parked entry, once a person has dealt with it.
func (s *Store) Unpark(_ context.Context, name string, sequence int64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketParked).Bucket([]byte(name))
		if b == nil {
			return nil
		}
		k := make([]byte, 8)
		binary.BigEndian.PutUint64(k, uint64(sequence))
		return b.Delete(k)
	})
}
