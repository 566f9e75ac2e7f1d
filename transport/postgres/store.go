package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// errConflict stops a store transaction on a version mismatch.
var errConflict = errors.New("conflict")

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

// Load implements transport.Transport.
func (t *Transport) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	const op = "load"
	if err := transport.CheckLoad(ref, since, limit); err != nil {
		return transport.Page{}, err
	}
	limit = transport.PageLimit(limit)
	rows, err := t.pool.Query(ctx, t.q.load, ref.Tenant, ref.Type, ref.ID, since, limit+1)
	if err != nil {
		return transport.Page{}, failed(op, ref, err, false)
	}
	page := transport.Page{Events: []transport.Event{}, Version: since}
	n := 0
	var version int64
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&version, &data}, func() error {
		n++
		if n > limit {
			page.HasMore = true
			return nil
		}
		var batch []transport.Event
		if err := json.Unmarshal(data, &batch); err != nil {
			return err
		}
		page.Events = append(page.Events, batch...)
		page.Version = version
		return nil
	})
	if err != nil {
		return transport.Page{}, failed(op, ref, err, false)
	}
	if n == 0 {
		ok, err := t.Exists(ctx, ref)
		if err != nil {
			return transport.Page{}, err
		}
		if !ok {
			return transport.Page{}, transport.NewError(op, ref, transport.ErrNotFound)
		}
	}
	return page, nil
}

// encoded is one batch ready to insert.
type encoded struct {
	ref    transport.Ref
	data   []byte
	types  []string
	count  int
	expect transport.ExpectedVersion
}

func encode(ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) (encoded, error) {
	out := make([]transport.Event, len(events))
	types := make([]string, 0, len(events))
	for i, e := range events {
		if e.EventID == "" {
			e.EventID = uuid.NewString()
		}
		out[i] = e
		types = append(types, e.EventType)
	}
	data, err := json.Marshal(out)
	return encoded{ref: ref, data: data, types: types, count: len(events), expect: expected}, err
}

// storeSQL returns the statement and arguments that store b: one insert,
// which writes the batch only if its expected version holds (see the
// queries).
func (t *Transport) storeSQL(b encoded, now time.Time) (string, []any) {
	r := b.ref
	args := []any{r.Tenant, r.Type, r.ID, b.count, now, b.types, idHash(r.ID), b.data}
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

// write stores batches, all or none. A store whose expected version is
// Any and that loses a race for the next version tries again.
func (t *Transport) write(ctx context.Context, op string, ref transport.Ref, batches []encoded) error {
	for attempt := 0; ; attempt++ {
		err, raced := t.writeOnce(ctx, op, ref, batches)
		if !raced || attempt == 10 {
			return err
		}
	}
}

// writeOnce stores batches once. One batch is one statement in its own
// implicit transaction (one round trip); several share an explicit one.
// raced says an Any store lost a race and may simply try again. The
// sequencer is told once the batches are in; a feed reader does not wait
// for it (see settled).
func (t *Transport) writeOnce(ctx context.Context, op string, ref transport.Ref, batches []encoded) (err error, raced bool) {
	now := t.now()
	// insert runs one batch's statement on q; single says it is a
	// transaction of its own, which commits as the statement ends.
	insert := func(q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}, b encoded, single bool) (error, bool) {
		sql, args := t.storeSQL(b, now)
		tag, err := q.Exec(ctx, sql, args...)
		switch {
		case err == nil && tag.RowsAffected() == 0:
			// No row to follow: the expected version is not the last one
			// (or, for Any, the last one is of a newer transaction).
			return conflict(op, b), b.expect.IsAny()
		case isUniqueViolation(err):
			return conflict(op, b), b.expect.IsAny()
		case err != nil:
			// Once a statement of its own was sent, its outcome is unknown
			// unless the server answered.
			return failed(op, b.ref, err, single && !pgconn.SafeToRetry(err)), false
		}
		return nil, false
	}
	if len(batches) == 1 && t.beforeCommit == nil {
		// Acquired apart, so that a failure to get a connection (nothing
		// sent) is told from one after the statement went out.
		conn, err := t.pool.Acquire(ctx)
		if err != nil {
			return failed(op, ref, err, false), false
		}
		err, raced := insert(conn, batches[0], true)
		conn.Release()
		if err != nil {
			return err, raced
		}
		t.stored()
		return nil, false
	}
	tx, err := t.pool.Begin(ctx)
	if err != nil {
		return failed(op, ref, err, false), false
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for i, b := range batches {
		if t.beforeBatch != nil {
			t.beforeBatch(i)
		}
		if err, raced := insert(tx, b, false); err != nil {
			return err, raced
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
	b, err := encode(ref, events, expected)
	if err != nil {
		return transport.Wrap(err, op, ref, transport.ErrInvalid)
	}
	return t.write(ctx, op, ref, []encoded{b})
}

// StoreBulk implements transport.Transport: every batch in one
// transaction, all or none.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	enc := make([]encoded, len(batches))
	for i, b := range batches {
		var err error
		ref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}
		if enc[i], err = encode(ref, b.Events, b.Expected); err != nil {
			return transport.Wrap(err, op, ref, transport.ErrInvalid)
		}
	}
	return t.write(ctx, op, sref, enc)
}

// Exists implements transport.Transport.
func (t *Transport) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	const op = "exists"
	if err := transport.CheckExists(ref); err != nil {
		return false, err
	}
	var ok bool
	if err := t.pool.QueryRow(ctx, t.q.exists, ref.Tenant, ref.Type, ref.ID).Scan(&ok); err != nil {
		return false, failed(op, ref, err, false)
	}
	return ok, nil
}

// RequestDelete implements transport.Transport. The token is kept in the
// database, so it survives a restart; it expires after
// transport.DeleteTokenTTL.
func (t *Transport) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	const op = "request delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return "", err
	}
	token := uuid.NewString()
	_, err := t.pool.Exec(ctx, t.q.issueToken, token, target.Tenant, target.Type, target.ID, target.AllOfType, t.now().Add(transport.DeleteTokenTTL))
	if err != nil {
		return "", failed(op, ref, err, false)
	}
	return token, nil
}

// ConfirmDelete implements transport.Transport: the token is redeemed and
// the target deleted in one transaction.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	// READ COMMITTED: the counts read after the lock must be current.
	err := pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		var got string
		err := tx.QueryRow(ctx, t.q.redeemToken, token, target.Tenant, target.Type, target.ID, target.AllOfType, t.now()).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return transport.NewError(op, ref, transport.ErrBadDeleteToken)
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
	rows, err := t.pool.Query(ctx, t.q.list, scope.Tenant, scope.Type, skip, limit+1)
	if err != nil {
		return transport.ListPage{}, failed(op, sref, err, false)
	}
	page := transport.ListPage{Aggregates: []transport.AggregateInfo{}}
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
	if err != nil {
		return transport.ListPage{}, failed(op, sref, err, false)
	}
	return page, nil
}
