// Package bolt is a durable embedded transport: events in one local file,
// kept by go.etcd.io/bbolt (the B+tree store behind etcd: ACID
// transactions, no server to run). A batch is on disk, fsynced, when Store
// returns; a crash never leaves a partial batch or a version gap.
//
//	store, err := bolt.Open("events.db")
//	defer store.Close()
//	repo := repository.New(store, orders)
//
// The local server keeps its data in such a file with -data path.
//
// # File layout (format 2)
//
// Root buckets:
//
//	meta                  key "format" = "2"
//	scopes                one nested bucket per tenant and aggregate type
//	  <tenant>"\x00"<type>  (tenant empty for the default tenant)
//	    <aggregate id>      one nested bucket per aggregate (ids sort for List)
//	      "meta"            16 bytes: version (uint64 big-endian), last
//	                        update (int64 Unix nanoseconds, big-endian)
//	      <version>         8 bytes, uint64 big-endian (so a cursor pages
//	                        in version order): the batch, a JSON array of
//	                        transport.Event
//	      "events"          8 bytes: the aggregate's event count
//	feeds                 one nested bucket per tenant, "t:"<tenant>
//	  (bucket sequence)     the tenant's last feed sequence number
//	  entries               <sequence> (8 bytes, big-endian) -> version,
//	                        store time, aggregate type and id of the batch
//	  heads                 <type> -> the type's newest sequence number
//
// # Feeds
//
// The transport implements transport.Feeder. A batch takes its sequence
// number (bbolt's durable bucket sequence) inside the transaction that
// writes it, and bbolt admits one writer at a time, so numbers are given in
// commit order and a reader never sees a number before a lower one. Numbers
// survive restarts and are never reused, not even after a delete. A feed
// read that waits (FeedQuery.Wait) wakes when a batch of this process
// commits. Files of format 1 are upgraded when opened: their feed is built
// from the stored batches, each aggregate's in version order.
//
// One Store is one bbolt read-write transaction: it checks the expected
// version, writes the batch under version+1 and the new meta, and commits
// with fsync. StoreBulk writes every batch in one transaction. Delete
// tokens live in memory only: they expire after ten minutes anyway, and a
// restart simply forgets them.
//
// Opening a file of another format, or a file that is not a bbolt file,
// fails with ErrUnknownFormat. Opening a file another process holds fails
// with ErrLocked after a bounded wait (WithOpenTimeout, 2 s by default).
package bolt
