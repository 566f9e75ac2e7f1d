package subscription

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/sourced-go/sourced/subscription/internal/runinfo"
)

// ErrReset: a reset was refused (a negative position, no name, or a
// checkpoint store that cannot move a checkpoint back). Nothing was
// changed.
var ErrReset = errors.New("subscription reset refused")

// Resetter is implemented by a checkpoint store that can move checkpoints
// back (Save may refuse to: boltcheckpoint and pgcheckpoint never move a
// checkpoint back on Save). ResetTo sets the checkpoint of every name to
// seq (0: the start of the feed) in one step, and forgets which entry it
// stood on. It refuses, with an error wrapping ErrNameInUse and changing
// nothing, when one of the subscriptions runs, where the store can tell
// (MemoryCheckpoints and boltcheckpoint in this process, pgcheckpoint
// from a live consumer-group lease).
type Resetter interface {
	ResetTo(ctx context.Context, seq int64, names ...string) error
}

// PartitionName returns the checkpoint name of partition number of count
// of the subscription called name: name itself when count is 1 or less,
// else name with the suffix "#<number>/<count>" (see Partition).
func PartitionName(name string, count, number int) string {
	if count <= 1 {
		return name
	}
	return name + "#" + strconv.Itoa(number) + "/" + strconv.Itoa(count)
}

// Reset moves the checkpoint of the subscription called name (its Name(),
// with the partition suffix if any) to seq: 0 replays the whole feed, a
// sequence number replays what follows it. It moves a checkpoint back as
// well as forward; clear or rewind the read model first, as a replay
// applies the entries again. The subscription must not run: the store
// refuses when it can tell (Resetter). A store that is not a Resetter is
// reset through Save, and refused with ErrReset when its Save does not
// move the checkpoint back.
func Reset(ctx context.Context, cps Checkpoints, name string, seq int64) error {
	return reset(ctx, cps, seq, name)
}

// ResetGroup resets, like Reset, every partition of the subscription
// called name run as partitions partitions (a consumer group, or
// Partition options): the checkpoints name#0/N to name#N-1/N, all at once
// when the store is a Resetter. With pgcheckpoint, the group must have the
// subscription's name for a live member to be seen.
func ResetGroup(ctx context.Context, cps Checkpoints, name string, partitions int, seq int64) error {
	if partitions < 1 {
		return fmt.Errorf("%w: subscription %q: partition count %d must be at least 1", ErrReset, name, partitions)
	}
	names := make([]string, partitions)
	for i := range names {
		names[i] = PartitionName(name, partitions, i)
	}
	return reset(ctx, cps, seq, names...)
}

func reset(ctx context.Context, cps Checkpoints, seq int64, names ...string) error {
	if cps == nil {
		return fmt.Errorf("%w: nil checkpoint store", ErrReset)
	}
	if err := checkReset(seq, names); err != nil {
		return err
	}
	if r, ok := cps.(Resetter); ok {
		return r.ResetTo(ctx, seq, names...)
	}
	if c, ok := cps.(Claimer); ok {
		for _, name := range names {
			release, err := c.Claim(name)
			if err != nil {
				return fmt.Errorf("subscription %q: reset: %w", name, err)
			}
			defer release()
		}
	}
	for _, name := range names {
		if err := cps.Save(ctx, name, seq); err != nil {
			return fmt.Errorf("subscription %q: reset to %d: %w", name, seq, err)
		}
		got, _, err := cps.Load(ctx, name)
		if err != nil {
			return fmt.Errorf("subscription %q: reset to %d: %w", name, seq, err)
		}
		if got != seq {
			return fmt.Errorf("%w: subscription %q: the checkpoint store (%T) kept %d on a save of %d and is no Resetter", ErrReset, name, cps, got, seq)
		}
	}
	return nil
}

// checkReset validates the arguments of a reset, for Resetter
// implementations: errors wrap ErrReset.
func checkReset(seq int64, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("%w: no subscription named", ErrReset)
	}
	for _, name := range names {
		if name == "" {
			return fmt.Errorf("%w: empty subscription name", ErrReset)
		}
		if seq < 0 {
			return fmt.Errorf("%w: subscription %q: position %d is negative (0 is the start of the feed)", ErrReset, name, seq)
		}
	}
	return nil
}

// CheckReset validates the arguments of Resetter.ResetTo, for
// implementations outside this package: errors wrap ErrReset.
func CheckReset(seq int64, names ...string) error { return checkReset(seq, names) }

// RebuildingItself reports whether ctx is that of the subscription called
// name resetting its own checkpoint for a rebuild (OnStale(Rebuild)): a
// Resetter lets it reset the name it holds as it runs.
func RebuildingItself(ctx context.Context, name string) bool {
	info, ok := runinfo.From(ctx)
	return ok && info.Rebuilding && info.Name == name
}
