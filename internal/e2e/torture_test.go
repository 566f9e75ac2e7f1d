package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

type ledger struct{ Entries int }

// Appended is one command's only event: its id says which command it was.
type Appended struct {
	Command string `json:"command"`
}

var ledgers = aggregate.MustNew[ledger]("ledger", aggregate.On(func(l *ledger, _ Appended) { l.Entries++ }))

// tortureSize is the short form in go test; SOURCED_TORTURE_COMMANDS sets
// the commands per writer for a longer run.
func tortureSize(t *testing.T) int {
	if s := os.Getenv("SOURCED_TORTURE_COMMANDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	if testing.Short() {
		return 3
	}
	return 12
}

// TestTorture: 32 writers run commands over HTTP against the local server
// while the network refuses connections, times out after sending, resets
// response bodies, answers 429, 500 and 503. Afterwards every command
// reported as successful is in the history exactly once, every command
// reported as failed is absent, and versions have no gaps.
func TestTorture(t *testing.T) { torture(t) }

// TestTortureWithCacheAndSnapshots is the same run with cached roots and
// snapshots every 5 versions: they may cost reloads, never correctness.
func TestTortureWithCacheAndSnapshots(t *testing.T) {
	torture(t, repository.WithCache(8), repository.WithSnapshots(snapshot.NewMemory(), 1, 5))
}

func torture(t *testing.T, opts ...repository.Option) {
	const writers, aggregates = 32, 4
	perWriter := tortureSize(t)
	srv := localserver.NewServer(memory.New(), localserver.WithKeys("k", "s"))
	defer srv.Close()

	faults := faultinject.NewRoundTripper(http.DefaultTransport.(*http.Transport).Clone(), faultinject.Random(20261122, 0.2,
		faultinject.Fail(nil),                                        // refused before sending
		faultinject.FailAfter(nil),                                   // timeout after sending: ambiguous for a store
		faultinject.ResetMidBody(16),                                 // connection reset mid-response
		faultinject.RateLimited(time.Now()),                          // 429
		faultinject.RespondWith(http.StatusServiceUnavailable, nil),  // 503
		faultinject.RespondWith(http.StatusInternalServerError, nil), // 500: ambiguous for a store
	))
	client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("k", "s"),
		serialized.WithHTTPClient(&http.Client{Transport: faults}),
		serialized.WithMaxRateLimitWait(0),
		serialized.WithRetry(func() backoff.BackOff {
			return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Millisecond), 6)
		}))
	require.NoError(t, err)
	repo := repository.New(client, ledgers, append([]repository.Option{repository.WithRetry(func() backoff.BackOff {
		return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Millisecond), 200)
	})}, opts...)...)

	ctx := context.Background()
	ids := make([]string, aggregates)
	clean := memoryFree(srv.URL)
	for i := range ids {
		ids[i] = uuid.NewString()
		_, err := repository.New(clean, ledgers).Create(ctx, ids[i], func(r *aggregate.Root[ledger]) error {
			return r.Record(Appended{Command: "create"})
		})
		require.NoError(t, err)
	}

	type outcome struct {
		aggregate string
		err       error
	}
	var mu sync.Mutex
	outcomes := map[string]outcome{}
	var succeeded, failed, ambiguous atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := 0; k < perWriter; k++ {
				cmdID := fmt.Sprintf("w%02d-c%03d", w, k)
				id := ids[(w+k)%aggregates]
				_, err := repo.Update(ctx, id, func(r *aggregate.Root[ledger]) error {
					return r.Record(Appended{Command: cmdID})
				})
				switch {
				case err == nil:
					succeeded.Add(1)
				case errors.Is(err, transport.ErrAmbiguous):
					ambiguous.Add(1)
				default:
					failed.Add(1)
				}
				mu.Lock()
				outcomes[cmdID] = outcome{aggregate: id, err: err}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()

	// Read the truth without faults.
	seen := map[string]int{}
	for _, id := range ids {
		var events []transport.Event
		var version int64
		for since := int64(0); ; {
			p, err := clean.Load(ctx, transport.Ref{Type: "ledger", ID: id}, since, 0)
			require.NoError(t, err)
			events = append(events, p.Events...)
			version = p.Version
			if !p.HasMore {
				break
			}
			since = p.Version
		}
		assert.Equal(t, int64(len(events)), version, "one event per batch, no version gaps in %s", id)
		for _, e := range events {
			var cmd string
			_, err := fmt.Sscanf(string(e.Data), `{"command":%q}`, &cmd)
			require.NoError(t, err, string(e.Data))
			seen[cmd]++
		}
	}
	lost, doubled, ghost := 0, 0, 0
	for cmd, o := range outcomes {
		switch n := seen[cmd]; {
		case n > 1:
			doubled++
		case o.err == nil && n == 0:
			lost++
		case o.err != nil && !errors.Is(o.err, transport.ErrAmbiguous) && n != 0:
			ghost++ // reported failed, yet stored
		}
	}
	stats := faults.Stats()
	t.Logf("writers=%d commands=%d succeeded=%d failed=%d ambiguous=%d | requests=%d faults=%d (refused/after=%d/%d status=%d reset=%d) | lost=%d doubled=%d failed-but-stored=%d",
		writers, writers*perWriter, succeeded.Load(), failed.Load(), ambiguous.Load(),
		stats.Calls, stats.Injected(), stats.Before, stats.After, stats.Status, stats.Reset, lost, doubled, ghost)
	assert.Zero(t, lost, "successful commands missing from the history")
	assert.Zero(t, doubled, "commands stored twice")
	assert.Zero(t, ghost, "commands reported failed but stored")
	assert.Positive(t, stats.After, "ambiguous failures were injected")
	assert.Positive(t, succeeded.Load())
}

// memoryFree is a client without faults, to read the truth.
func memoryFree(url string) *serialized.Client {
	c, err := serialized.New(serialized.WithBaseURL(url), serialized.WithKeys("k", "s"))
	if err != nil {
		panic(err)
	}
	return c
}
