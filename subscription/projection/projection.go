package projection

import (
	"context"
	"fmt"
	"sync"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/internal/runinfo"
	"github.com/sourced-go/sourced/transport"
)

// Store is a transactional database that keeps a read model and the
// checkpoints of the subscriptions that write it. Tx is its transaction
// (*bbolt.Tx, pgx.Tx, ...). Implementations must be safe for concurrent
// use.
type Store[Tx any] interface {
	// Update runs fn in a read-write transaction, committed when fn
	// returns nil and rolled back when it fails or panics.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// Checkpoint returns, inside tx, the checkpoint of the subscription
	// called name, and false when it has none.
	Checkpoint(ctx context.Context, tx Tx, name string) (subscription.Checkpoint, bool, error)
	// SetCheckpoint writes, inside tx, the checkpoint of the subscription
	// called name.
	SetCheckpoint(ctx context.Context, tx Tx, name string, c subscription.Checkpoint) error
}

// Projection is a set of handlers that apply a feed's events to a read
// model kept in a Store. Build it with New, register handlers with On and
// OnEntry, then Attach it to a subscription.
type Projection[Tx any] struct {
	store Store[Tx]
	h     *handlers[Tx] // shared with the copies Using makes
}

type handlers[Tx any] struct {
	mu       sync.Mutex
	attached bool
	byType   map[string][]eventbus.Handler
	entries  []func(ctx context.Context, tx Tx, e transport.FeedEntry) error
}

// txKey carries the transaction of the page to the typed handlers, through
// the context eventbus.Typed passes on.
type txKey[Tx any] struct{}

// New returns a projection that keeps its read model and checkpoint in
// store.
func New[Tx any](store Store[Tx]) *Projection[Tx] {
	if store == nil {
		panic("projection: nil store")
	}
	return &Projection[Tx]{store: store, h: &handlers[Tx]{byType: map[string][]eventbus.Handler{}}}
}

// Using returns a projection with the same handlers over another store of
// the same kind: for example the fenced view of a consumer group's
// partition (pgcheckpoint.Store.WithFence).
func (p *Projection[Tx]) Using(store Store[Tx]) *Projection[Tx] {
	if store == nil {
		panic("projection: nil store")
	}
	return &Projection[Tx]{store: store, h: p.h}
}

// On registers a typed handler for events of type E, named after E's Go
// type (as package aggregate names events) unless name is given, and
// decoded as subscription.On decodes them. It receives the transaction of
// the page, in which it must make all its writes.
func On[E, Tx any](p *Projection[Tx], h func(ctx context.Context, tx Tx, env eventbus.Envelope, e E) error, name ...string) {
	if h == nil {
		panic("projection: nil handler")
	}
	typ, handler := eventbus.Typed(func(ctx context.Context, env eventbus.Envelope, e E) error {
		tx, _ := ctx.Value(txKey[Tx]{}).(Tx)
		return h(ctx, tx, env, e)
	})
	if len(name) > 0 && name[0] != "" {
		typ = name[0]
	}
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	p.mustNotRun()
	p.h.byType[typ] = append(p.h.byType[typ], handler)
}

// OnEntry registers a handler for whole entries (one stored batch with all
// its events), run before the typed handlers of the entry's events.
func (p *Projection[Tx]) OnEntry(h func(ctx context.Context, tx Tx, e transport.FeedEntry) error) {
	if h == nil {
		panic("projection: nil handler")
	}
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	p.mustNotRun()
	p.h.entries = append(p.h.entries, h)
}

func (p *Projection[Tx]) mustNotRun() {
	if p.h.attached {
		panic("projection: handlers must be registered before Attach")
	}
}

// Attach makes the projection sub's page handler (subscription.OnPage),
// with the checkpoint of sub.Name() in the store: it must be sub's only
// handler (Run refuses other set-ups with subscription.ErrSetup). Give
// sub the store as its checkpoints too (or Checkpoints(store)), so that it
// starts where the read model stands.
func (p *Projection[Tx]) Attach(sub *subscription.Subscription) {
	p.h.mu.Lock()
	p.h.attached = true
	p.h.mu.Unlock()
	name := sub.Name()
	sub.OnPage(func(ctx context.Context, entries []transport.FeedEntry) error {
		return p.Apply(ctx, name, entries)
	}, subscription.WritesCheckpoint())
}

