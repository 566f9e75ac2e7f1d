// Package postgres is a transport on PostgreSQL, for events shared by many
// processes: several app instances (and sourced-server) on one database.
// It implements transport.Transport, transport.Lister and transport.Feeder
// on github.com/jackc/pgx/v5.
//
//	store, err := postgres.Open(ctx, "postgres://app@db/shop", postgres.WithSchema("sourced"))
//	defer store.Close()
//	repo := repository.New(store, orders)
//
// Open (or New, with a pool of your own) creates its schema and runs its
// embedded, versioned migrations under an advisory lock, so several
// processes may start at once (a schema already at SchemaVersion is only
// read, so a role without CREATE rights can open it; a newer one is refused
// with ErrSchemaTooNew). Tables: batches (one row per stored batch, its
// events framed byte for byte in a bytea, so Data and EncryptedData come
// back exactly as given; never updated), feed (a narrow row per numbered
// batch), feed_counter (the last number given, and where batches without
// one can be), feed_stats, delete_tokens (so two-step deletes survive a
// restart) and schema_migrations.
//
// # Concurrency
//
// A store inserts its batch and nothing else: the unique key (tenant,
// type, id, version) is the optimistic concurrency check. Before it, in the
// same round trip and a READ COMMITTED transaction whatever the session's
// default, it takes transaction-level advisory locks: its type's and its
// aggregate's, shared (an Any store takes the aggregate's exclusively, so
// it never loses a race for a version). ConfirmDelete takes the target's
// exclusively: it waits for the stores in flight and deletes what they
// wrote, and nothing of a deleted aggregate remains or comes back. Version 1 is a
// plain insert; version n+1 is inserted only from the row of version n (so
// a wrong expected version inserts nothing: ErrConflict); a second writer
// of one version breaks the unique key (ErrConflict). A store of one batch
// is one statement, one round trip; StoreBulk does every batch in one
// transaction. When the connection fails before the statement or COMMIT
// is sent, nothing happened and the error is ErrUnavailable; when it fails
// after, the outcome is unknown and the error is ErrAmbiguous, which the
// repository resolves by reading the batch back. A deadlock or a
// serialization failure rolls a store back whole; it is tried again with
// backoff. StoreBulk writes its batches in the order of their aggregate
// ids, so two bulk stores never wait for each other in a circle.
//
// # The feed, and why no reader skips a batch
//
// A sequence number taken when a batch is inserted would be unsafe: two
// transactions take 7 and 8, the one with 8 commits first, a reader sees 8
// and moves past 7, and 7 commits afterwards, skipped for good. Here a
// batch is inserted without a number, with its transaction's id
// (pg_current_xact_id, in batches.tx). A sequencer gives numbers
// afterwards, in one short transaction of its own: it takes an advisory
// lock (so sequencers take turns), and one statement, whose snapshot is
// taken after the lock, numbers the batches without a number that it sees
// (those that have committed), in (transaction id, id) order after the
// last number given, and writes their feed rows. Readers read numbered
// batches only. Where the batches without a number are is kept beside the
// last number (feed_counter, see below), so a run reads only them.
//
// No number falls behind one already given: each run starts after the
// last one's commit and numbers above the counter it left, and a run's
// numbers become visible together, at its commit. A batch that commits
// later gets a later number, whatever its transaction id. So nothing can
// appear behind a position a reader has passed.
// TestNoSkipWhenTheLowerCommitsLast forces the interleaving: the store
// with the lower transaction id commits last and is numbered after the
// other, which was in the feed as soon as it had committed.
//
// No transaction but a batch's own holds it back: an unrelated one, an
// idle-in-transaction session, a transaction in another database, even a
// store of ours that is still open (its own batches come when it
// commits) change nothing for the others (an earlier release waited for
// every transaction older than a batch, anywhere on the server).
//
// The feed is therefore in commit order, roughly (by numbering runs; in
// (transaction id, id) order within one), not in transaction order. One
// aggregate's batches are nonetheless always in version order, because
// the store path orders them. Version n+1 is inserted only from the row
// of version n seen by the inserting statement (storeExactly; storeAny
// from the last version, under the aggregate's lock taken exclusively, so
// that every earlier store of the aggregate has ended), and only when
// version n's transaction is older than the inserting one (tx <
// pg_current_xact_id()). The row is seen in a READ COMMITTED statement, so
// version n had committed before version n+1's transaction did; a
// sequencer's snapshot that holds n+1 as committed holds n too (PostgreSQL
// makes transactions visible in the order they end, and n ended first).
// So when a run sees n+1 without a number, n is either numbered already or
// numbered in the same run, where its lower transaction id sorts it first. A run
// that numbers a bounded chunk takes a prefix of that order (see below),
// so it never takes n+1 without n. A bulk store's batches all carry one
// transaction id, each of a different aggregate (a second version of one
// aggregate in the same transaction fails the older-transaction check,
// ErrConflict, and a retry goes through); a bulk store that took its
// transaction id before another writer stored the version it follows
// fails the same way, so its version cannot be numbered before its
// predecessor. A delete takes its target's lock exclusively (so no store
// of it is in flight) and the sequencers' lock, and deletes the target's
// batches; counts lose only the numbered ones (those not where the runs
// look, below). TestVersionsAscendUnderConcurrency races
// writers of all three kinds on a few aggregates.
//
// Writers never wait for the feed. After a commit, the transport's
// background sequencer numbers what has committed (commits arriving within
// 5 ms share one run, see WithSequencerDelay), and every WithSequencerInterval (100 ms by default)
// it looks for batches that other processes left without numbers. A
// batch is nevertheless in the feed once its Store has returned, for any
// reader in any process: ReadFeed, FeedHead and FeedOverview first check,
// in the same round trip as their query, whether a committed batch has no
// number, and if so run the sequencer themselves in that round trip before
// they read (again while a backlog takes more than one run); they never
// wait for another transaction. Sequence numbers are global to the
// database (unique and rising per tenant; a tenant's feed skips the
// others' numbers) and never reused. A run numbers at most 10,000 batches
// (more when one transaction alone stored more: a transaction's batches
// are never split), always a prefix of the batches without a number in
// (transaction id, id) order.
//
// A run looks for batches without a number only where they can be: at or
// past scan_from (kept in feed_counter: the end of the last run's
// snapshot, pg_snapshot_xmax, or where a chunked run stopped) and in
// scan_also (the transactions still open below it then, pg_snapshot_xip,
// and those a chunked run stopped before). Any other transaction below
// scan_from had ended by that snapshot, so its batches, if it committed,
// were visible to that run and numbered; and no batch at or past
// scan_from or in scan_also has a number. scan_from never goes back. A
// run reads an ordered, limited range of batches' (tx, id) index from
// scan_from, and the index entries of scan_also's transactions, so
// however many batches lie below, no run reads them (the run's
// transaction also forbids sequential scans;
// TestFeedPlansDoNotReadEveryBatch checks the plans). Feed reads check the
// same places. (Migration 4 kept a table of pending rows, written by every
// store and deleted when numbered; migration 5 dropped it: a store now
// writes its batch alone.)
//
// The guarantee needs stores to commit durably (synchronous_commit on or
// local, PostgreSQL's default). A run's own commit waits for the flush
// unless every transaction below the highest one it numbered has ended
// (the snapshot's xmin is above it): then what it numbered is all there
// will ever be below that id, a numbering lost in a crash (only one that
// no later commit flushed can be) comes out the same when the sequencer
// runs again, and the commit need not wait. Otherwise a store still open
// below it could commit before a crash and be numbered first the second
// time round, after a reader had seen (and checkpointed past) the lost
// numbers; so that run waits for its flush.
//
// A feed read that waits (FeedQuery.Wait) wakes when this process numbers
// batches and, through LISTEN/NOTIFY on the channel "<schema>_feed", when
// another process does; it never sleeps in a loop.
//
// Connection strings and passwords never appear in errors or logs.
//
// Experimental: this package's Go API is outside the compatibility promise
// (see README, "Compatibility") and may change in any minor version; its
// database schema is not: newer versions upgrade it in place through their
// migrations.
package postgres
