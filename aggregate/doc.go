// Package aggregate is the domain side of sourced: an aggregate is a plain
// state struct S plus one typed handler per event type, registered with a
// single generic call.
//
//	type Order struct{ Placed bool; Amount int }
//	type OrderPlaced struct{ Amount int `json:"amount"` }
//
//	var orders = aggregate.MustNew[Order]("order",
//		aggregate.On(func(o *Order, e OrderPlaced) { o.Placed = true; o.Amount = e.Amount }),
//	)
//
// On registers the handler and the event's type name at once; the name is
// the Go type's name (OrderPlaced) unless OnNamed gives another, to match
// names already stored. A duplicate or malformed name is an error when the
// aggregate is defined, not later when history is loaded.
//
// A Root carries the aggregate type, id, version, state and the events
// recorded but not yet stored. Commands run on a Root and change state only
// by recording events: Record applies the handler at once and keeps the
// event, encoded once as JSON with a fresh eventId, for the repository to
// store.
//
// Hydration replays stored events one at a time (Replay), decoding each
// once into its registered Go type, so history is never held in memory as a
// whole. An unknown stored event type fails the load with an error naming
// the aggregate and the type, unless the definition says IgnoreUnknown or
// gives a DefaultHandler.
//
// This package imports no other package of sourced: the repository
// connects it to a transport.
package aggregate
