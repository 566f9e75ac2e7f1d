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
// processes may start at once. Tables: aggregates (one row per aggregate:
// its version), batches (one row per stored batch, its events as JSON text,
// passed through untouched), feed_counter, delete_tokens (so two-step
// deletes survive a restart) and schema_migrations.
//
// # Concurrency
//
// A store is one transaction: it moves the aggregate's row to the next
// version only if the expected version matches (a conditional UPDATE, or
// an INSERT for a new aggregate; the loser of a race gets ErrConflict) and
// inserts the batch. StoreBulk does every batch in one transaction. When
// the connection fails before COMMIT is sent the transaction never
// happened and the error is ErrUnavailable; when it fails during COMMIT the
// outcome is unknown and the error is ErrAmbiguous, which the repository
// resolves by reading the batch back.
//
// # The feed, and why no reader skips a batch
//
// A sequence number taken when a batch is inserted would be unsafe: two
// transactions take 7 and 8, the one with 8 commits first, a reader sees 8
// and moves past 7, and 7 commits afterwards, skipped for good. Here a
// batch is inserted without a number and with the id of its transaction
// (pg_current_xact_id). A sequencer gives numbers afterwards, in one short
// transaction of its own: it locks the feed_counter row (so sequencers take
// turns), takes the batches without a number whose transaction is older
// than the oldest transaction still running (pg_snapshot_xmin: every one
// of them has committed or rolled back, and no older one can commit
// later), and numbers them in transaction order. A number is therefore
// only ever given once everything before it is settled, and readers read
// numbered batches only: nothing can appear behind a position a reader has
// passed. TestNoSkipWhenTheLowerCommitsLast forces the bad interleaving.
//
// A Store returns once its batch has its number (it runs the sequencer
// itself, waiting if an older transaction is still open), so a batch is in
// the feed when Store returns, as on every transport. Every Transport also
// runs a sequencer in the background, every WithSequencerInterval (100 ms
// by default), for batches whose writer went away before numbering them. Sequence numbers are global to the database (unique
// and rising per tenant; a tenant's feed skips the others' numbers) and
// never reused. A long-running transaction anywhere in the database holds
// the feed back until it ends (its xid is the horizon): keep transactions
// short, and watch for idle-in-transaction sessions.
//
// A feed read that waits (FeedQuery.Wait) wakes when this process numbers
// batches and, through LISTEN/NOTIFY on the channel "<schema>_feed", when
// another process does; it never sleeps in a loop.
//
// Connection strings and passwords never appear in errors or logs.
package postgres
