package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/pgtest"
)

var appliedLine = regexp.MustCompile(`(\d+) batches applied by this process`)

// TestPostgresProcessesShareTheList runs the example twice side by side on
// one PostgreSQL database (as two processes would: each its own pools and
// group member), then once more: the order list lives in PostgreSQL, the
// two share its partitions, and every batch is applied exactly once over
// all runs. It needs PostgreSQL binaries (skipped without, unless
// SOURCED_REQUIRE_POSTGRES=1).
func TestPostgresProcessesShareTheList(t *testing.T) {
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	defer cluster.Stop()
	pgtest.Need(t, cluster, err)
	url, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	none := func(string) string { return "" }

	applied := func(out string) int {
		m := appliedLine.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return n
	}
	var outs [2]bytes.Buffer
	errs := make(chan error, 2)
	for i := range outs {
		go func() { errs <- run(ctx, []string{"-postgres", url}, none, &outs[i]) }()
	}
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	for _, o := range outs {
		assert.Contains(t, o.String(), "events in PostgreSQL")
		assert.Contains(t, o.String(), `of group "order-list" (4 partitions)`)
	}
	assert.Equal(t, 8, applied(outs[0].String())+applied(outs[1].String()), "each of the 8 batches applied once, by one of the two")

	var third bytes.Buffer
	require.NoError(t, run(ctx, []string{"-postgres", url}, none, &third))
	assert.Equal(t, 4, applied(third.String()), "only the new batches")
	assert.Contains(t, third.String(), "all orders: 3, worth 3600.00 SEK, paid 3600.00 SEK, 3 shipped")

	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	var rows, parts int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT part) FROM order_list WHERE status = 'shipped' AND paid = amount").Scan(&rows, &parts))
	assert.Equal(t, 3, rows)
	var live int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM sourced_subscriptions.leases WHERE grp = 'order-list' AND owner IS NOT NULL").Scan(&live))
	assert.Zero(t, live, "every member left, handing its partitions over")
}
