package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// openPostgres opens the PostgreSQL store named by -postgres or
// SOURCED_POSTGRES_URL. Neither the string nor its password is logged.
func openPostgres(ctx context.Context, url, schema string, log *zap.Logger) (transport.Transport, func(), string, error) {
	store, err := postgres.Open(ctx, url, postgres.WithSchema(schema), postgres.WithLogger(log))
	if err != nil {
		return nil, nil, "", err
	}
	return store, func() { _ = store.Close() }, "postgres (schema " + schema + ")", nil
}
