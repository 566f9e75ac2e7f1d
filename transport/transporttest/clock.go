package transporttest

import (
	"sync"
	"testing"
	"time"

	"github.com/sourced-go/sourced/transport"
)

// Clock is a settable clock, safe for concurrent use: give its Now to a
// transport under test and move it with Advance.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// RunWithClock is Run for transports that read time from an injected clock:
// newTransport receives a fresh clock's Now for each subtest, and the suite
// moves that clock itself, so delete-token expiry is checked too.
func RunWithClock(t *testing.T, newTransport func(t *testing.T, now func() time.Time) transport.Transport, opts ...Option) {
	var mu sync.Mutex
	clocks := map[transport.Transport]*Clock{}
	Run(t, func(t *testing.T) transport.Transport {
		c := NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		tr := newTransport(t, c.Now)
		mu.Lock()
		clocks[tr] = c
		mu.Unlock()
		return tr
	}, append(opts, WithAdvance(func(t *testing.T, tr transport.Transport, d time.Duration) {
		mu.Lock()
		c := clocks[tr]
		mu.Unlock()
		if c == nil {
			t.Fatalf("transporttest: no clock for this transport")
		}
		c.Advance(d)
	}))...)
}
