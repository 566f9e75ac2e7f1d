// Package commitsignal wakes the feed readers of an in-process transport when
// a batch commits, so that a long-polling read never sleeps in a loop.
package commitsignal

import (
	"context"
	"sync"
	"time"

	"github.com/sourced-go/sourced/transport"
)

// Signal is a broadcast: every Broadcast wakes every reader that took a
// channel from Changed before it. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Changed returns a channel that is closed by the next Broadcast. Take it
// before looking at the store, so no commit between the look and the wait
// goes unnoticed.
func (s *Signal) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Broadcast wakes every reader waiting on a channel from Changed.
func (s *Signal) Broadcast() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
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

// ReadFeed answers a feed query from a store whose commits broadcast on s.
// It calls read; while the answer holds no entry and q.Wait allows, it waits
// for the next commit (or for ctx to end) and reads again, from the last
// sequence number read looked at (scanned), so entries the query filters
// out are not looked at twice.
func ReadFeed(ctx context.Context, s *Signal, q transport.FeedQuery, read func(q transport.FeedQuery) (page transport.FeedPage, scanned int64, err error)) (transport.FeedPage, error) {
	var deadline time.Time
	if q.Wait > 0 {
		deadline = time.Now().Add(q.Wait)
	}
	for {
		changed := s.Changed()
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
