package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/pgtest"
)

func TestStartAndConnect(t *testing.T) {
	ctx := context.Background()
	c, err := pgtest.Start(ctx)
	c = pgtest.Need(t, c, err)
	defer c.Stop()
	u, err := c.NewDatabase(ctx)
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "select 41+1").Scan(&n))
	require.Equal(t, 42, n)
}
