package serialized_test

import (
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

func zeroRetry(n uint64) serialized.Option {
	return serialized.WithRetry(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, n) })
}

// TestConformance runs the whole transport suite through this client,
// over loopback, against the real local server on a memory store.
func TestConformance(t *testing.T) {
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		srv := localserver.NewServer(memory.New(memory.WithClock(now)), localserver.WithKeys(testAccess, testSecret))
		t.Cleanup(srv.Close)
		client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), zeroRetry(2))
		require.NoError(t, err)
		return client
	})
}
