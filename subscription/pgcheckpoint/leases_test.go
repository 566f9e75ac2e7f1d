package pgcheckpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

func syncNow(t *testing.T, m group.Membership) group.State {
	t.Helper()
	st, err := m.Sync(context.Background())
	require.NoError(t, err)
	return st
}

func parts(st group.State) []int {
	var ps []int
	for _, f := range st.Held {
		ps = append(ps, f.Partition)
	}
	return ps
}

// expire moves a member's heartbeat and leases into the past, as if it had
// paused past its lease time: the database's clock decides, no sleeping.
func expire(t *testing.T, s *pgcheckpoint.Store, p *pgxpool.Pool, grp, member string) {
	t.Helper()
	ctx := context.Background()
	_, err := p.Exec(ctx, "UPDATE "+s.Schema()+".members SET expires_at = now() - interval '1 second' WHERE grp = $1 AND member = $2", grp, member)
	require.NoError(t, err)
	_, err = p.Exec(ctx, "UPDATE "+s.Schema()+".leases SET expires_at = now() - interval '1 second' WHERE grp = $1 AND member = $2", grp, member)
	require.NoError(t, err)
}

func TestLeasesClaimRenewRebalanceExpireHandOver(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	a, err := s.Join(ctx, "orders", "a", 4)
	require.NoError(t, err)
	st := syncNow(t, a)
	require.Equal(t, []int{0, 1, 2, 3}, parts(st))
	for _, f := range st.Held {
		assert.Equal(t, int64(1), f.Generation)
		assert.Equal(t, group.Fence{Group: "orders", Member: "a", Partition: f.Partition, Generation: 1}, f)
	}
	st = syncNow(t, a)
	assert.Equal(t, []int{0, 1, 2, 3}, parts(st), "renewed")
	assert.Equal(t, int64(1), st.Held[0].Generation, "a renewal keeps the generation")

	b, err := s.Join(ctx, "orders", "b", 4)
	require.NoError(t, err)
	assert.Empty(t, syncNow(t, b).Held, "nothing free")
	st = syncNow(t, a)
	require.Equal(t, []int{2, 3}, st.Surplus)
	require.NoError(t, a.Release(ctx, st.Surplus...))
	st = syncNow(t, b)
	require.Equal(t, []int{2, 3}, parts(st))
	assert.Equal(t, int64(2), st.Held[0].Generation)
	st = syncNow(t, a)
	assert.Equal(t, []int{0, 1}, parts(st))
	assert.Empty(t, st.Surplus)

	// b pauses past its lease: a takes everything, with new generations.
	expire(t, s, p, "orders", "b")
	st = syncNow(t, a)
	require.Equal(t, []int{0, 1, 2, 3}, parts(st))
	assert.Equal(t, int64(3), st.Held[2].Generation)
	// b resumes: it is a member again and gets its share through a's release.
	assert.Empty(t, syncNow(t, b).Held)
	st = syncNow(t, a)
	require.Equal(t, []int{2, 3}, st.Surplus)
	require.NoError(t, a.Release(ctx, 2, 3))
	assert.Equal(t, []int{2, 3}, parts(syncNow(t, b)))

	// a graceful Close hands over at once.
	require.NoError(t, a.Close(ctx))
	require.ErrorIs(t, a.Close(ctx), group.ErrClosed)
	_, err = a.Sync(ctx)
	require.ErrorIs(t, err, group.ErrClosed)
	assert.Equal(t, []int{0, 1, 2, 3}, parts(syncNow(t, b)))
	require.NoError(t, b.Close(ctx))
}

func TestLeasesPartitionCountMismatch(t *testing.T) {
	ctx := context.Background()
	s, _ := fresh(t)
	a, err := s.Join(ctx, "orders", "a", 4)
	require.NoError(t, err)
	defer a.Close(ctx)
	_, err = s.Join(ctx, "orders", "b", 3)
	require.ErrorIs(t, err, group.ErrPartitionCount)
	assert.Contains(t, err.Error(), `group "orders" has 4 partitions, joined with 3`)
	_, err = s.Join(ctx, "orders", "b", 0)
	require.ErrorIs(t, err, group.ErrInvalid)
}

