package pgcheckpoint_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
)

// BenchmarkApply: exactly-once apply, one transaction per entry (fence
// check, checkpoint read and write, one read-model row), beside its floor:
// the same row written in a transaction of its own.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	s, p := fresh(b)
	_, err := p.Exec(ctx, "CREATE TABLE "+s.Schema()+".model (seq bigint PRIMARY KEY, id text NOT NULL)")
	require.NoError(b, err)
	m, err := s.Join(ctx, "bench", "a", 1)
	require.NoError(b, err)
	defer m.Close(ctx)
	st, err := m.Sync(ctx)
	require.NoError(b, err)
	insert := "INSERT INTO " + s.Schema() + ".model (seq, id) VALUES ($1, $2)"
	e := entry(0)
	var seq int64
	b.Run("floor-insert-tx", func(b *testing.B) {
		for range b.N {
			seq++
			require.NoError(b, pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, insert, seq, e.AggregateID)
				return err
			}))
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	for _, bc := range []struct {
		name  string
		fence group.Fence
	}{{"unfenced", group.Fence{}}, {"fenced", st.Held[0]}} {
		b.Run(bc.name, func(b *testing.B) {
			apply := s.WithFence(bc.fence).Apply("bench-"+bc.name, func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
				_, err := tx.Exec(ctx, insert, e.Sequence, e.AggregateID)
				return err
			})
			for range b.N {
				seq++
				e.Sequence = seq
				require.NoError(b, apply(ctx, e))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
