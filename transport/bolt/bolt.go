package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"
	bbolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/deletetoken"
)

// Format is the file format this package writes and reads.
const Format = "2"

var (
	// ErrLocked: another process holds the file.
	ErrLocked = errors.New("event file is locked by another process")
	// ErrUnknownFormat: the file is not an event file of a known format.
	ErrUnknownFormat = errors.New("not an event file of a known format")
)

var (
	bucketMeta   = []byte("meta")
	bucketScopes = []byte("scopes")
	keyFormat    = []byte("format")
	keyAggMeta   = []byte("meta")
)

// Option configures Open.
type Option func(*Transport)

// WithClock sets the clock of delete tokens and update times.
func WithClock(now func() time.Time) Option {
	return func(t *Transport) {
		if now != nil {
			t.now = now
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(t *Transport) {
		if l != nil {
			t.log = l
		}
	}
}

// WithOpenTimeout bounds the wait for a file another process holds
// (default 2 s).
func WithOpenTimeout(d time.Duration) Option {
	return func(t *Transport) {
		if d > 0 {
			t.openTimeout = d
		}
	}
}

// Transport keeps events in a bbolt file. It implements transport.Transport
// and transport.Lister and is safe for concurrent use.
type Transport struct {
	db          *bbolt.DB
	path        string
	now         func() time.Time
	log         *zap.Logger
	openTimeout time.Duration

	tokens *deletetoken.Registry
	signal commitsignal.Signal // broadcast after every commit
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Lister    = (*Transport)(nil)
	_ transport.Feeder    = (*Transport)(nil)
)

// Open opens or creates the event file at path.
func Open(path string, opts ...Option) (*Transport, error) {
	t := &Transport{path: path, now: time.Now, log: zap.NewNop(), openTimeout: 2 * time.Second}
	for _, o := range opts {
		o(t)
	}
	t.tokens = deletetoken.New(t.now)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: t.openTimeout})
	switch {
	case errors.Is(err, bbolterrors.ErrTimeout):
		return nil, fmt.Errorf("open %s: %w (waited %s)", path, ErrLocked, t.openTimeout)
	case errors.Is(err, bbolterrors.ErrInvalid), errors.Is(err, bbolterrors.ErrVersionMismatch), errors.Is(err, bbolterrors.ErrChecksum):
		return nil, fmt.Errorf("open %s: %w: %v", path, ErrUnknownFormat, err)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			// A new file has no bucket at all; any other bbolt file is not ours.
			if err := tx.ForEach(func([]byte, *bbolt.Bucket) error { return ErrUnknownFormat }); err != nil {
				return fmt.Errorf("%w: a bbolt file without the format marker", ErrUnknownFormat)
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if err := meta.Put(keyFormat, []byte(Format)); err != nil {
				return err
			}
			if _, err = tx.CreateBucketIfNotExists(bucketFeeds); err != nil {
				return err
			}
			_, err = tx.CreateBucketIfNotExists(bucketScopes)
			return err
		}
		f := string(meta.Get(keyFormat))
		if f != Format && f != "1" {
			return fmt.Errorf("%w: format %q, this build reads %q (and upgrades \"1\")", ErrUnknownFormat, f, Format)
		}
		if tx.Bucket(bucketScopes) == nil {
			return fmt.Errorf("%w: no scopes bucket", ErrUnknownFormat)
		}
		if f == "1" {
			// Format 1 had no feed: build it, once.
			if err := migrateFeeds(tx); err != nil {
				return err
			}
			return meta.Put(keyFormat, []byte(Format))
		}
		if tx.Bucket(bucketFeeds) == nil {
			return fmt.Errorf("%w: no feeds bucket", ErrUnknownFormat)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	t.db = db
	return t, nil
}

// Close closes the file.
func (t *Transport) Close() error { return t.db.Close() }

// Path returns the file's path.
func (t *Transport) Path() string { return t.path }

func scopeKey(s transport.Scope) []byte { return []byte(s.Tenant + "\x00" + s.Type) }

func versionKey(v int64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(v))
	return k
}

type aggMeta struct {
	version int64
	updated time.Time
}

func readMeta(b *bbolt.Bucket) aggMeta {
	m := b.Get(keyAggMeta)
	if len(m) != 16 {
		return aggMeta{}
	}
	return aggMeta{version: int64(binary.BigEndian.Uint64(m[:8])), updated: time.Unix(0, int64(binary.BigEndian.Uint64(m[8:])))}
}

func writeMeta(b *bbolt.Bucket, m aggMeta) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[:8], uint64(m.version))
	binary.BigEndian.PutUint64(v[8:], uint64(m.updated.UnixNano()))
	return b.Put(keyAggMeta, v)
}

