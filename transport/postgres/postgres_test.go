package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
	"github.com/sourced-go/sourced/transport/transporttest"
)

var (
	cluster  *pgtest.Cluster
	startErr error
	dbURL    string
	schemas  atomic.Int64
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	ctx := context.Background()
	cluster, startErr = pgtest.Start(ctx)
	if startErr == nil {
		dbURL, startErr = cluster.NewDatabase(ctx)
	}
	code := m.Run()
	cluster.Stop()
	os.Exit(code)
}

// database returns the test database's URL, or skips (fails in CI).
func database(t testing.TB) string {
	t.Helper()
	pgtest.Need(t, cluster, startErr)
	return dbURL
}

// fresh opens a transport on a schema of its own: an empty store.
func fresh(t testing.TB, opts ...postgres.Option) *postgres.Transport {
	t.Helper()
	return freshAt(t, database(t), opts...)
}

func freshAt(t testing.TB, url string, opts ...postgres.Option) *postgres.Transport {
	t.Helper()
	schema := fmt.Sprintf("t%d_%d", os.Getpid(), schemas.Add(1))
	tr, err := postgres.Open(context.Background(), url, append([]postgres.Option{postgres.WithSchema(schema), postgres.WithSequencerInterval(20 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// sameStore opens a second transport on tr's schema, as another process
// would.
func sameStore(t testing.TB, tr *postgres.Transport, opts ...postgres.Option) *postgres.Transport {
	t.Helper()
	other, err := postgres.Open(context.Background(), database(t), append([]postgres.Option{postgres.WithSchema(tr.Schema()), postgres.WithSequencerInterval(20 * time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	return other
}

func TestConformance(t *testing.T) {
	database(t)
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		return fresh(t, postgres.WithClock(now))
	})
}

// TestUnderRepeatableReadByDefault: a database, role or connection whose
// default isolation is REPEATABLE READ changes nothing: the sequencer,
// deletes and migrations pick READ COMMITTED themselves (with one snapshot
// for a whole transaction, a sequencer would number from a stale counter).
func TestUnderRepeatableReadByDefault(t *testing.T) {
	underDefaultIsolation(t, "repeatable read")
}

// underDefaultIsolation: under a default isolation of level, the
// conformance suite passes, and 8 writers (exact and any versions, alone
// and in bulk) beside 4 readers of the head and of an aggregate, in
// another transport on the same schema, see no error and end with every
// batch numbered.
func underDefaultIsolation(t *testing.T, level string) {
	url := database(t) + "&default_transaction_isolation=" + strings.ReplaceAll(level, " ", "%20")
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		return freshAt(t, url, postgres.WithClock(now))
	})

	tr := freshAt(t, url)
	other, err := postgres.Open(context.Background(), url, postgres.WithSchema(tr.Schema()), postgres.WithSequencerInterval(20*time.Millisecond))
	require.NoError(t, err)
	defer other.Close()
	var isolation string
	require.NoError(t, tr.Pool().QueryRow(context.Background(), "SHOW transaction_isolation").Scan(&isolation))
	require.Equal(t, level, isolation, "the setting took")
	ctx := context.Background()
	shared := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, shared, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	done := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			for v := range int64(25) {
				var err error
				switch {
				case w%4 == 3:
					err = tr.StoreBulk(ctx, ref.Scope(), []transport.Batch{
						{AggregateID: ref.ID, Events: []transport.Event{{EventType: "OrderPlaced"}}, Expected: transport.Exactly(v)},
						{AggregateID: shared.ID, Events: []transport.Event{{EventType: "OrderPaid"}}},
					})
				case w%2 == 1:
					err = tr.Store(ctx, shared, []transport.Event{{EventType: "OrderPaid"}}, transport.Any)
				default:
					err = tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.Exactly(v))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				var err error
				if r%2 == 0 {
					_, err = other.FeedHead(ctx, transport.Scope{Type: "order"})
				} else {
					_, err = other.Load(ctx, shared, 0, 0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	head, err := other.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	// 1 + 4 writers x 25 alone + 2 writers x 25 of 2 (bulk) + 2 x 25 (any).
	assert.Equal(t, int64(1+100+100+50), head)
}

// TestStoreWithAnEndedContextIsUnavailable: a store that could not even
// get a connection sent nothing, so it is ErrUnavailable (not ambiguous),
// and nothing is stored.
func TestStoreWithAnEndedContextIsUnavailable(t *testing.T) {
	tr := fresh(t)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	err := tr.Store(ended, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	assert.NotErrorIs(t, err, transport.ErrAmbiguous)
	assert.ErrorIs(t, err, context.Canceled)
	ok, err := tr.Exists(context.Background(), ref)
	require.NoError(t, err)
	assert.False(t, ok)
}
