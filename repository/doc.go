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
//   - After an ambiguous store, before running the command again, the
//     repository loads the one batch after N. If its first eventId is the
//     one it sent, the batch landed: Update reports success with version
//     N+1, and the command is not run again.
//   - If another batch holds version N+1, the ambiguous one can never land
//     (its expected version is gone): the repository forgets it and carries
//     on as after a conflict.
//   - If nothing holds N+1 yet, the request may still be in flight. The
//     repository keeps watching it: it runs the command again and stores
//     with expected version N. At most one of the two can land; if the old
//     one wins, the new one conflicts, and the next check finds the old
//     one's eventId and reports it as the success.
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
// the store, in stored order, never for a failed one. A publish error does
// not undo the commit: Update returns its Result together with an error
// wrapping ErrPublish.
package repository
