package projection

import (
	"context"
	"fmt"

	"github.com/sourced-go/sourced/transport"
)

// ParkedStore is implemented by a Store that keeps the entries its
// subscriptions parked in the read model's own database
// (boltcheckpoint.Store and pgcheckpoint.Store do), so that a parked entry
// can be taken back in the transaction that applies it.
type ParkedStore[Tx any] interface {
	Store[Tx]
	// TakeParked removes, inside tx, the entry that the subscription
	// called name parked at sequence, and returns it; an error (the
	// store's ErrNotParked) when no such entry is parked.
	TakeParked(ctx context.Context, tx Tx, name string, sequence int64) (transport.FeedEntry, error)
}

// Retry delivers the entry that the subscription called name parked at
// sequence through the projection's handlers again, in one transaction
// that also takes it off the parked entries: it is applied once, or, when
// a handler fails, stays parked and Retry returns the failure. The
// checkpoint does not move (it is past the entry already). The envelopes
// carry no tenant, as with Apply. The projection's store must be a
// ParkedStore.
func (p *Projection[Tx]) Retry(ctx context.Context, name string, sequence int64) error {
	ps, ok := p.store.(ParkedStore[Tx])
	if !ok {
		return fmt.Errorf("projection: retrying parked entry %d of %q: the store (%T) keeps no parked entries (it is no ParkedStore)", sequence, name, p.store)
	}
	return ps.Update(ctx, func(ctx context.Context, tx Tx) error {
		e, err := ps.TakeParked(ctx, tx, name, sequence)
		if err != nil {
			return err
		}
		return p.entry(context.WithValue(ctx, txKey[Tx]{}, tx), tx, "", &e)
	})
}
