// Package subscription keeps read models and reactions in step with a
// transport's feed (transport.Feeder): every stored batch, in commit order,
// handed to typed handlers, with a checkpoint that survives restarts.
//
//	sub, err := subscription.New(store, "order-list", checkpoints, subscription.Feed("order"))
//	subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, e OrderPlaced) error {
//		return list.Add(ctx, env.AggregateID, e.Total)
//	})
//	err = sub.Run(ctx) // catches up, then follows the feed live
//
// Handlers have the event bus's signature and are built the same way
// (eventbus.Typed): code written for the bus moves onto a subscription
// unchanged, and eventbus.Envelope carries the batch's Sequence and Stored
// time here.
//
// # What is guaranteed
//
// Entries are handled one at a time, in feed order (per partition, when
// the feed is partitioned), and each handler sees every event of its type,
// never skipping one: a failing handler is retried with backoff, and when
// the retries run out the subscription either stops (Run returns an
// *eventbus.HandlerError naming the subscription, the sequence number, the
// aggregate and the event) or, with OnFailure(Park(p)), hands the entry to
// the Parker for a person to look at and goes on. Nothing is skipped
// silently.
//
// Delivery is at least once. The checkpoint is saved after the entries of
// each page are handled (and when the subscription stops), so a crash
// between a handler's effect and the next save delivers those entries
// again after a restart. A handler should therefore be idempotent: every
// event has a unique EventID, and every entry a Sequence that only grows,
// so a read model can remember the last sequence number it applied and
// ignore anything at or below it.
//
// Exactly once, for a read model kept in the same database as the
// checkpoint: package subscription/boltcheckpoint writes the read model's
// change and the checkpoint in one bbolt transaction, and skips an entry
// whose sequence number the checkpoint has already passed. A crash then
// either applies a batch and its checkpoint together, or neither. What
// cannot stay exact is refused before anything is handled (ErrSetup): such
// a handler beside other handlers, two of them, or a changed partition
// count. Package subscription/projection does the same with typed handlers
// over any transactional store (bbolt, PostgreSQL, a user's own), one
// transaction per page: it is a page handler (OnPage), which gets each
// read whole and, when a page fails, each of its entries alone.
//
// # Lifecycle
//
// Run catches up from the checkpoint (or, the first time, from the start of
// the feed, or from its head with FromHead), then follows the feed with
// long-polling reads that wake when a batch commits. Close asks Run to
// stop: the entry in hand is finished, the checkpoint saved, and Run
// returns nil; canceling Run's context does the same. When Close's own
// deadline passes first, the handlers' context is cancelled, and a handler
// failing because of it has not failed: its entry is neither parked nor
// passed, and comes again after a restart. Lag reports how many sequence
// numbers the subscription is behind the feed's head, and Await waits for
// a sequence number; a read that reaches the end of the feed (or of the
// partition) counts as caught up to the head it saw. A panicking handler
// is a failing handler (eventbus.ErrPanic). Two subscriptions of one name
// cannot run on one checkpoint store at once (ErrNameInUse).
//
// Several consumers share a feed by partition (Partition(count, n)): each
// aggregate's batches go to one partition, in order. RunAll runs several
// subscriptions together.
//
// # A checkpoint that knows where it stands, reset and replay, metrics
//
// A checkpoint (Checkpoint) records the sequence number of the last entry
// handled and the first event id of that entry, where the store keeps it
// (EntryCheckpoints). As Run starts, it checks that the feed still holds
// that entry: when the feed's head is below the checkpoint, or another
// entry stands at its number, the store was reset or replaced, and Run
// returns an error wrapping ErrStaleCheckpoint, or with
// OnStale(Rebuild(clear)) empties the read model and handles the feed
// again from its start. An entry deleted since is not stale. Reset and
// ResetGroup move checkpoints back or forward for a replay (Resetter),
// refused while the subscription runs where the store can tell. Metrics
// exports position, head and lag as Prometheus gauges.
package subscription
