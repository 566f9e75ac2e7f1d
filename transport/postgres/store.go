package postgres

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/retry"
	"github.com/sourced-go/sourced/transport"
)

// failed maps an error of op to the port's errors. Errors before COMMIT
// mean nothing was stored (the server rolls back a transaction whose
// connection ends); an error during COMMIT leaves the outcome unknown.
func failed(op string, ref transport.Ref, err error, committing bool) error {
	var te *transport.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return te
	case committing:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			return transport.Wrap(redact(err), op, ref, transport.ErrAmbiguous)
		}
	}
	return transport.Wrap(redact(err), op, ref, transport.ErrUnavailable)
}

// isTransient reports a deadlock (40P01) or a serialization failure
// (40001): the server rolled the transaction back, nothing of it stayed,
// and the same transaction run again may well go through.
func isTransient(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// readTx sends the statements queue puts in b as one read-only
// REPEATABLE READ transaction in one round trip (one snapshot for all;
// never a serialization failure, whatever the session's default
// isolation), and lets read read their results.
func (t *Transport) readTx(ctx context.Context, queue func(b *pgx.Batch), read func(res pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	queue(b)
	b.Queue("COMMIT")
	res := t.pool.SendBatch(ctx, b)
	_, err := res.Exec()
	if err == nil {
		err = read(res)
	}
	if err == nil {
		_, err = res.Exec() // COMMIT
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	return err
}

// errPageFull stops reading rows once a page holds MaxPageBytes.
var errPageFull = errors.New("page full")

// Load implements transport.Transport. A page holds at most limit batches
// and, past its first batch, at most transport.MaxPageBytes of events.
func (t *Transport) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	const op = "load"
	if err := transport.CheckLoad(ref, since, limit); err != nil {
		return transport.Page{}, err
	}
	limit = transport.PageLimit(limit)
	page := transport.Page{Events: []transport.Event{}, Version: since}
	n, exists := 0, false // with since 0, no row means no aggregate
	err := t.readTx(ctx, func(b *pgx.Batch) {
		b.Queue(t.q.load, ref.Tenant, ref.Type, ref.ID, since, limit+1)
		if since > 0 {
			// Whether the aggregate exists, should nothing follow since.
			b.Queue(t.q.exists, ref.Tenant, ref.Type, ref.ID)
		}
	}, func(res pgx.BatchResults) error {
		rows, err := res.Query()
		if err != nil {
			return err
		}
		var version int64
		var payload, legacy []byte
		size := 0
		_, err = pgx.ForEachRow(rows, []any{&version, &payload, &legacy}, func() error {
			n++
			if n > limit {
				page.HasMore = true
				return errPageFull
			}
			first := len(page.Events)
			var err error
			if page.Events, err = decodePayload(page.Events, payload, legacy); err != nil {
				return err
			}
			for i := first; i < len(page.Events); i++ {
				size += transport.EventBytes(&page.Events[i])
			}
			if first > 0 && size > transport.MaxPageBytes {
				page.Events = page.Events[:first]
				page.HasMore = true
				return errPageFull
			}
			page.Version = version
			payload, legacy = nil, nil // the page keeps them
			return nil
		})
		if err != nil && !errors.Is(err, errPageFull) {
			return err
		}
		if since > 0 {
			return res.QueryRow().Scan(&exists)
		}
		return nil
	})
	if err != nil {
		return transport.Page{}, failed(op, ref, err, false)
	}
	if n == 0 && !exists {
		return transport.Page{}, transport.NewError(op, ref, transport.ErrNotFound)
	}
	return page, nil
}

// encoded is one batch ready to insert.
type encoded struct {
	ref     transport.Ref
	payload []byte
	types   []string
	count   int
	expect  transport.ExpectedVersion
	key     int64 // the aggregate's lock key
}

func (t *Transport) encode(ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) encoded {
	types := make([]string, len(events))
	for i := range events {
		types[i] = events[i].EventType
	}
	return encoded{ref: ref, payload: encodePayload(events), types: types, count: len(events), expect: expected, key: t.aggKey(ref)}
}

// storeSQL returns the statement and arguments that store b: one insert,
// which writes the batch only if its expected version holds (see the
// queries).
func (t *Transport) storeSQL(b encoded, now time.Time) (string, []any) {
	r := b.ref
	args := []any{r.Tenant, r.Type, r.ID, b.count, now, b.types, idHash(r.ID), b.payload}
	v, exact := b.expect.Value()
	switch {
	case !exact:
		return t.q.storeAny, args
	case v == 0:
		return t.q.storeNew, args
	}
	return t.q.storeExactly, append(args, v)
}

// conflict is the error of a store whose expected version did not match.
func conflict(op string, b encoded) error {
	e := transport.NewError(op, b.ref, transport.ErrConflict)
	e.Expected = b.expect
	return e
}

// isUniqueViolation reports a second writer of one version.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// retryPolicy is how long a store that may simply be run again (see
// writeOnce) waits between tries: from a millisecond, growing to 100 ms,
// for up to a minute (or the context's end).
func retryPolicy() backoff.BackOff {
	p := backoff.NewExponentialBackOff()
	p.InitialInterval, p.MaxInterval, p.MaxElapsedTime = time.Millisecond, 100*time.Millisecond, time.Minute
	return p
}

// write stores batches, all or none. A try that may simply be run again
// (a deadlock, a serialization failure, an Any store that lost a race) is,
// with backoff.
func (t *Transport) write(ctx context.Context, op string, ref transport.Ref, batches []encoded) error {
	return retry.Run(ctx, func() error {
		err, again := t.writeOnce(ctx, op, ref, batches)
		if err != nil && !again {
			return backoff.Permanent(err)
		}
		return err
	}, retryPolicy, func(err error, wait time.Duration) {
		t.log.Debug("postgres store tries again", zap.String("aggregate_type", ref.Type), zap.String("aggregate_id", ref.ID),
			zap.String("tenant", ref.Tenant), zap.Duration("wait", wait), zap.Error(err))
	})
}

// writeOnce stores batches once, under their locks (see lockOne) in a READ
// COMMITTED transaction whatever the session's default: after a lock
// wait, each statement sees what committed before it. One batch is one
// round trip (BEGIN, lock, insert and COMMIT in a pipeline); several share
// a transaction, locked and inserted in the order of their aggregate ids,
// so two bulk stores never wait for each other in a circle. again says the
// try may simply be run again. The sequencer is told once the batches are
// in; a feed reader does not wait for it (see settled).
func (t *Transport) writeOnce(ctx context.Context, op string, ref transport.Ref, batches []encoded) (err error, again bool) {
	now := t.now()
	// result classifies the outcome of batch b's insert.
	result := func(b encoded, tag pgconn.CommandTag, err error, sent bool) (error, bool) {
		switch {
		case err == nil && tag.RowsAffected() == 0:
			// No row to follow: the expected version is not the last one
			// (or, for Any, the last one is of a newer transaction).
			return conflict(op, b), b.expect.IsAny()
		case isUniqueViolation(err):
			return conflict(op, b), b.expect.IsAny()
		case isTransient(err):
			return failed(op, b.ref, err, false), true
		case err != nil:
			// Once the COMMIT was sent, the outcome is unknown unless the
			// server answered.
			return failed(op, b.ref, err, sent && !pgconn.SafeToRetry(err)), false
		}
		return nil, false
	}
	if len(batches) == 1 && t.beforeCommit == nil {
		b := batches[0]
		// Acquired apart, so that a failure to get a connection (nothing
		// sent) is told from one after the statements went out.
		conn, err := t.pool.Acquire(ctx)
		if err != nil {
			return failed(op, ref, err, false), false
		}
		defer conn.Release()
		lock := t.q.lockOne
		if b.expect.IsAny() {
			lock = t.q.lockAnyOne
		}
		sql, args := t.storeSQL(b, now)
		pb := &pgx.Batch{}
		pb.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
		pb.Queue(lock, t.typeKey(b.ref.Tenant, b.ref.Type), b.key)
		pb.Queue(sql, args...)
		pb.Queue("COMMIT")
		res := conn.SendBatch(ctx, pb)
		var tag pgconn.CommandTag
		if _, err = res.Exec(); err == nil { // BEGIN
			if _, err = res.Exec(); err == nil { // the locks
				if tag, err = res.Exec(); err == nil && tag.RowsAffected() > 0 {
					_, err = res.Exec() // COMMIT
				}
			}
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
		if conn.Conn().PgConn().TxStatus() != 'I' && !conn.Conn().IsClosed() {
			// A failed statement left the transaction open: end it here,
			// rather than lose the connection.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		err, again = result(b, tag, err, true)
		if err != nil {
			return err, again
		}
		t.stored()
		return nil, false
	}
	tx, err := t.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return failed(op, ref, err, false), isTransient(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	keys := make([]int64, 0, len(batches)+1)
	exclusive := make([]bool, 0, len(batches)+1)
	keys, exclusive = append(keys, t.typeKey(ref.Tenant, ref.Type)), append(exclusive, false)
	byKey := make([]encoded, len(batches))
	copy(byKey, batches)
	slices.SortFunc(byKey, func(a, b encoded) int { return cmp.Compare(a.key, b.key) })
	for _, b := range byKey {
		keys, exclusive = append(keys, b.key), append(exclusive, b.expect.IsAny())
	}
	if _, err := tx.Exec(ctx, t.q.lockMany, keys, exclusive); err != nil {
		return failed(op, ref, err, false), isTransient(err)
	}
	for i, b := range batches {
		if t.beforeBatch != nil {
			t.beforeBatch(i)
		}
		sql, args := t.storeSQL(b, now)
		tag, err := tx.Exec(ctx, sql, args...)
		if err, again := result(b, tag, err, false); err != nil {
			return err, again
		}
	}
	if t.beforeCommit != nil {
		t.beforeCommit(ctx, tx)
	}
	if err := tx.Commit(ctx); err != nil {
		return failed(op, ref, err, true), false
	}
	t.stored()
	return nil, false
}

// stored wakes the background sequencer after a commit.
func (t *Transport) stored() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Store implements transport.Transport: one transaction.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	return t.write(ctx, op, ref, []encoded{t.encode(ref, events, expected)})
}

// StoreBulk implements transport.Transport: every batch in one
// transaction, all or none, written in the order of their aggregate ids
// (whatever the caller's order), so that two bulk stores of the same
// aggregates never deadlock.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	enc := make([]encoded, len(batches))
	for i, b := range batches {
		enc[i] = t.encode(transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}, b.Events, b.Expected)
	}
	slices.SortFunc(enc, func(a, b encoded) int { return strings.Compare(a.ref.ID, b.ref.ID) })
	return t.write(ctx, op, sref, enc)
}

// Exists implements transport.Transport.
func (t *Transport) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	const op = "exists"
	if err := transport.CheckExists(ref); err != nil {
		return false, err
	}
	var ok bool
	err := t.readTx(ctx, func(b *pgx.Batch) { b.Queue(t.q.exists, ref.Tenant, ref.Type, ref.ID) },
		func(res pgx.BatchResults) error { return res.QueryRow().Scan(&ok) })
	if err != nil {
		return false, failed(op, ref, err, false)
	}
	return ok, nil
}

// RequestDelete implements transport.Transport. The token is kept in the
// database, so it survives a restart; it expires after
// transport.DeleteTokenTTL by the database's clock (so processes whose
// clocks differ agree on it), and expired tokens are purged as new ones are
// issued.
func (t *Transport) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	const op = "request delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return "", err
	}
	token := uuid.NewString()
	// READ COMMITTED: two purges at once must not fail each other.
	err := pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, t.q.issueToken, token, target.Tenant, target.Type, target.ID, target.AllOfType,
			t.clockOffset().Microseconds(), transport.DeleteTokenTTL.Microseconds())
		return err
	})
	if err != nil {
		return "", failed(op, ref, err, false)
	}
	return token, nil
}

