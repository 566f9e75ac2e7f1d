package projection

import (
	"context"
	"fmt"

	"github.com/sourced-go/sourced/subscription"
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

// RetryOption configures Retry.
type RetryOption func(*retryConfig)

type retryConfig struct {
	tenant string
	upcast map[string]subscription.Upcaster
}

// RetryTenant gives the envelopes of a retried entry the tenant of the
// subscription that parked it (a parked entry does not record it).
func RetryTenant(tenant string) RetryOption { return func(c *retryConfig) { c.tenant = tenant } }

// RetryUpcast upcasts the events of a retried entry as the subscription
// that parked it does (pass the same definitions as its
// subscription.Upcast): a parked entry is kept as stored, and its old
// event types would otherwise reach no handler (events of a type with no
// handler are skipped) and be taken off the parked list unapplied.
func RetryUpcast(defs ...subscription.Upcaster) RetryOption {
	return func(c *retryConfig) {
		for _, d := range defs {
			if d == nil {
				continue
			}
			if c.upcast == nil {
				c.upcast = map[string]subscription.Upcaster{}
			}
			c.upcast[d.Type()] = d
		}
	}
}

// Retry delivers the entry that the subscription called name parked at
// sequence through the projection's handlers again, in one transaction
// that also takes it off the parked entries: it is applied once, or, when
// a handler (or an upcast) fails, stays parked and Retry returns the
// failure. The checkpoint does not move (it is past the entry already).
// The envelopes carry no tenant unless RetryTenant gives it, and the
// events are as stored unless RetryUpcast upcasts them: give both when the
// subscription has a tenant or upcasts. The projection's store must be a
// ParkedStore.
func (p *Projection[Tx]) Retry(ctx context.Context, name string, sequence int64, opts ...RetryOption) error {
	var cfg retryConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	ps, ok := p.store.(ParkedStore[Tx])
	if !ok {
		return fmt.Errorf("projection: retrying parked entry %d of %q: the store (%T) keeps no parked entries (it is no ParkedStore)", sequence, name, p.store)
	}
	return ps.Update(ctx, func(ctx context.Context, tx Tx) error {
		e, err := ps.TakeParked(ctx, tx, name, sequence)
		if err != nil {
			return err
		}
		if up := cfg.upcast[e.AggregateType]; up != nil {
			events := make([]transport.Event, len(e.Events))
			for i, ev := range e.Events {
				ev.EventType, ev.Data, err = up.Upcast(ev.EventType, ev.Data)
				if err != nil {
					return fmt.Errorf("projection: retrying parked entry %d of %q: upcast %s (event %s): %w", sequence, name, e.Events[i].EventType, ev.EventID, err)
				}
				events[i] = ev
			}
			e.Events = events
		}
		return p.entry(context.WithValue(ctx, txKey[Tx]{}, tx), tx, cfg.tenant, &e)
	})
}
