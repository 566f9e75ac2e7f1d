package postgres_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

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
