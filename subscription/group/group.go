// Package group shares the partitions of a subscription's feed among the
// live members of a consumer group: the same named subscription runs in
// several processes, and each partition is handled by exactly one of them
// at a time.
//
// Experimental: this API may change in any minor version.
//
// A Coordinator hands out partitions through leases. A member joins a
// group (a name and a fixed partition count, chosen by the first member
// that joins), then calls Sync regularly: Sync renews the member's leases,
// claims free or expired partitions up to its fair share, and names the
// ones it holds above that share so that it stops them and releases them.
// Every claim of a partition gets a new generation (a fencing token): a
// checkpoint store that checks it in the same transaction as the
// checkpoint write (see subscription/pgcheckpoint) makes sure that a member
// which lost a partition, paused past its lease and resumed, can never
// commit for that partition again.
//
// NewMemory is a coordinator for one process (tests, bolt deployments);
// subscription/pgcheckpoint has one over PostgreSQL for several processes.
// Run is the loop that keeps one subscription per held partition running:
//
//	err := group.Run(ctx, coord, "order-list", hostname, 8, func(p transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
//		cps := store.WithFence(fence) // pgcheckpoint: writes refused once the partition is lost
//		sub, err := subscription.New(feed, "order-list", cps, subscription.Partition(p.Count, p.Number))
//		if err != nil {
//			return nil, err
//		}
//		sub.OnEntry(cps.Apply(sub.Name(), apply))
//		return sub, nil
//	})
//
// A partition's subscription is stopped before its lease is released, and
// started only once its lease is claimed; a member that leaves releases
// every lease at once.
package group

import (
	"context"
	"errors"
	"fmt"
)

// fencedError is ErrFenced: its StopsSubscription tells package
// subscription (which cannot import this one) not to park the entry.
type fencedError struct{}

func (fencedError) Error() string { return "group: partition lease lost (fenced)" }

// StopsSubscription marks the error as one that stops a subscription.
func (fencedError) StopsSubscription() bool { return true }

var (
	// ErrPartitionCount: a member joined a group with a partition count
	// other than the one the group was created with.
	ErrPartitionCount = errors.New("group: partition count differs from the group's")
	// ErrFenced: a member tried to commit for a partition whose lease it
	// no longer holds (another member claimed it since). A subscription
	// handler failing with it stops the subscription (not retried, never
	// parked: the entry is not bad, the member lost the right to apply it).
	ErrFenced error = fencedError{}
	// ErrInvalid: Join was given an empty group or member name or a
	// partition count below 1.
	ErrInvalid = errors.New("group: invalid argument")
	// ErrClosed: the membership was closed.
	ErrClosed = errors.New("group: membership closed")
)

// Fence identifies one claim of one partition by one member: the
// Generation grows at every claim of the partition, so a commit carrying
// an older generation is refused.
type Fence struct {
	// Group is the consumer group's name.
	Group string
	// Member is the name the member joined with.
	Member string
	// Partition is the partition's number, from 0 to the group's count-1.
	Partition int
	// Generation is the claim's fencing token, positive.
	Generation int64
}

// IsZero reports whether f is the zero Fence (no fencing).
func (f Fence) IsZero() bool { return f == Fence{} }

// String describes the fence for errors and logs.
func (f Fence) String() string {
	return fmt.Sprintf("group %q partition %d generation %d (member %q)", f.Group, f.Partition, f.Generation, f.Member)
}

// State is what a member holds after a Sync.
type State struct {
	// Held are the partitions whose leases the member holds (renewed by
	// this Sync), in partition order, with their fences.
	Held []Fence
	// Surplus are the numbers of partitions among Held above the member's
	// fair share: stop their work, then Release them.
	Surplus []int
}

// Coordinator hands out the partitions of consumer groups.
type Coordinator interface {
	// Join makes member a member of group, which has partitions
	// partitions (the group is created with that count by its first
	// member; another count fails with ErrPartitionCount). The member
	// holds nothing until its first Sync.
	Join(ctx context.Context, group, member string, partitions int) (Membership, error)
}

// Membership is one member's place in a group. Its methods are safe for
// concurrent use.
type Membership interface {
	// Sync renews the member's heartbeat and leases, claims free and
	// expired partitions up to the member's fair share (the partitions
	// spread evenly over the live members), and reports what it holds.
	// Call it well within the lease time.
	Sync(ctx context.Context) (State, error)
	// Release gives up the leases of the partitions at once, so that
	// other members may claim them at their next Sync.
	Release(ctx context.Context, partitions ...int) error
	// Changed is signalled when a Sync may change what this member should
	// hold: a member joined or left, or partitions were released.
	Changed() <-chan struct{}
	// Close releases every lease and leaves the group (handing its
	// partitions over at once). Further calls fail with ErrClosed.
	Close(ctx context.Context) error
}

// Share returns how many of partitions the member at index i (0-based) of
// n live members, in name order, should hold: the partitions spread as
// evenly as they can, the first members taking one more when they do not
// divide evenly.
func Share(partitions, n, i int) int {
	if n <= 0 {
		return partitions
	}
	s := partitions / n
	if i < partitions%n {
		s++
	}
	return s
}

// CheckJoin validates Join's arguments, for Coordinator implementations:
// errors wrap ErrInvalid.
func CheckJoin(group, member string, partitions int) error {
	switch {
	case group == "":
		return fmt.Errorf("%w: empty group name", ErrInvalid)
	case member == "":
		return fmt.Errorf("%w: empty member name (group %q)", ErrInvalid, group)
	case partitions < 1:
		return fmt.Errorf("%w: group %q: partition count %d must be at least 1", ErrInvalid, group, partitions)
	}
	return nil
}

// PartitionCountError builds the error for a Join whose count differs
// from the group's: it wraps ErrPartitionCount.
func PartitionCountError(group string, stored, asked int) error {
	return fmt.Errorf("%w: group %q has %d partitions, joined with %d", ErrPartitionCount, group, stored, asked)
}
