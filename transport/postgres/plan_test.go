package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// TestFeedPlansDoNotReadEveryBatch (issue 23): the numbering run and the
// readers' check look for batches without a number in batches' (tx, id)
// index, from scan_from on, however many numbered batches lie below. With
// 30,000 numbered batches analyzed, neither plan reads batches whole (a
// sequential scan), in the plan for the given values nor in the generic
// one that a prepared statement may switch to. The run's plan is made
// with the settings of its transaction (enable_seqscan off among them);
// the readers' check, with none.
func TestFeedPlansDoNotReadEveryBatch(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	backlog(t, tr.Pool(), tr.Schema(), 30000)
	_, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes}) // numbers them
	require.NoError(t, err)
	s := pgx.Identifier{tr.Schema()}.Sanitize()
	_, err = tr.Pool().Exec(ctx, "ANALYZE "+s+".batches")
	require.NoError(t, err)
	sequence, check := postgres.FeedQueries(tr)

	// plans explains sql, prepared, as executed with the literal values
	// args, in a transaction with settings.
	plans := func(t *testing.T, settings, sql, args string) {
		for i, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			name := fmt.Sprintf("plan_%d_%d", schemas.Add(1), i)
			tx, err := tr.Pool().Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, "SELECT set_config('plan_cache_mode', '"+mode+"', true)"+settings)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "PREPARE "+name+" AS "+sql)
			require.NoError(t, err)
			var plan strings.Builder
			rows, err := tx.Query(ctx, "EXPLAIN EXECUTE "+name+args)
			require.NoError(t, err)
			defer rows.Close()
			for rows.Next() {
				var line string
				require.NoError(t, rows.Scan(&line))
				plan.WriteString(line + "\n")
			}
			require.NoError(t, rows.Err())
			_, err = tx.Exec(ctx, "DEALLOCATE "+name)
			require.NoError(t, err)
			require.NotContains(t, plan.String(), "Seq Scan on batches", "%s:\n%s", mode, plan.String())
			require.Contains(t, plan.String(), "batches_tx_id", "%s:\n%s", mode, plan.String())
		}
	}
	t.Run("run", func(t *testing.T) {
		plans(t, ", set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)", sequence, "('chan', 'origin', 10000)")
	})
	t.Run("check", func(t *testing.T) { plans(t, "", check, "") })
}
