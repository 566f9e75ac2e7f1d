// Package eventbus delivers committed events to typed subscribers inside the
// process: the read model, the e-mail, the process that pays an order.
//
// A repository created with repository.WithPublisher(bus) publishes the
// events of every successful store, after the store and in stored order;
// a failed store publishes nothing.
//
//	bus := eventbus.New()
//	eventbus.Subscribe(bus, func(ctx context.Context, env eventbus.Envelope, e OrderPlaced) error {
//		return mail.Confirm(ctx, env.AggregateID, e.Email)
//	}, eventbus.Async())
//
// # Delivery
//
// Each subscription chooses its mode. Sync (the default) runs the handler
// inside Publish, so before Update returns; its error is returned by Publish
// (Update then reports it wrapped in repository.ErrPublish) and the commit
// stands. Async hands events to a bounded queue served by worker
// goroutines; a failing handler is retried with backoff, then given to the
// dead-letter callback and logged. Events of one aggregate always go to the
// same worker, so each subscriber sees them in the order they were
// published, which the repositories publishing to the bus make version
// order through the bus's Sequencer. When a queue is full, Publish blocks
// (honouring ctx) or fails with ErrQueueFull, by option: an event is never
// dropped silently, and the rest of the batch is not queued after it. A
// handler that panics fails with ErrPanic. No lock is held while handlers
// run: a sync handler may publish, and Close may run meanwhile.
//
// # The guarantee, honestly
//
// Delivery is in-process and happens after the commit. If the process dies
// between the commit and the delivery, or while events wait in an async
// queue, those deliveries are lost: across crashes the bus is at-most-once.
// A sync handler that fails does not undo the commit either.
//
// When a reaction must not be lost, do not rely on the bus alone: make the
// handler idempotent (every Envelope carries its EventID), record in your
// read model the last version it processed per aggregate, and on start-up,
// or when a handler reports a gap, catch up by reading the store from that
// version (transport.Load since it). The store is the durable log; the bus
// is the fast path. Package subscription does all of that for you: it
// follows the store's feed with the same handlers (eventbus.Typed builds
// both) and keeps a checkpoint.
package eventbus
