// Package projection keeps a read model exactly once: typed handlers that
// receive the read model's transaction, and the subscription's checkpoint
// written in that same transaction, one transaction per page of the feed.
//
//	cps, _ := boltcheckpoint.New(db) // a projection.Store[*bbolt.Tx]
//	p := projection.New(cps)
//	projection.On(p, func(ctx context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
//		return tx.Bucket([]byte("orders")).Put([]byte(env.AggregateID), []byte(strconv.Itoa(e.Total)))
//	})
//	sub, _ := subscription.New(store, "order-list", cps, subscription.Feed("order"))
//	p.Attach(sub)
//	err := sub.Run(ctx)
//
// One API over any transactional database: a Store[Tx] opens a
// transaction of kind Tx and reads and writes a checkpoint inside it.
// boltcheckpoint.Store is a Store[*bbolt.Tx], pgcheckpoint.Store a
// Store[pgx.Tx] (whose WithFence view checks a consumer group's lease in
// the same transaction); a user implements it for another database.
//
// # What is guaranteed
//
// Each page the subscription reads is applied in one Store.Update: the
// checkpoint is read in the transaction, entries it has passed are
// skipped (so the redelivery that follows a crash changes nothing), the
// handlers run, and the checkpoint is set at the page's last entry before
// the commit. A page whose transaction fails is applied again one entry
// at a time (one transaction each) under the subscription's retry policy,
// and an entry that still fails is parked or stops the subscription: a
// failure never applies half a page and never skips an entry. Handlers
// must therefore write only through the transaction.
//
// Typed handlers (On) are named after the Go type of their event, as
// package aggregate names events, and decode it as subscription.On does
// (eventbus.Typed). Events of a type with no handler are skipped: the
// checkpoint passes them. Entries arrive upcast when the subscription has
// Upcast.
//
// Experimental: this package is outside the compatibility promise (see
// README, "Compatibility"); its API may change in any minor version.
package projection
