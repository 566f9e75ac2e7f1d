package postgres_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestNoSkipWhenTheLowerCommitsLast forces the interleaving that breaks a
// feed numbered at insert: A opens its transaction first, B opens later and
// commits first, A commits last. No reader may see B and then, behind its
// position, A.
func TestNoSkipWhenTheLowerCommitsLast(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	a, b := transport.Ref{Type: "order", ID: uuid.NewString()}, transport.Ref{Type: "order", ID: uuid.NewString()}

	inTx, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	postgres.SetBeforeCommit(tr, func(ctx context.Context, tx pgx.Tx) {
		if first.CompareAndSwap(false, true) {
			close(inTx) // A has written its batch and holds its transaction open
			<-release
		}
	})
	aDone := make(chan error, 1)
	go func() {
		aDone <- tr.Store(ctx, a, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist)
	}()
	<-inTx

	// A reader tails the feed the whole time.
	var seen []transport.FeedEntry
	readerDone := make(chan error, 1)
	rctx, stopReader := context.WithCancel(ctx)
	go func() {
		since := int64(0)
		for len(seen) < 2 {
			p, err := tr.ReadFeed(rctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since, Wait: 10 * time.Second})
			if err != nil {
				readerDone <- err
				return
			}
			for _, e := range p.Entries {
				seen = append(seen, e)
				since = e.Sequence
			}
		}
		readerDone <- nil
	}()

	bDone := make(chan error, 1)
	go func() {
		bDone <- tr.Store(ctx, b, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist)
	}()
	// B has committed (its row is visible) but must not be in the feed
	// while the older A is open: wait until B's row is there, then look.
	require.Eventually(t, func() bool { ok, _ := tr.Exists(ctx, b); return ok }, 10*time.Second, time.Millisecond)
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	assert.Empty(t, p.Entries, "B is held back while the older transaction A is open")
	select {
	case err := <-bDone:
		t.Fatalf("B's Store returned (%v) before its batch could be in the feed", err)
	default:
	}

	close(release) // A commits last
	require.NoError(t, <-aDone)
	require.NoError(t, <-bDone)
	require.NoError(t, <-readerDone)
	stopReader()

	require.Len(t, seen, 2, "the reader saw both batches")
	assert.Equal(t, a.ID, seen[0].AggregateID, "A, opened first, is numbered first")
	assert.Equal(t, b.ID, seen[1].AggregateID)
	assert.Less(t, seen[0].Sequence, seen[1].Sequence)
}
