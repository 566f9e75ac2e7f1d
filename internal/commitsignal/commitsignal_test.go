package commitsignal_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

func TestBroadcastWakesEveryWaiter(t *testing.T) {
	var s commitsignal.Signal
	a, b := s.Changed(), s.Changed()
	s.Broadcast()
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("a waiter was not woken")
		}
	}
	c := s.Changed()
	select {
	case <-c:
		t.Fatal("a channel taken after the broadcast is already closed")
	default:
	}
}

func TestWaitEnds(t *testing.T) {
	var s commitsignal.Signal
	assert.False(t, commitsignal.Wait(context.Background(), s.Changed(), time.Time{}), "no deadline: no wait")
	assert.False(t, commitsignal.Wait(context.Background(), s.Changed(), time.Now().Add(10*time.Millisecond)), "deadline passes")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, commitsignal.Wait(ctx, s.Changed(), time.Now().Add(time.Hour)), "ctx ends")
	ch := s.Changed()
	s.Broadcast()
	assert.True(t, commitsignal.Wait(context.Background(), ch, time.Now().Add(time.Hour)))
}

// ReadFeed reads again after a commit, from where the last read stopped
// looking.
func TestReadFeedReadsOnAfterACommit(t *testing.T) {
	var s commitsignal.Signal
	var sinces []int64
	calls := 0
	page, err := commitsignal.ReadFeed(context.Background(), &s, transport.FeedQuery{Since: 3, Wait: time.Minute},
		func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
			calls++
			sinces = append(sinces, q.Since)
			if calls == 1 {
				go s.Broadcast() // a commit while the read waits
				return transport.FeedPage{}, 9, nil
			}
			return transport.FeedPage{Entries: []transport.FeedEntry{{Sequence: 10}}}, 10, nil
		})
	require.NoError(t, err)
	assert.Len(t, page.Entries, 1)
	assert.Equal(t, []int64{3, 9}, sinces)
}