func TestFencing(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY)")
	require.NoError(t, err)
	a, err := s.Join(ctx, "g", "a", 1)
	require.NoError(t, err)
	fa := syncNow(t, a).Held[0]
	cpa := s.WithFence(fa)
	assert.Equal(t, fa, cpa.Fence())
	ran := 0
	write := func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
		ran++
		_, err := tx.Exec(ctx, "INSERT INTO "+s.Schema()+".model (seq) VALUES ($1)", e.Sequence)
		return err
	}
	name := "model#0/1"
	require.NoError(t, cpa.Apply(name, write)(ctx, entry(1)))
	require.NoError(t, cpa.Save(ctx, name, 1))

	// a pauses past its lease; b claims the partition.
	b, err := s.Join(ctx, "g", "b", 1)
	require.NoError(t, err)
	expire(t, s, p, "g", "a")
	fb := syncNow(t, b).Held[0]
	assert.Equal(t, fa.Generation+1, fb.Generation)

	// a resumes: nothing it writes commits.
	err = cpa.Apply(name, write)(ctx, entry(2))
	require.ErrorIs(t, err, group.ErrFenced)
	assert.Equal(t, 1, ran, "the handler does not even run")
	require.ErrorIs(t, cpa.Save(ctx, name, 2), group.ErrFenced)
	require.ErrorIs(t, cpa.Park(ctx, name, entry(2), assert.AnError), group.ErrFenced)
	tx, err := p.Begin(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, s.SaveFenced(ctx, tx, name, subscription.Checkpoint{Sequence: 2}, fa), group.ErrFenced)
	require.NoError(t, tx.Rollback(ctx))
	seq, _, err := s.Load(ctx, name)
	require.NoError(t, err)
	assert.Equal(t, int64(1), seq)

	// b, the owner now, commits.
	require.NoError(t, s.WithFence(fb).Apply(name, write)(ctx, entry(2)))
	var n int
	require.NoError(t, p.QueryRow(ctx, "SELECT count(*) FROM "+s.Schema()+".model").Scan(&n))
	assert.Equal(t, 2, n)
	require.NoError(t, b.Close(ctx))
	require.NoError(t, a.Close(ctx))
}

// A member stopped in the middle of a fenced write holds its lease row
// locked: the others' Syncs neither wait for it nor claim that partition
// (which would overtake the write); they claim it once the lock goes.
func TestSyncSkipsALeaseLockedByAStoppedWrite(t *testing.T) {
	ctx := context.Background()
	s, p := fresh(t, pgcheckpoint.WithLeaseTime(2*time.Second))
	a, err := s.Join(ctx, "g", "a", 4)
	require.NoError(t, err)
	fa := syncNow(t, a).Held
	require.Len(t, fa, 4)

	// a stops past its lease, in the middle of its write of partition 0
	// (after the fence check, which its generation still passes).
	expire(t, s, p, "g", "a")
	stuck, err := p.Begin(ctx)
	require.NoError(t, err)
	defer stuck.Rollback(ctx)
	require.NoError(t, s.SaveFenced(ctx, stuck, "g#0/4", subscription.Checkpoint{Sequence: 1}, fa[0]))

	b, err := s.Join(ctx, "g", "b", 4)
	require.NoError(t, err)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := b.Sync(sctx)
	require.NoError(t, err, "the Sync does not wait for the stopped write")
	assert.Equal(t, []int{1, 2, 3}, parts(st))

	require.NoError(t, stuck.Commit(ctx)) // the write commits: it was first
	st = syncNow(t, b)
	assert.Equal(t, []int{0, 1, 2, 3}, parts(st))
	seq, _, err := s.Load(ctx, "g#0/4")
	require.NoError(t, err)
	assert.Equal(t, int64(1), seq)
	require.NoError(t, b.Close(ctx))
	require.NoError(t, a.Close(ctx))
}
