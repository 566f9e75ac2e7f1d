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
// back exactly as given; never updated), feed
// (a narrow row per numbered batch), feed_counter, feed_stats,
// delete_tokens (so two-step deletes survive a restart) and
// schema_migrations.
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
// batch is inserted without a number and with the id of its transaction
// (pg_current_xact_id). A sequencer gives numbers afterwards, in one short
// transaction of its own: it takes an advisory lock (so sequencers take
// turns), takes the batches without a number whose transaction is older
// than the oldest transaction still running (pg_snapshot_xmin: every one
// of them has committed or rolled back, and no older one can commit
// later), and numbers them in transaction order. A number is therefore
// only ever given once everything before it is settled, and readers read
// numbered batches only: nothing can appear behind a position a reader has
// passed. TestNoSkipWhenTheLowerCommitsLast forces the bad interleaving.
// (A bulk store follows a version only when that version's transaction is
// older than its own, so an aggregate's versions are in order in the
// feed; otherwise it fails with ErrConflict, and a retry, in a newer
// transaction, goes through.)
//
// Writers never wait for the feed. After a commit, the transport's
// background sequencer numbers what has settled (commits arriving within
// 5 ms share one run, see WithSequencerDelay), and every WithSequencerInterval (100 ms by default)
// it looks for batches that other processes left without numbers. A
// batch is nevertheless in the feed once its Store has returned, for any
// reader in any process: ReadFeed, FeedHead and FeedOverview first check,
// in the same round trip as their query, whether some committed batch still
// lacks its number, and if so run the sequencer themselves and, while a
// transaction older than such a batch is still open, wait for it (up to
// 30 s or the context's end, then the read goes on without it and logs a
// warning). Sequence numbers are global to the database (unique and
// rising per tenant; a tenant's feed skips the others' numbers) and never
// reused. A long-running transaction anywhere on the server, in any
// database (transaction ids are the cluster's), holds the feed back until
// it ends (its xid is the horizon): keep transactions short, and watch for
// idle-in-transaction sessions.
//
// The feed is in transaction order, not commit order: of two batches that
// commit close together, the one whose transaction began first comes first.
// One aggregate's batches are always in version order.
//
// The guarantee needs stores to commit durably (synchronous_commit on or
// local, PostgreSQL's default): the sequencer's own commits need not wait
// for the flush because a numbering lost in a crash is given again to the
// same batches, which holds only if no batch it numbered can be lost.
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
