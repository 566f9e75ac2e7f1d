package pgcheckpoint_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
)

// ResetGroup with a partition count other than the group's is refused and
// changes nothing: it used to write checkpoints no member reads and
// report success, so the replay the user asked for (after clearing the
// read model, as Reset says to) never came.
func TestResetGroupOtherPartitionCountRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := fresh(t)
	for i := range 3 {
		require.NoError(t, s.Save(ctx, subscription.PartitionName("list", 3, i), 7))
	}
	m, err := s.Join(ctx, "list", "a", 3)
	require.NoError(t, err)
	require.NoError(t, m.Close(ctx)) // the group is stopped: its count stays
	for _, count := range []int{1, 2, 4} {
		err := subscription.ResetGroup(ctx, s, "list", count, 0)
		require.ErrorIs(t, err, subscription.ErrReset, "count %d", count)
		_, ok, err := s.Load(ctx, subscription.PartitionName("list", count, 0))
		require.NoError(t, err)
		assert.False(t, ok, "no checkpoint written under count %d", count)
	}
	for i := range 3 {
		seq, _, err := s.Load(ctx, subscription.PartitionName("list", 3, i))
		require.NoError(t, err)
		assert.Equal(t, int64(7), seq)
	}
	require.NoError(t, subscription.ResetGroup(ctx, s, "list", 3, 0), "the group's own count resets")
	require.NoError(t, subscription.Reset(ctx, s, "other", 0), "a name of no group resets")
}
