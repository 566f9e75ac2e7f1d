package memory_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/transporttest"
)

// clock is a settable clock for delete-token expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestConformance(t *testing.T) {
	clocks := map[transport.Transport]*clock{}
	var mu sync.Mutex
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		tr := memory.New(memory.WithClock(c.Now))
		mu.Lock()
		clocks[tr] = c
		mu.Unlock()
		return tr
	}, transporttest.WithAdvance(func(t *testing.T, tr transport.Transport, d time.Duration) {
		mu.Lock()
		c := clocks[tr]
		mu.Unlock()
		require.NotNil(t, c)
		c.Add(d)
	}))
}
