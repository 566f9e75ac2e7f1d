package group_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription/group"
)

// clock is a test clock moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func partitions(st group.State) []int {
	var ps []int
	for _, f := range st.Held {
		ps = append(ps, f.Partition)
	}
	return ps
}

func sync1(t *testing.T, m group.Membership) group.State {
	t.Helper()
	st, err := m.Sync(context.Background())
	require.NoError(t, err)
	return st
}

func TestShareSpreadsEvenly(t *testing.T) {
	assert.Equal(t, 4, group.Share(4, 1, 0))
	assert.Equal(t, []int{2, 1, 1}, []int{group.Share(4, 3, 0), group.Share(4, 3, 1), group.Share(4, 3, 2)})
	assert.Equal(t, []int{1, 1, 0}, []int{group.Share(2, 3, 0), group.Share(2, 3, 1), group.Share(2, 3, 2)})
}

func TestMemoryJoinClaimRebalanceRelease(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	c := group.NewMemory(clk.Now)
	a, err := c.Join(ctx, "orders", "a", 4)
	require.NoError(t, err)
	st := sync1(t, a)
	assert.Equal(t, []int{0, 1, 2, 3}, partitions(st))
	assert.Empty(t, st.Surplus)
	for _, f := range st.Held {
		assert.Equal(t, int64(1), f.Generation)
		assert.Equal(t, "orders", f.Group)
		assert.Equal(t, "a", f.Member)
	}

	b, err := c.Join(ctx, "orders", "b", 4)
	require.NoError(t, err)
	select {
	case <-a.Changed():
	default:
		t.Fatal("a was not told that b joined")
	}
	assert.Empty(t, sync1(t, b).Held, "nothing free yet")
	st = sync1(t, a)
	assert.Equal(t, []int{2, 3}, st.Surplus, "a gives up its surplus")
	require.NoError(t, a.Release(ctx, st.Surplus...))
	select {
	case <-b.Changed():
	default:
		t.Fatal("b was not told of the release")
	}
	st = sync1(t, b)
	assert.Equal(t, []int{2, 3}, partitions(st))
	assert.Equal(t, int64(2), st.Held[0].Generation, "a new claim, a new generation")
	st = sync1(t, a)
	assert.Equal(t, []int{0, 1}, partitions(st))
	assert.Empty(t, st.Surplus)

	// Graceful leave: b takes everything at once, no waiting for expiry.
	require.NoError(t, a.Close(ctx))
	assert.ErrorIs(t, a.Close(ctx), group.ErrClosed)
	_, err = a.Sync(ctx)
	assert.ErrorIs(t, err, group.ErrClosed)
	assert.Equal(t, []int{0, 1, 2, 3}, partitions(sync1(t, b)))
}

func TestMemoryLeaseExpiresAndFences(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	c := group.NewMemory(clk.Now, group.LeaseTime(10*time.Second))
	a, err := c.Join(ctx, "g", "a", 2)
	require.NoError(t, err)
	held := sync1(t, a).Held
	require.Len(t, held, 2)
	require.NoError(t, c.Check(held[0]))

	b, err := c.Join(ctx, "g", "b", 2)
	require.NoError(t, err)
	// a renews within its lease: b gets nothing until a gives up.
	clk.Add(9 * time.Second)
	assert.Empty(t, sync1(t, b).Held)
	clk.Add(9 * time.Second) // a renewed nothing for 18 s: its leases and membership expired
	st := sync1(t, b)
	assert.Equal(t, []int{0, 1}, partitions(st), "the live member takes the dead one's partitions")
	assert.ErrorIs(t, c.Check(held[0]), group.ErrFenced, "a's old claim is fenced")
	require.NoError(t, c.Check(st.Held[0]))

	// a resumes: it is a member again, gets its share back through b's release.
	st = sync1(t, a)
	assert.Empty(t, st.Held)
	st = sync1(t, b)
	assert.Equal(t, []int{1}, st.Surplus)
	require.NoError(t, b.Release(ctx, 1))
	st = sync1(t, a)
	require.Equal(t, []int{1}, partitions(st))
	assert.Equal(t, int64(3), st.Held[0].Generation)
}

func TestMemoryPartitionCountAndArguments(t *testing.T) {
	ctx := context.Background()
	c := group.NewMemory(nil)
	_, err := c.Join(ctx, "g", "a", 4)
	require.NoError(t, err)
	_, err = c.Join(ctx, "g", "b", 8)
	require.ErrorIs(t, err, group.ErrPartitionCount)
	assert.Contains(t, err.Error(), `group "g" has 4 partitions, joined with 8`)
	for _, tc := range []struct {
		g, m string
		n    int
	}{{"", "a", 1}, {"g", "", 1}, {"h", "a", 0}, {"h", "a", -1}} {
		_, err := c.Join(ctx, tc.g, tc.m, tc.n)
		assert.ErrorIs(t, err, group.ErrInvalid, "%+v", tc)
	}
}

func TestMemorySameNameTwiceIsTwoMembers(t *testing.T) {
	ctx := context.Background()
	c := group.NewMemory(newClock().Now)
	a1, err := c.Join(ctx, "g", "a", 2)
	require.NoError(t, err)
	st1 := sync1(t, a1)
	require.Len(t, st1.Held, 2)
	a2, err := c.Join(ctx, "g", "a", 2) // a restart under the same name
	require.NoError(t, err)
	require.NoError(t, a1.Close(ctx))
	st2 := sync1(t, a2)
	require.Len(t, st2.Held, 2)
	assert.ErrorIs(t, c.Check(st1.Held[0]), group.ErrFenced, "the old incarnation's claim is fenced")
}

func noRetry() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 0) }