// ConfirmDelete implements transport.Transport: the token is redeemed and
// the target deleted in one transaction, under the target's lock taken
// exclusively: it waits for the stores of the target in flight (what they
// wrote is deleted too), and stores that come later wait for it, then
// find the target gone (a store that expected a version fails with
// ErrConflict). Nothing of a deleted aggregate remains or comes back.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	// READ COMMITTED: the counts read after the lock must be current.
	err := pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		var got string
		err := tx.QueryRow(ctx, t.q.redeemToken, token, target.Tenant, target.Type, target.ID, target.AllOfType, t.clockOffset().Microseconds()).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return transport.NewError(op, ref, transport.ErrBadDeleteToken)
		}
		if err != nil {
			return err
		}
		// The target's lock first, then the sequencers': no one holding
		// the sequencers' lock ever waits for a target's.
		if target.AllOfType {
			_, err = tx.Exec(ctx, t.q.lockDeleteType, t.typeKey(target.Tenant, target.Type))
		} else {
			_, err = tx.Exec(ctx, t.q.lockDeleteOne, t.typeKey(target.Tenant, target.Type), t.aggKey(ref))
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", t.q.lock); err != nil {
			return err
		}
		stmts, args := t.q.deleteOne, []any{target.Tenant, target.Type, target.ID}
		if target.AllOfType {
			stmts, args = t.q.deleteType, []any{target.Tenant, target.Type}
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return failed(op, ref, err, false)
	}
	t.log.Info("deleted", zap.String("target", target.String()), zap.String("tenant", target.Tenant))
	return nil
}

// List implements transport.Lister: aggregates ordered by id.
func (t *Transport) List(ctx context.Context, scope transport.Scope, skip, limit int) (transport.ListPage, error) {
	const op = "list"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckList(scope, skip, limit); err != nil {
		return transport.ListPage{}, err
	}
	limit = transport.PageLimit(limit)
	page := transport.ListPage{Aggregates: []transport.AggregateInfo{}}
	err := t.readTx(ctx, func(b *pgx.Batch) { b.Queue(t.q.list, scope.Tenant, scope.Type, skip, limit+1) }, func(res pgx.BatchResults) error {
		rows, err := res.Query()
		if err != nil {
			return err
		}
		var info transport.AggregateInfo
		_, err = pgx.ForEachRow(rows, []any{&info.AggregateID, &info.AggregateVersion, &info.LastUpdatedAt}, func() error {
			if len(page.Aggregates) == limit {
				page.HasMore = true
				return nil
			}
			info.AggregateType = scope.Type
			page.Aggregates = append(page.Aggregates, info)
			return nil
		})
		return err
	})
	if err != nil {
		return transport.ListPage{}, failed(op, sref, err, false)
	}
	return page, nil
}