func aggregateBucket(tx *bbolt.Tx, ref transport.Ref) *bbolt.Bucket {
	scope := tx.Bucket(bucketScopes).Bucket(scopeKey(ref.Scope()))
	if scope == nil {
		return nil
	}
	return scope.Bucket([]byte(ref.ID))
}

func invalid(op string, ref transport.Ref, err error) error {
	return transport.Wrap(err, op, ref, transport.ErrInvalid)
}

func storeFailed(op string, ref transport.Ref, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return te
	}
	return transport.Wrap(err, op, ref, transport.ErrUnavailable)
}

func canceled(ctx context.Context, op string, ref transport.Ref) error {
	if err := ctx.Err(); err != nil {
		return transport.Wrap(err, op, ref, transport.ErrUnavailable)
	}
	return nil
}

// Load implements transport.Transport.
func (t *Transport) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	const op = "load"
	if err := transport.CheckLoad(ref, since, limit); err != nil {
		return transport.Page{}, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return transport.Page{}, err
	}
	limit = transport.PageLimit(limit)
	var page transport.Page
	err := t.db.View(func(tx *bbolt.Tx) error {
		b := aggregateBucket(tx, ref)
		if b == nil {
			return transport.NewError(op, ref, transport.ErrNotFound)
		}
		v := readMeta(b).version
		page.Events = []transport.Event{}
		if since >= v {
			page.Version = since
			return nil
		}
		to := min(since+int64(limit), v)
		c := b.Cursor()
		for k, val := c.Seek(versionKey(since + 1)); k != nil && len(k) == 8; k, val = c.Next() {
			if int64(binary.BigEndian.Uint64(k)) > to {
				break
			}
			// json.Unmarshal copies out of the memory map.
			var batch []transport.Event
			if err := json.Unmarshal(val, &batch); err != nil {
				return fmt.Errorf("batch %d is corrupt: %w", binary.BigEndian.Uint64(k), err)
			}
			page.Events = append(page.Events, batch...)
		}
		page.Version, page.HasMore = to, to < v
		return nil
	})
	if err != nil {
		return transport.Page{}, storeFailed(op, ref, err)
	}
	return page, nil
}

// encodeBatch assigns missing event ids and encodes the batch.
func encodeBatch(events []transport.Event) ([]byte, error) {
	out := make([]transport.Event, len(events))
	for i, e := range events {
		if e.EventID == "" {
			e.EventID = uuid.NewString()
		}
		out[i] = e
	}
	return json.Marshal(out)
}

// appendBatch writes one batch in tx, checking the expected version.
func (t *Transport) appendBatch(tx *bbolt.Tx, op string, ref transport.Ref, data []byte, events int, expected transport.ExpectedVersion, now time.Time) error {
	scope, err := tx.Bucket(bucketScopes).CreateBucketIfNotExists(scopeKey(ref.Scope()))
	if err != nil {
		return err
	}
	b := scope.Bucket([]byte(ref.ID))
	current := int64(0)
	if b != nil {
		current = readMeta(b).version
	}
	if !expected.Check(current) {
		e := transport.NewError(op, ref, transport.ErrConflict)
		e.Expected = expected
		return e
	}
	if b == nil {
		if b, err = scope.CreateBucket([]byte(ref.ID)); err != nil {
			return err
		}
	}
	if err := b.Put(versionKey(current+1), data); err != nil {
		return err
	}
	if err := addEvents(b, events); err != nil {
		return err
	}
	if err := recordFeed(tx, ref, current+1, now); err != nil {
		return err
	}
	return writeMeta(b, aggMeta{version: current + 1, updated: now})
}

