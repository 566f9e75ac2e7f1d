// Package repository is the front of sourced: a Repository[S] loads an
// aggregate from a transport, runs a command on it, and stores the events
// the command recorded, with optimistic concurrency.
//
// It plays the part database/sql plays over database/sql/driver: the
// transport port stays minimal and the repository does the work around it:
// paging through history while hydrating, retrying on conflict, resolving
// ambiguous failures, publishing committed events.
//
// # Update and conflicts
//
// Update loads the aggregate, runs the command, and stores the recorded
// events with the loaded version as the expected version. If another writer
// got there first (transport.ErrConflict), Update waits (exponential
// backoff with jitter, bounded in attempts and time, honouring ctx), reloads
// and runs the command again on the fresh state. Only conflicts and
// ambiguous outcomes are retried; any other error, the command's own
// included, returns at once. A command that records nothing stores nothing.
//
// # Exactly-once appends under ambiguous failures
//
// A store can fail in a way that leaves its outcome unknown: the request
// went out, then the connection timed out or broke (transport.ErrAmbiguous).
// Resending blindly could store the events twice; giving up could report a
// failure for events that were stored. The repository resolves it instead:
//
//   - Every recorded event carries a client-chosen eventId, and every store
//     the repository makes uses an exact expected version N, so the batch
//     can only ever land as version N+1.
//   - After an ambiguous store, the repository sends the same batch again
//     (same eventIds, same expected version N), with backoff, until the
//     outcome is known. The first request and every resend expect N, so at
//     most one of them can land, now or later.
//   - A resend that succeeds is the success.
//   - A resend that conflicts means version N+1 is taken: the repository
//     loads it. If its first eventId is the one it sent, the batch landed:
//     Update reports success with version N+1, and the command is not run
//     again. If another batch holds it, none of ours can ever land (their
//     expected version is gone): the repository carries on as after a
//     conflict, and Update runs the command again on the fresh state.
//   - The command is never run again while a request of ours could still
//     land.
//
// So every Update that returns success stored its events exactly once, and
// every Update that returns an error other than ErrAmbiguous stored nothing.
// When the retry budget runs out while a batch is still unresolved, Update
// returns an error wrapping transport.ErrAmbiguous: only then is the
// outcome unknown, and the caller is told so.
//
// # Publishing
//
// With WithPublisher, the events of a successful store are published after
// the store, in stored order, never for a failed one, and each aggregate's
// batches in version order: a writer holds its version in the publisher's
// sequencer (an *eventbus.Bus's own, shared by every repository on the bus)
// from before its store until its publish is over. A write made by a sync
// subscriber during a publish, with the ctx the subscriber was given, is
// published right after that publish, in turn. A publish error does not
// undo the commit: Update returns its Result together with an error
// wrapping ErrPublish.
package repository
