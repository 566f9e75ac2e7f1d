package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/pgtest"
)

// TestRunOnPostgres serves from PostgreSQL, restarts, and finds the event
// again; the connection string stays out of the logs.
func TestRunOnPostgres(t *testing.T) {
	ctx := context.Background()
	cluster, err := pgtest.Start(ctx)
	cluster = pgtest.Need(t, cluster, err)
	defer cluster.Stop()
	url, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	id := uuid.NewString()
	for i, vars := range []map[string]string{nil, {"SOURCED_POSTGRES_URL": url}} {
		args := []string{"-addr", "127.0.0.1:0"}
		if i == 0 {
			args = append(args, "-postgres", url)
		}
		addr, logs := start(t, args, vars)
		if i == 0 {
			res, err := http.Post("http://"+addr+"/aggregates/order/"+id+"/events", "application/json",
				strings.NewReader(`{"events":[{"eventType":"OrderPlaced","data":{}}],"expectedVersion":0}`))
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, 200, res.StatusCode)
		} else {
			res, err := http.Head("http://" + addr + "/aggregates/order/" + id)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, 200, res.StatusCode, "the event is in the database")
		}
		assert.Contains(t, logs.String(), "postgres (schema sourced)")
		assert.NotContains(t, logs.String(), url)
	}
}
