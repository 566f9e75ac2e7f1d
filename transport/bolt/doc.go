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
// # File layout (format 3)
//
// Root buckets:
//
//	meta                  key "format" = "3"
//	scopes                one nested bucket per tenant and aggregate type
//	  <tenant>"\x00"<type>  (tenant empty for the default tenant)
//	    <aggregate id>      one nested bucket per aggregate (ids sort for List)
//	      "meta"            16 bytes: version (uint64 big-endian), last
//	                        update (int64 Unix nanoseconds, big-endian)
//	      <version>         8 bytes, uint64 big-endian (so a cursor pages
//	                        in version order): the batch record
//	      "events"          8 bytes: the aggregate's event count
//	feeds                 one nested bucket per tenant, "t:"<tenant>
//	  (bucket sequence)     the tenant's last feed sequence number
//	  entries               <sequence> (8 bytes, big-endian) -> version,
//	                        store time, aggregate type and id of the batch
//	  heads                 <type> -> the type's newest sequence number
//	  types                 <type> 0x00 <sequence> -> nothing: each type's
//	                        entries, so a type's feed is read without
//	                        looking at other types' entries
//
// A batch record is binary, so payloads come back byte for byte: the tag
// byte 0xB3, the batch's feed sequence number and store time (8 bytes each,
// big-endian; a store time of 0 means unknown), a CRC-32C (Castagnoli,
// 4 bytes big-endian) of every other byte of the record, the number of events
// (uvarint), then per event four fields, each a uvarint length and the
// bytes: event id, event type, data, encrypted data. Files of format 2 (and
// 1) kept batches as JSON arrays re-encoded on the way in; they are
// upgraded when opened, in one transaction: their batches as those arrays
// hold them, each with its feed number and store time (format 1 had no
// feed: it is built, each aggregate's batches in version order, and only an
// aggregate's newest batch knows its store time, the aggregate's last
// update; older ones get an unknown, zero, store time).
//
// # Feeds
//
// The transport implements transport.Feeder. A batch takes its sequence
// number (bbolt's durable bucket sequence) inside the transaction that
// writes it, and bbolt admits one writer at a time, so numbers are given in
// commit order and a reader never sees a number before a lower one. Numbers
// survive restarts and are never reused, not even after a delete. A feed
// read that waits (FeedQuery.Wait) wakes when a batch of this process
// commits to its feed (its type, or any type for transport.AllTypes), and at
// once with ErrClosed when the transport closes.
//
// A Store checks the expected version, takes the store time (never
// earlier than the aggregate's last), writes the batch under version+1 and
// the new meta, and commits with fsync. StoreBulk writes all its batches
// or none. Concurrent Stores and StoreBulks are committed together (group
// commit): the first caller commits at once, alone, and callers arriving
// during that commit queue and go into the next transaction together, up
// to 256 calls or 4 MiB, one fsync for all of them, with no fixed delay
// (a lone writer never waits). Each caller still gets its own answer: a
// conflict, damage or a panic in one call's write never fails another
// (a call that fails after it began writing makes the group run again
// without it; a transaction that fails as a whole, at its commit, runs
// its calls again one by one), and a caller whose context ends while
// queued gets its error with nothing stored, or, once its write is in a
// transaction, that transaction's answer. Deletes keep their own transaction; bbolt's single
// writer orders them with the groups. Delete tokens live in memory only:
// they expire after ten minutes anyway, and a restart simply forgets them.
//
// # Opening, damage, sharing the file
//
// Before bbolt maps an existing file, Open checks its size against what
// its meta pages record: an empty file, or one shorter than they say (a
// copy cut short), fails with ErrDamaged instead of crashing the process;
// a file that is not a bbolt file, or not ours, fails with
// ErrUnknownFormat. A file another process holds fails with ErrLocked after
// a bounded wait (WithOpenTimeout, 2 s by default); a file already open in
// this process (under any name: symbolic links are resolved) fails with
// ErrLocked at once, saying so. A record that does not decode (an
// aggregate's, a batch, a feed entry), a batch that fails its checksum, a
// feed entry whose number or store time is not that of its batch, an
// aggregate record whose version is below its newest batch, and a bbolt
// page that makes bbolt panic or read outside the file, fail the call with
// ErrDamaged naming what they can; SkipDamagedFeedEntry lets readers of a
// feed past a damaged entry. A read model may keep its buckets in the same
// file through DB (never two bbolt.Open of one file).
package bolt