// Store implements transport.Transport: one fsynced transaction per batch.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	data, err := encodeBatch(events)
	if err != nil {
		return invalid(op, ref, err)
	}
	now := t.now()
	err = t.db.Update(func(tx *bbolt.Tx) error { return t.appendBatch(tx, op, ref, data, len(events), expected, now) })
	if err != nil {
		return storeFailed(op, ref, err)
	}
	t.signal.Broadcast()
	return nil
}

// StoreBulk implements transport.Transport: every batch in one transaction.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	data := make([][]byte, len(batches))
	for i, b := range batches {
		var err error
		if data[i], err = encodeBatch(b.Events); err != nil {
			return invalid(op, sref, err)
		}
	}
	if err := canceled(ctx, op, sref); err != nil {
		return err
	}
	now := t.now()
	err := t.db.Update(func(tx *bbolt.Tx) error {
		for i, b := range batches {
			ref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}
			if err := t.appendBatch(tx, op, ref, data[i], len(b.Events), b.Expected, now); err != nil {
				return err // the transaction rolls back: all or nothing
			}
		}
		return nil
	})
	if err != nil {
		return storeFailed(op, sref, err)
	}
	t.signal.Broadcast()
	return nil
}

// Exists implements transport.Transport.
func (t *Transport) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	const op = "exists"
	if err := transport.CheckExists(ref); err != nil {
		return false, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return false, err
	}
	ok := false
	err := t.db.View(func(tx *bbolt.Tx) error {
		ok = aggregateBucket(tx, ref) != nil
		return nil
	})
	return ok, storeFailedOrNil(op, ref, err)
}

func storeFailedOrNil(op string, ref transport.Ref, err error) error {
	if err == nil {
		return nil
	}
	return storeFailed(op, ref, err)
}

// RequestDelete implements transport.Transport.
func (t *Transport) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	const op = "request delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return "", err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return "", err
	}
	return t.tokens.Issue(target), nil
}

// ConfirmDelete implements transport.Transport.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	if !t.tokens.Redeem(target, token) {
		return transport.NewError(op, ref, transport.ErrBadDeleteToken)
	}
	err := t.db.Update(func(tx *bbolt.Tx) error {
		scopes := tx.Bucket(bucketScopes)
		key := scopeKey(transport.Scope{Tenant: target.Tenant, Type: target.Type})
		if err := forgetFeed(tx, target); err != nil {
			return err
		}
		if target.AllOfType {
			if scopes.Bucket(key) == nil {
				return nil
			}
			return scopes.DeleteBucket(key)
		}
		scope := scopes.Bucket(key)
		if scope == nil || scope.Bucket([]byte(target.ID)) == nil {
			return nil
		}
		return scope.DeleteBucket([]byte(target.ID))
	})
	if err != nil {
		return storeFailed(op, ref, err)
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
	if err := canceled(ctx, op, sref); err != nil {
		return transport.ListPage{}, err
	}
	limit = transport.PageLimit(limit)
	page := transport.ListPage{Aggregates: []transport.AggregateInfo{}}
	err := t.db.View(func(tx *bbolt.Tx) error {
		sb := tx.Bucket(bucketScopes).Bucket(scopeKey(scope))
		if sb == nil {
			return nil
		}
		c := sb.Cursor()
		i := 0
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v != nil {
				continue // not a nested bucket
			}
			if i < skip {
				i++
				continue
			}
			if len(page.Aggregates) == limit {
				page.HasMore = true
				return nil
			}
			m := readMeta(sb.Bucket(k))
			page.Aggregates = append(page.Aggregates, transport.AggregateInfo{
				AggregateID: string(k), AggregateType: scope.Type, AggregateVersion: m.version, LastUpdatedAt: m.updated,
			})
			i++
		}
		return nil
	})
	if err != nil {
		return transport.ListPage{}, storeFailed(op, sref, err)
	}
	return page, nil
}
