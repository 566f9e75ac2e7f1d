package commitsignal_test

import (
	"context"
	"errors"
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

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Notify wakes the readers of the feeds a commit touched (its types and the
// tenant's AllTypes), and no others.
func TestNotifyWakesOnlyTouchedFeeds(t *testing.T) {
	var s commitsignal.Signal
	order := s.ChangedFeed(transport.Scope{Tenant: "a", Type: "order"})
	all := s.ChangedFeed(transport.Scope{Tenant: "a", Type: transport.AllTypes})
	payment := s.ChangedFeed(transport.Scope{Tenant: "a", Type: "payment"})
	otherTenant := s.ChangedFeed(transport.Scope{Tenant: "b", Type: "order"})
	otherAll := s.ChangedFeed(transport.Scope{Tenant: "b", Type: transport.AllTypes})
	anything := s.Changed()

	s.Notify("a", "order")
	assert.True(t, closed(order))
	assert.True(t, closed(all))
	assert.True(t, closed(anything))
	assert.False(t, closed(payment), "another type of the same tenant sleeps on")
	assert.False(t, closed(otherTenant), "the same type of another tenant sleeps on")
	assert.False(t, closed(otherAll), "another tenant's _all sleeps on")

	s.Broadcast()
	assert.True(t, closed(payment))
	assert.True(t, closed(otherTenant))
	assert.True(t, closed(otherAll))
}

// Close wakes waiting readers at once and makes ReadFeed return its reason.
func TestCloseWakesReadersWithItsReason(t *testing.T) {
	var s commitsignal.Signal
	reason := errors.New("closed")
	started := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := commitsignal.ReadFeed(context.Background(), &s, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: time.Hour},
			func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
				select {
				case <-started:
				default:
					close(started)
				}
				return transport.FeedPage{}, q.Since, nil
			})
		done <- err
	}()
	<-started
	s.Close(reason)
	assert.ErrorIs(t, <-done, reason)
	assert.True(t, closed(s.Changed()), "a later waiter does not wait")
	assert.True(t, closed(s.ChangedFeed(transport.Scope{Type: "x"})))
	assert.ErrorIs(t, s.Err(), reason)
}

// A commit to the feed between a reader's look and its wait is never
// missed: the reader reads again at once instead of sleeping through it.
// A commit of the same type for another tenant does not wake it.
func TestCommitBetweenLookAndWaitIsNotMissed(t *testing.T) {
	var s commitsignal.Signal
	feed := transport.Scope{Tenant: "acme", Type: "order"}
	calls := 0
	page, err := commitsignal.ReadFeed(context.Background(), &s, transport.FeedQuery{Feed: feed, Wait: transport.MaxFeedWait},
		func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
			calls++
			if calls == 1 {
				s.Notify("acme", "order") // commits after the look, before the wait
				return transport.FeedPage{}, 0, nil
			}
			return transport.FeedPage{Entries: []transport.FeedEntry{{Sequence: 1}}}, 1, nil
		})
	require.NoError(t, err)
	assert.Len(t, page.Entries, 1)
	assert.Equal(t, 2, calls)

	acme := s.ChangedFeed(feed)
	all := s.ChangedFeed(transport.Scope{Tenant: "acme", Type: transport.AllTypes})
	s.Notify("globex", "order")
	assert.False(t, closed(acme), "another tenant's commit")
	assert.False(t, closed(all), "another tenant's commit")
	s.Notify("acme", "payment")
	assert.False(t, closed(acme), "another type's commit")
	assert.True(t, closed(all))
}
