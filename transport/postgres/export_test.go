package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetBeforeCommit makes every store call f just before COMMIT (tests only).
func SetBeforeCommit(t *Transport, f func(ctx context.Context, tx pgx.Tx)) { t.beforeCommit = f }
