// Package runinfo carries, in the context a subscription gives its
// handlers, what a checkpoint store's own handlers need to know about the
// running subscription (boltcheckpoint.Apply checks it before it applies
// anything).
package runinfo

import "context"

// Info describes the running subscription.
type Info struct {
	// Name is the subscription's Name() (with the partition suffix).
	Name string
	// Handlers is how many handlers it runs (entry, typed and all-event
	// handlers).
	Handlers int
	// Tenant is the tenant of the feed it reads ("" for the default
	// tenant), for the envelopes a page handler builds.
	Tenant string
	// Rebuilding is set while the subscription rebuilds after a stale
	// checkpoint: a checkpoint store's ResetTo lets it reset its own name,
	// which it holds as it runs.
	Rebuilding bool
}

type key struct{}

// With returns ctx carrying info.
func With(ctx context.Context, info Info) context.Context {
	return context.WithValue(ctx, key{}, info)
}

// From returns the Info ctx carries, and false outside a handler.
func From(ctx context.Context) (Info, bool) {
	info, ok := ctx.Value(key{}).(Info)
	return info, ok
}
