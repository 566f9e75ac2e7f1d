package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestPostgresMetrics: on PostgreSQL, /metrics carries the pool's
// statistics and the schema's version.
func TestPostgresMetrics(t *testing.T) {
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	cluster = pgtest.Need(t, cluster, err)
	defer cluster.Stop()
	dbURL, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0"}, map[string]string{"SOURCED_POSTGRES_URL": dbURL})
	require.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/readyz", "").status)
	var body string
	require.Eventually(t, func() bool {
		body = do("GET", "http://"+addr+"/metrics", "").body
		return metricValue(body, "sourced_schema_version") > 0
	}, 10*time.Second, 20*time.Millisecond, "the schema version is read")
	for _, name := range []string{"sourced_pg_pool_max_conns", "sourced_pg_pool_total_conns", "sourced_pg_pool_acquires_total", "sourced_store_reachable"} {
		assert.Positive(t, metricValue(body, name), name)
	}
	assert.GreaterOrEqual(t, metricValue(body, "sourced_schema_version"), 2.0)
	assert.Zero(t, metricValue(body, "sourced_pg_sequencer_failures_total"), "the sequencer's failures are exported (none here)")
}

// metricValue is the value of an unlabelled metric, or -1.
func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestStartWaitsForPostgres: the database's socket appears only after the
// server started; the server waits, not ready, and then serves.
func TestStartWaitsForPostgres(t *testing.T) {
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	cluster = pgtest.Need(t, cluster, err)
	defer cluster.Stop()
	dbURL, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	sockDir := u.Query().Get("host")
	if sockDir == "" || !filepath.IsAbs(sockDir) {
		t.Skip("needs the cluster pgtest starts on a Unix socket")
	}
	found, err := filepath.Glob(filepath.Join(sockDir, ".s.PGSQL.*"))
	require.NoError(t, err)
	var socks []string
	for _, f := range found {
		if !strings.HasSuffix(f, ".lock") {
			socks = append(socks, f)
		}
	}
	require.Len(t, socks, 1)
	later := t.TempDir()
	q := u.Query()
	q.Set("host", later)
	u.RawQuery = q.Encode()

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logs := &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(cctx, []string{"-addr", "127.0.0.1:0", "-store-wait", "2m"}, env(map[string]string{"SOURCED_POSTGRES_URL": u.String()}), logs, ready)
	}()
	addr := listeningAddr(t, logs, done)
	assert.Equal(t, http.StatusServiceUnavailable, do("GET", "http://"+addr+"/readyz", "").status, "not ready while the database is away")
	require.Eventually(t, func() bool { return countLines(logs.String(), "store not reachable yet") == 1 }, 20*time.Second, 10*time.Millisecond)
	// The database comes up.
	require.NoError(t, os.Symlink(socks[0], filepath.Join(later, filepath.Base(socks[0]))))
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("gave up: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("did not notice the database\n%s", logs)
	}
	assert.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/readyz", "").status)
	assert.Contains(t, logs.String(), `"msg":"store reachable"`)
	cancel()
	require.NoError(t, <-done)
}

// TestSchemaNewerThanBinaryRefused: a binary started against a database
// migrated past what it knows refuses to start, with a clear message, and
// does not wait for it to change.
func TestSchemaNewerThanBinaryRefused(t *testing.T) {
	if _, ok := any((*postgres.Transport)(nil)).(schemaChecker); !ok {
		t.Skip("the postgres transport has no CheckSchema yet")
	}
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	cluster = pgtest.Need(t, cluster, err)
	defer cluster.Stop()
	dbURL, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	store, err := postgres.Open(ctx, dbURL)
	require.NoError(t, err)
	require.NoError(t, store.Close())
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "INSERT INTO sourced.schema_migrations (version) VALUES (9999)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	began := time.Now()
	err = run(ctx, []string{"-addr", "127.0.0.1:0", "-store-wait", "1m"}, env(map[string]string{"SOURCED_POSTGRES_URL": dbURL}), &syncBuffer{}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "schema")
	assert.Less(t, time.Since(began), 30*time.Second, "refused at once, not waited for")
}
