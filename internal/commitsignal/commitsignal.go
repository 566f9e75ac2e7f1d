// Package commitsignal wakes the feed readers of an in-process transport when
// a batch commits, so that a long-polling read never sleeps in a loop.
package commitsignal

import (
	"context"
	"sync"
	"time"

	"github.com/sourced-go/sourced/transport"
)

// Signal wakes waiting readers. A reader of one feed takes a channel from
// ChangedFeed and is woken only by commits that touch that feed (Notify), by
// Broadcast, or by Close; a reader that wants every commit takes one from
// Changed. The zero value is ready to use.
type Signal struct {
	mu    sync.Mutex
	any   chan struct{}                     // closed by every Notify and Broadcast
	feeds map[transport.Scope]chan struct{} // closed by the Notify that touches the feed
	done  chan struct{}                     // closed by Close
	err   error                             // Close's reason
}

// Changed returns a channel that is closed by the next Notify, Broadcast or
// Close, whatever it touches. Take it before looking at the store, so no
// commit between the look and the wait goes unnoticed.
func (s *Signal) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return s.done
	}
	if s.any == nil {
		s.any = make(chan struct{})
	}
	return s.any
}

// ChangedFeed returns a channel that is closed by the next Notify that
// touches feed (a tenant and an aggregate type, or transport.AllTypes), by
// the next Broadcast, or by Close. Take it before looking at the store.
func (s *Signal) ChangedFeed(feed transport.Scope) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return s.done
	}
	ch := s.feeds[feed]
	if ch == nil {
		if s.feeds == nil {
			s.feeds = make(map[transport.Scope]chan struct{})
		}
		ch = make(chan struct{})
		s.feeds[feed] = ch
	}
	return ch
}

// Notify says that a commit stored batches of the given aggregate types of
// tenant: it wakes the readers of those types' feeds, of the tenant's
// AllTypes feed, and of Changed. Readers of other feeds sleep on. Call it
// only after the commit succeeded.
func (s *Signal) Notify(tenant string, types ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.any != nil {
		close(s.any)
		s.any = nil
	}
	if len(s.feeds) == 0 {
		return
	}
	s.wakeLocked(transport.Scope{Tenant: tenant, Type: transport.AllTypes})
	for _, typ := range types {
		s.wakeLocked(transport.Scope{Tenant: tenant, Type: typ})
	}
}

func (s *Signal) wakeLocked(feed transport.Scope) {
	if ch := s.feeds[feed]; ch != nil {
		close(ch)
		delete(s.feeds, feed)
	}
}

// Broadcast wakes every reader, whatever it waits for: for a store that
// cannot tell which feeds a change touched.
func (s *Signal) Broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.any != nil {
		close(s.any)
		s.any = nil
	}
	for feed, ch := range s.feeds {
		close(ch)
		delete(s.feeds, feed)
	}
}

// Close wakes every reader at once, and every later one as soon as it
// waits; Err returns err from then on, and ReadFeed returns it. The first
// Close wins; later ones do nothing.
func (s *Signal) Close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return
	}
	s.err = err
	s.done = make(chan struct{})
	close(s.done)
	if s.any != nil {
		close(s.any)
		s.any = nil
	}
	for feed, ch := range s.feeds {
		close(ch)
		delete(s.feeds, feed)
	}
}

// Err returns the reason given to Close, or nil while the signal is open.
func (s *Signal) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Wait blocks until changed is closed (true), or deadline passes or ctx
// ends (false). A zero deadline returns false at once.
func Wait(ctx context.Context, changed <-chan struct{}, deadline time.Time) bool {
	if deadline.IsZero() {
		return false
	}
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-changed:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// ReadFeed answers a feed query from a store whose commits Notify s. It
// calls read; while the answer holds no entry and q.Wait allows, it waits
// for the next commit that touches q.Feed (or for ctx to end, or for s to
// close) and reads again, from the last sequence number read looked at
// (scanned), so entries the query filters out are not looked at twice.
// Once s is closed it returns Close's reason.
func ReadFeed(ctx context.Context, s *Signal, q transport.FeedQuery, read func(q transport.FeedQuery) (page transport.FeedPage, scanned int64, err error)) (transport.FeedPage, error) {
	var deadline time.Time
	if q.Wait > 0 {
		deadline = time.Now().Add(q.Wait)
	}
	for {
		if err := s.Err(); err != nil {
			return transport.FeedPage{}, err
		}
		changed := s.ChangedFeed(q.Feed)
		page, scanned, err := read(q)
		if err != nil {
			return transport.FeedPage{}, err
		}
		if len(page.Entries) > 0 || !Wait(ctx, changed, deadline) {
			return page, nil
		}
		q.Since = scanned
	}
}
