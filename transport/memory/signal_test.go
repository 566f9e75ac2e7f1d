package memory

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A commit wakes only the readers of the feeds it touched, and a failed
// store wakes nobody.
func TestCommitsWakeOnlyTheirFeeds(t *testing.T) {
	tr := New()
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	orders := tr.signal.ChangedFeed(transport.Scope{Type: "order"})
	payments := tr.signal.ChangedFeed(transport.Scope{Type: "payment"})
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	assert.True(t, woken(orders))
	assert.False(t, woken(payments), "a commit of orders leaves payment readers asleep")

	orders = tr.signal.ChangedFeed(transport.Scope{Type: "order"})
	all := tr.signal.ChangedFeed(transport.Scope{Type: transport.AllTypes})
	require.ErrorIs(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist), transport.ErrConflict)
	require.ErrorIs(t, tr.StoreBulk(ctx, ref.Scope(), []transport.Batch{{AggregateID: ref.ID, Events: []transport.Event{{EventType: "OrderPaid"}}, Expected: transport.Exactly(7)}}), transport.ErrConflict)
	assert.False(t, woken(orders), "a failed store wakes nobody")
	assert.False(t, woken(all))
}

// The store time never goes back for an aggregate, even when the clock does.
func TestStoredNeverGoesBackWithTheClock(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	now := base.Add(time.Hour)
	tr := New(WithClock(func() time.Time { return now }))
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	now = base
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(1)))
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.False(t, p.Entries[1].Stored.Before(p.Entries[0].Stored), "%s then %s", p.Entries[0].Stored, p.Entries[1].Stored)
}

// Deletes leave the feed readable around them: entries of other aggregates
// and types keep their numbers, freed blocks are skipped, the type index
// still finds the rest.
func TestFeedAfterDeletesAcrossBlocks(t *testing.T) {
	tr := New()
	ctx := context.Background()
	gone := transport.Ref{Type: "order", ID: uuid.NewString()}
	kept := transport.Ref{Type: "order", ID: uuid.NewString()}
	other := transport.Ref{Type: "invoice", ID: uuid.NewString()}
	n := 2*feedBlockSize + 10
	for i := 0; i < n; i++ {
		require.NoError(t, tr.Store(ctx, gone, []transport.Event{{EventType: "OrderPaid"}}, transport.Any))
	}
	require.NoError(t, tr.Store(ctx, kept, []transport.Event{{EventType: "OrderPlaced"}}, transport.Any))
	require.NoError(t, tr.Store(ctx, other, []transport.Event{{EventType: "InvoiceSent"}}, transport.Any))
	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(gone))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(gone), token))
	assert.Nil(t, tr.feeds[""].blocks[0], "a block left without entries is freed")

	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.Equal(t, int64(n+1), p.Entries[0].Sequence)
	assert.Equal(t, int64(n+2), p.Entries[1].Sequence)
	assert.False(t, p.HasMore)
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 1)
	assert.Equal(t, kept.ID, p.Entries[0].AggregateID)
	assert.False(t, p.HasMore)
	assert.Equal(t, int64(n+1), p.Head)

	token, err = tr.RequestDelete(ctx, transport.DeleteAllOfType(kept.Scope()))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(kept.Scope()), token))
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	assert.Empty(t, p.Entries)
	assert.False(t, p.HasMore)
	l, err := tr.List(ctx, kept.Scope(), 0, 0)
	require.NoError(t, err)
	assert.Empty(t, l.Aggregates)
}
