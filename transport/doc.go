// Package transport is the port between a Repository and an event store.
//
// It plays the part database/sql/driver plays under database/sql: a small
// contract that an adapter implements, under the rich and safe front that
// package repository offers. A Transport stores and loads raw events of one
// aggregate at a time, in batches; it knows nothing of aggregates' Go types.
//
// The contract mirrors the Serialized Aggregates API:
//
//   - Load returns one page of batches after a version (since is exclusive),
//     at most limit batches, and says whether more follow.
//   - Store appends one batch atomically: the aggregate version rises by one
//     per batch, whatever the number of events in it. An ExpectedVersion
//     tells "no check" (Any), "must not exist yet" (Exactly(0)) and
//     "exactly N" apart.
//   - StoreBulk appends one batch to each of several aggregates of a type,
//     all or none.
//   - Exists, and a two-step delete (RequestDelete returns a token valid for
//     ten minutes; ConfirmDelete with that token deletes for good), for one
//     aggregate or every aggregate of a type.
//
// Two capabilities are optional, found with a type assertion: Lister lists
// the aggregates of a type, and Feeder exposes the feed, every stored batch
// in commit order with a sequence number, for read models and reactions
// (package subscription follows it).
//
// Every call is scoped to a tenant through Ref.Tenant (empty for the default
// tenant); one tenant never sees another's data.
//
// Failures are reported as *Error values that wrap one of the sentinel errors
// (ErrConflict, ErrNotFound, ...) so callers can use errors.Is for the kind
// and errors.As for the details. Names and ids are checked with
// ValidateAggregateType, ValidateEventType and ValidateID before anything is
// sent or stored.
//
// A transport written by a user proves it honours this contract by passing
// the conformance suite in package transporttest.
package transport
