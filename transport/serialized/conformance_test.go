package serialized_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
	"github.com/sourced-go/sourced/transport/transporttest"
)

const (
	testAccess = "AKIA-test-access-7f3a"
	testSecret = "sk-test-secret-9c1e-do-not-log"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func zeroRetry(n uint64) serialized.Option {
	return serialized.WithRetry(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, n) })
}

// TestConformance runs the whole transport suite through this client,
// over loopback, against the real local server on a memory store.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	clocks := map[transport.Transport]*clock{}
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		srv := localserver.NewServer(memory.New(memory.WithClock(c.Now)), localserver.WithKeys(testAccess, testSecret))
		t.Cleanup(srv.Close)
		client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), zeroRetry(2))
		require.NoError(t, err)
		mu.Lock()
		clocks[client] = c
		mu.Unlock()
		return client
	}, transporttest.WithAdvance(func(t *testing.T, tr transport.Transport, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		clocks[tr].Add(d)
	}))
}
