package pgcheckpoint_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

// A parked entry retried through a projection: applied once through the
// typed handlers, in the transaction that unparks it; a second retry finds
// nothing.
func TestProjectionRetryParked(t *testing.T) {
	s, _ := fresh(t)
	ctx := context.Background()
	p, ran := placedModel(t, s)
	tr := placed(t, 2)
	page, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: 1, Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Entries, 1)
	require.NoError(t, s.Park(ctx, "orders", page.Entries[0], errors.New("broken then")))

	require.NoError(t, p.Retry(ctx, "orders", 2))
	assert.Equal(t, 1, *ran)
	assert.Equal(t, map[int64]int{2: 2}, modelRows(t, s))
	parked, err := s.ListParked(ctx, "orders")
	require.NoError(t, err)
	assert.Empty(t, parked)
	assert.ErrorIs(t, p.Retry(ctx, "orders", 2), pgcheckpoint.ErrNotParked)
	assert.Equal(t, 1, *ran)
}
