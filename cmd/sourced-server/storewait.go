package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// opener opens the store the configuration names.
type opener func(ctx context.Context, c config, log *zap.Logger) (transport.Transport, func(), string, error)

// storeBackOff is the policy of the retries at start: from 200 ms up to 5 s
// between attempts, for wait in all.
func storeBackOff(wait time.Duration) backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = wait
	return b
}

// openWaiting opens the store, retrying under policy while the database
// cannot be reached (PostgreSQL still starting, or the network not up yet),
// so that a server started beside its database waits for it. Other errors
// (a bad connection string, a refused password, a schema newer than this
// binary) end the wait at once. It logs the first failure at Warn and the
// success after failures at Info, not every attempt.
func openWaiting(ctx context.Context, open opener, c config, log *zap.Logger, policy backoff.BackOff) (transport.Transport, func(), string, error) {
	var (
		backend  transport.Transport
		closeFn  func()
		desc     string
		attempts int
		began    = time.Now()
	)
	op := func() error {
		attempts++
		b, cl, d, err := open(ctx, c, log)
		if err == nil {
			backend, closeFn, desc = b, cl, d
			return nil
		}
		if ctx.Err() != nil || !unreachable(err) {
			return backoff.Permanent(err)
		}
		if attempts == 1 {
			log.Warn("store not reachable yet: waiting for it, not ready meanwhile", zap.Duration("store_wait", c.storeWait), zap.Error(err))
		}
		return err
	}
	err := backoff.Retry(op, backoff.WithContext(policy, ctx))
	if err != nil {
		if attempts > 1 && ctx.Err() == nil {
			return nil, nil, "", fmt.Errorf("store not reachable within -store-wait %s (%d attempts over %s): %w", c.storeWait, attempts, time.Since(began).Round(time.Millisecond), err)
		}
		return nil, nil, "", err
	}
	if attempts > 1 {
		log.Info("store reachable", zap.Int("attempts", attempts), zap.Duration("after", time.Since(began)))
	}
	return backend, closeFn, desc, nil
}

// unreachable reports whether err says the database could not be reached,
// which waiting may cure, rather than that it refused us.
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 57P03: the database system is starting up; 53300: too many
		// connections; 08xxx: connection exceptions. Authentication (28xxx),
		// a missing database (3D000) and the rest are answers, not outages.
		return pe.Code == "57P03" || pe.Code == "53300" || strings.HasPrefix(pe.Code, "08")
	}
	var ce *pgconn.ConnectError
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &ce) || errors.As(err, &oe) || errors.As(err, &de)
}