// Apply applies entries (in feed order) in one transaction with the
// checkpoint of the subscription called name: entries the checkpoint has
// passed are skipped, the handlers run, and the checkpoint is set at the
// last entry. It applies all of them or none. Attach calls it for each
// page; call it yourself to apply entries read some other way (the
// envelopes then carry no tenant: inside a subscription they carry its
// feed's).
func (p *Projection[Tx]) Apply(ctx context.Context, name string, entries []transport.FeedEntry) error {
	if len(entries) == 0 {
		return nil
	}
	info, _ := runinfo.From(ctx)
	return p.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		cur, ok, err := p.store.Checkpoint(ctx, tx, name)
		if err != nil {
			return err
		}
		hctx := context.WithValue(ctx, txKey[Tx]{}, tx)
		var last *transport.FeedEntry
		for i := range entries {
			e := &entries[i]
			if ok && e.Sequence <= cur.Sequence {
				continue // applied before a crash or a restart
			}
			if err := p.entry(hctx, tx, info.Tenant, e); err != nil {
				return err
			}
			last = e
		}
		if last == nil {
			return nil
		}
		return p.store.SetCheckpoint(ctx, tx, name, subscription.CheckpointOf(*last))
	})
}

// entry runs the handlers of one entry.
func (p *Projection[Tx]) entry(ctx context.Context, tx Tx, tenant string, e *transport.FeedEntry) error {
	for _, h := range p.h.entries {
		if err := h(ctx, tx, *e); err != nil {
			return fmt.Errorf("sequence number %d (%s %s): %w", e.Sequence, e.AggregateType, e.AggregateID, err)
		}
	}
	for i := range e.Events {
		ev := &e.Events[i]
		hs := p.h.byType[ev.EventType]
		if len(hs) == 0 {
			continue // no handler for this type: skipped
		}
		env := eventbus.Envelope{Tenant: tenant, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
			Version: e.Version, Sequence: e.Sequence, Stored: e.Stored, EventID: ev.EventID, EventType: ev.EventType, Data: ev.Data}
		for _, h := range hs {
			if err := h(ctx, env); err != nil {
				return fmt.Errorf("sequence number %d (%s %s), event %s %s: %w", e.Sequence, e.AggregateType, e.AggregateID, ev.EventType, ev.EventID, err)
			}
		}
	}
	return nil
}

// Checkpoints returns store as the checkpoint store of a subscription (for
// a Store that is not one already): each call is a transaction of its
// own. Save never moves a checkpoint back.
func Checkpoints[Tx any](store Store[Tx]) subscription.EntryCheckpoints {
	return storeCheckpoints[Tx]{store}
}

type storeCheckpoints[Tx any] struct{ s Store[Tx] }

// Load implements subscription.Checkpoints.
func (c storeCheckpoints[Tx]) Load(ctx context.Context, name string) (int64, bool, error) {
	cp, ok, err := c.LoadCheckpoint(ctx, name)
	return cp.Sequence, ok, err
}

// Save implements subscription.Checkpoints.
func (c storeCheckpoints[Tx]) Save(ctx context.Context, name string, seq int64) error {
	return c.SaveCheckpoint(ctx, name, subscription.Checkpoint{Sequence: seq})
}

// LoadCheckpoint implements subscription.EntryCheckpoints.
func (c storeCheckpoints[Tx]) LoadCheckpoint(ctx context.Context, name string) (cp subscription.Checkpoint, ok bool, err error) {
	err = c.s.Update(ctx, func(ctx context.Context, tx Tx) error {
		cp, ok, err = c.s.Checkpoint(ctx, tx, name)
		return err
	})
	return cp, ok, err
}

// SaveCheckpoint implements subscription.EntryCheckpoints; it never moves
// a checkpoint back.
func (c storeCheckpoints[Tx]) SaveCheckpoint(ctx context.Context, name string, cp subscription.Checkpoint) error {
	return c.s.Update(ctx, func(ctx context.Context, tx Tx) error {
		cur, ok, err := c.s.Checkpoint(ctx, tx, name)
		if err != nil || (ok && cur.Sequence >= cp.Sequence) {
			return err
		}
		return c.s.SetCheckpoint(ctx, tx, name, cp)
	})
}
