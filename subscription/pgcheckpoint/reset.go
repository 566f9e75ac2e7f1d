package pgcheckpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/subscription"
)

// ResetTo implements subscription.Resetter: the checkpoints of names are
// set to seq (forgetting the entry they stood on) in one transaction. A
// name with the partition suffix "#<number>/<count>" is partition number
// of the consumer group of the name before the suffix, and a name without
// one partition 0 of the group of that name: while a member holds that
// partition's lease (not expired), the reset is refused with an error
// wrapping subscription.ErrNameInUse and nothing changes. The partition's
// lease row is locked until the reset commits, so no member claims it in
// between. (A subscription that runs outside a group, or in a group of
// another name, cannot be seen: stop it first.)
func (s *Store) ResetTo(ctx context.Context, seq int64, names ...string) error {
	if err := subscription.CheckReset(seq, names...); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, name := range names {
			if err := s.sameGroupCount(ctx, tx, name); err != nil {
				return err
			}
			if subscription.RebuildingItself(ctx, name) {
				// The subscription rebuilding itself holds its own
				// partition: its fence is checked instead.
				if err := s.checkFence(ctx, tx, s.fence); err != nil {
					return err
				}
			} else {
				grp, part := groupPartition(name)
				var member string
				err := tx.QueryRow(ctx, "SELECT member FROM "+s.s+".leases WHERE grp = $1 AND part = $2 AND owner IS NOT NULL AND expires_at > clock_timestamp() FOR UPDATE",
					grp, part).Scan(&member)
				if err == nil {
					return fmt.Errorf("%w: checkpoint %q: partition %d of group %q is held by member %q: stop the group before a reset", subscription.ErrNameInUse, name, part, grp, member)
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return err
				}
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".checkpoints AS c (name, seq, first_event_id) VALUES ($1, $2, NULL) "+
				"ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, first_event_id = NULL, updated_at = now()", name, seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, subscription.ErrNameInUse) && !errors.Is(err, subscription.ErrReset) {
		return fmt.Errorf("pgcheckpoint: resetting %q to %d: %w", names, seq, permanentIfFenced(err))
	}
	return err
}

// sameGroupCount refuses (ErrReset) a checkpoint name whose partition
// count (from its suffix, 1 without one) is not the count of the consumer
// group of that name: ResetGroup with the wrong count would write
// checkpoints no member reads, and the replay would never come.
func (s *Store) sameGroupCount(ctx context.Context, tx pgx.Tx, name string) error {
	grp, _ := groupPartition(name)
	count := 1
	if grp != name {
		_, cnt, _ := strings.Cut(name[len(grp)+1:], "/")
		count, _ = strconv.Atoi(cnt)
	}
	var stored int
	err := tx.QueryRow(ctx, "SELECT partitions FROM "+s.s+".groups WHERE name = $1", grp).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if stored != count {
		return fmt.Errorf("%w: checkpoint %q is of %d partition(s), but group %q has %d: use ResetGroup with the group's count", subscription.ErrReset, name, count, grp, stored)
	}
	return nil
}

// groupPartition returns the consumer group and partition a checkpoint
// name belongs to: the name before the suffix "#<number>/<count>" and the
// number, or the whole name and 0.
func groupPartition(name string) (string, int) {
	i := strings.LastIndexByte(name, '#')
	if i < 0 {
		return name, 0
	}
	num, cnt, ok := strings.Cut(name[i+1:], "/")
	if !ok {
		return name, 0
	}
	n, err1 := strconv.Atoi(num)
	c, err2 := strconv.Atoi(cnt)
	if err1 != nil || err2 != nil || c < 1 || n < 0 || n >= c {
		return name, 0
	}
	return name[:i], n
}

// CheckFence checks, inside a transaction of the caller's, that the view's
// fence (WithFence) is still the current claim of its partition, and holds
// the lease row against a claim until the transaction ends; it fails with
// group.ErrFenced otherwise (the zero Fence checks nothing). Use it where a
// partition's holder writes outside Apply: the clear function of
// subscription.Rebuild, so that a member paused past its lease cannot
// empty rows another member has rebuilt since.
func (s *Store) CheckFence(ctx context.Context, tx pgx.Tx) error {
	return s.checkFence(ctx, tx, s.fence)
}
