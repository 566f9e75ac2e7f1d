package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bbolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/deletetoken"
)

// Format is the file format this package writes and reads. Files of
// formats "1" and "2" are upgraded once when opened.
const Format = "3"

var (
	// ErrLocked: the file is held by another process (after the bounded
	// wait of WithOpenTimeout), or is already open in this process.
	ErrLocked = errors.New("event file is locked")
	// ErrUnknownFormat: the file is not an event file of a known format.
	ErrUnknownFormat = errors.New("not an event file of a known format")
	// ErrDamaged: the file, or a record in it, is damaged: a file cut short
	// or empty, an aggregate record, a batch or a feed entry that does not
	// decode, a bucket that is missing. Errors of a damaged record are also
	// transport.ErrUnavailable and name the aggregate or the feed entry.
	ErrDamaged = errors.New("event file is damaged")
	// ErrClosed: the transport was closed. Calls after Close, and feed reads
	// waiting when it closes, fail with it (and transport.ErrUnavailable).
	ErrClosed = errors.New("event file is closed")
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
// (default 2 s). It must be positive: Open refuses 0 or less with
// transport.ErrInvalid (bbolt would wait forever).
func WithOpenTimeout(d time.Duration) Option {
	return func(t *Transport) {
		t.openTimeout = d
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
	release     func() // forgets the file in this process's registry

	tokens *deletetoken.Registry
	signal commitsignal.Signal // notified after every commit
	group  committer           // the queue of the group commit
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Lister    = (*Transport)(nil)
	_ transport.Feeder    = (*Transport)(nil)
)

// openFiles are the event files open in this process, by absolute path.
// bbolt locks a file per open file description, so a second Open of the same
// file in one process would wait for itself and then blame "another
// process"; this registry lets Open say what happened. It is process state
// by nature, like the file locks themselves.
var openFiles = struct {
	sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

func claim(path string) (release func(), ok bool) {
	abs := canonical(path)
	openFiles.Lock()
	defer openFiles.Unlock()
	if openFiles.paths[abs] {
		return nil, false
	}
	openFiles.paths[abs] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			openFiles.Lock()
			delete(openFiles.paths, abs)
			openFiles.Unlock()
		})
	}, true
}

// canonical names the file at path as the registry knows it: absolute,
// with symbolic links resolved (in the directory too, when the file does
// not exist yet), so that another name of an open file is still the file.
func canonical(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = filepath.Clean(path)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(dir, filepath.Base(abs))
	}
	return abs
}

// Open opens or creates the event file at path. Before bbolt maps an
// existing file, Open checks it against its meta pages: an empty file or one
// shorter than they say fails with ErrDamaged, a file that is no bbolt file
// with ErrUnknownFormat. A file another process holds fails with ErrLocked
// after WithOpenTimeout, one already open in this process at once. Errors
// name the path once.
func Open(path string, opts ...Option) (*Transport, error) {
	t, err := open(path, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return t, nil
}

func open(path string, opts []Option) (*Transport, error) {
	t := &Transport{path: path, now: time.Now, log: zap.NewNop(), openTimeout: 2 * time.Second}
	for _, o := range opts {
		o(t)
	}
	if t.openTimeout <= 0 {
		return nil, fmt.Errorf("%w: WithOpenTimeout needs a positive duration, got %s", transport.ErrInvalid, t.openTimeout)
	}
	t.tokens = deletetoken.New(t.now)
	release, ok := claim(path)
	if !ok {
		return nil, fmt.Errorf("%w: it is already open in this process; share that *bolt.Transport, or Close it first", ErrLocked)
	}
	db, err := openDB(path, t.openTimeout)
	if err != nil {
		release()
		return nil, err
	}
	if err := guard(func() error { return db.Update(prepare) }); err != nil {
		_ = db.Close()
		release()
		return nil, err
	}
	t.db, t.release = db, release
	return t, nil
}

// openDB checks the file, then lets bbolt open it.
func openDB(path string, timeout time.Duration) (*bbolt.DB, error) {
	exists, err := checkFile(path)
	if err != nil {
		return nil, pathless(err)
	}
	if !exists {
		if err := create(path); err != nil {
			return nil, pathless(err)
		}
	}
	var db *bbolt.DB
	err = guard(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
		return err
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bbolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w by another process (waited %s)", ErrLocked, timeout)
	case errors.Is(err, bbolterrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	case errors.Is(err, bbolterrors.ErrInvalid), errors.Is(err, bbolterrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %v", ErrUnknownFormat, err)
	}
	return nil, pathless(err)
}

// create makes a new event file whole or not at all: it is written under
// a temporary name beside path and linked into place once complete, so a
// crash while creating leaves no file at path (perhaps a stray temporary
// one), never an empty or half-made one, which Open would refuse. When
// another process created the file first, its file stands.
func create(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_ = tmp.Close()
	defer os.Remove(name)
	db, err := bbolt.Open(name, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(prepare)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(name, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // another process was first
		}
		// A file system without hard links: rename, which would replace a
		// file created meanwhile, so look once more first.
		if _, serr := os.Stat(path); serr == nil {
			return nil
		}
		if err := os.Rename(name, path); err != nil {
			return err
		}
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a new name in dir durable (Windows cannot sync a
// directory, and needs not).
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// pathless drops the path from an *fs.PathError: Open names it already.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// prepare makes a new file an event file, checks an existing one and
// upgrades an older format.
func prepare(tx *bbolt.Tx) error {
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
	if f != Format && f != "1" && f != "2" {
		return fmt.Errorf("%w: format %q, this build reads %q (and upgrades \"1\" and \"2\")", ErrUnknownFormat, f, Format)
	}
	if tx.Bucket(bucketScopes) == nil {
		return fmt.Errorf("%w: no scopes bucket", ErrUnknownFormat)
	}
	if f != "1" && tx.Bucket(bucketFeeds) == nil {
		return fmt.Errorf("%w: no feeds bucket", ErrUnknownFormat)
	}
	if f == Format {
		return nil
	}
	if err := upgrade(tx, f); err != nil {
		return err
	}
	return meta.Put(keyFormat, []byte(Format))
}

// guard runs fn, which reads or writes the file through bbolt, and turns a
// panic or a memory fault of bbolt into ErrDamaged: bbolt trusts the pages
// it maps, and a byte changed on disk in a page header (a page number, a
// count, a type) makes it panic, or read outside the map, which would
// otherwise kill the process. A write transaction that panics is rolled
// back by bbolt.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt failed on a page of the file: %v", ErrDamaged, r)
		}
	}()
	return fn()
}

// view runs fn in a read transaction, guarded.
func (t *Transport) view(fn func(tx *bbolt.Tx) error) error {
	return guard(func() error { return t.db.View(fn) })
}

// update runs fn in a write transaction, guarded.
func (t *Transport) update(fn func(tx *bbolt.Tx) error) error {
	return guard(func() error { return t.db.Update(fn) })
}

// Close closes the file. Feed reads waiting for a commit return at once
// with ErrClosed; later calls fail with it.
func (t *Transport) Close() error {
	t.signal.Close(ErrClosed)
	err := t.db.Close()
	t.release()
	return err
}

// Path returns the file's path.
func (t *Transport) Path() string { return t.path }

// DB returns the transport's bbolt database, for a read model kept in the
// same file (its checkpoint written in the same transaction as its rows).
// Use your own buckets: "meta", "scopes" and "feeds" are the transport's,
// never write to them. Do not Close the DB (Close the Transport), and keep
// write transactions short: the transport's Store waits for them.
func (t *Transport) DB() *bbolt.DB { return t.db }

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

// readMeta reads an aggregate's record: a record that does not decode is
// damage, never an aggregate at version 0.
func readMeta(b *bbolt.Bucket, typ string, id []byte) (aggMeta, error) {
	m := b.Get(keyAggMeta)
	if len(m) != 16 {
		return aggMeta{}, fmt.Errorf("%w: the record of aggregate %s/%s is %d bytes, not 16", ErrDamaged, typ, id, len(m))
	}
	return aggMeta{version: int64(binary.BigEndian.Uint64(m[:8])), updated: fromUnixNano(int64(binary.BigEndian.Uint64(m[8:])))}, nil
}

// checkVersion refuses an aggregate record that says less than the
// batches kept: the batch after its version must not exist (a record whose
// version went down on disk would end Load early and let Store write over
// a batch).
func checkVersion(b *bbolt.Bucket, typ string, id []byte, m aggMeta) error {
	if b.Get(versionKey(m.version+1)) != nil {
		return fmt.Errorf("%w: the record of aggregate %s/%s says version %d, but batch %d is there", ErrDamaged, typ, id, m.version, m.version+1)
	}
	return nil
}

func writeMeta(b *bbolt.Bucket, m aggMeta) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[:8], uint64(m.version))
	binary.BigEndian.PutUint64(v[8:], uint64(unixNano(m.updated)))
	return b.Put(keyAggMeta, v)
}

// rootBucket returns one of the file's root buckets; one that is missing is
// damage (somebody wrote to the file through DB), never a panic.
func rootBucket(tx *bbolt.Tx, name []byte) (*bbolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: the %q bucket is missing", ErrDamaged, name)
	}
	return b, nil
}

func aggregateBucket(tx *bbolt.Tx, ref transport.Ref) (*bbolt.Bucket, error) {
	scopes, err := rootBucket(tx, bucketScopes)
	if err != nil {
		return nil, err
	}
	scope := scopes.Bucket(scopeKey(ref.Scope()))
	if scope == nil {
		return nil, nil
	}
	return scope.Bucket([]byte(ref.ID)), nil
}

func storeFailed(op string, ref transport.Ref, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.WithRef(op, ref)
	}
	if errors.Is(err, bbolterrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return transport.Wrap(err, op, ref, transport.ErrUnavailable)
}

func canceled(ctx context.Context, op string, ref transport.Ref) error {
	if err := ctx.Err(); err != nil {
		return transport.Wrap(err, op, ref, transport.ErrUnavailable)
	}
	return nil
}

// Load implements transport.Transport. A page stops before its events pass
// transport.MaxPageBytes (a first batch larger than that comes alone).
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
	err := t.view(func(tx *bbolt.Tx) error {
		b, err := aggregateBucket(tx, ref)
		if err != nil {
			return err
		}
		if b == nil {
			return transport.NewError(op, ref, transport.ErrNotFound)
		}
		m, err := readMeta(b, ref.Type, []byte(ref.ID))
		if err != nil {
			return err
		}
		if err := checkVersion(b, ref.Type, []byte(ref.ID), m); err != nil {
			return err
		}
		v := m.version
		page.Events = []transport.Event{}
		if since >= v {
			page.Version = since
			return nil
		}
		to := min(since+int64(limit), v)
		var dec batchDecoder
		last, size := since, 0
		c := b.Cursor()
		for k, val := c.Seek(versionKey(since + 1)); last < to; k, val = c.Next() {
			if len(k) != 8 || int64(binary.BigEndian.Uint64(k)) != last+1 {
				return fmt.Errorf("%w: batch %d of aggregate %s/%s is missing", ErrDamaged, last+1, ref.Type, ref.ID)
			}
			n := len(page.Events)
			var bytes int
			if page.Events, bytes, err = dec.decode(page.Events, val); err != nil {
				return fmt.Errorf("%w: batch %d of aggregate %s/%s: %v", ErrDamaged, last+1, ref.Type, ref.ID, err)
			}
			if last > since && size+bytes > transport.MaxPageBytes {
				page.Events = page.Events[:n]
				break
			}
			size += bytes
			last++
		}
		page.Version, page.HasMore = last, last < v
		return nil
	})
	if err != nil {
		return transport.Page{}, storeFailed(op, ref, err)
	}
	return page, nil
}

// Store implements transport.Transport: the batch is on disk, fsynced,
// when Store returns. Concurrent Stores and StoreBulks share one
// transaction and one fsync (group commit, see group.go); each gets its
// own answer.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	data := encodeBatch(events)
	w := &write{ctx: ctx, op: op, ref: ref, size: len(data),
		batches: []pendingBatch{{id: ref.ID, data: data, events: len(events), expected: expected}}}
	if err := t.submit(w); err != nil {
		return storeFailed(op, ref, err)
	}
	t.signal.Notify(ref.Tenant, ref.Type)
	return nil
}

// StoreBulk implements transport.Transport: every batch or none, with one
// store time, committed like Store (possibly in a transaction shared with
// other callers).
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	w := &write{ctx: ctx, op: op, ref: sref, batches: make([]pendingBatch, len(batches))}
	for i, b := range batches {
		data := encodeBatch(b.Events)
		w.batches[i] = pendingBatch{id: b.AggregateID, data: data, events: len(b.Events), expected: b.Expected}
		w.size += len(data)
	}
	if err := canceled(ctx, op, sref); err != nil {
		return err
	}
	if err := t.submit(w); err != nil {
		return storeFailed(op, sref, err)
	}
	t.signal.Notify(scope.Tenant, scope.Type)
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
	err := t.view(func(tx *bbolt.Tx) error {
		b, err := aggregateBucket(tx, ref)
		ok = b != nil
		return err
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

// ConfirmDelete implements transport.Transport. The token is taken before
// the delete's transaction and put back when the delete fails (the
// transaction, its commit or its fsync): a failed confirm leaves the token
// usable.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	undo, ok := t.tokens.Take(target, token)
	if !ok {
		return transport.NewError(op, ref, transport.ErrBadDeleteToken)
	}
	err := t.update(func(tx *bbolt.Tx) error {
		scopes, err := rootBucket(tx, bucketScopes)
		if err != nil {
			return err
		}
		key := scopeKey(transport.Scope{Tenant: target.Tenant, Type: target.Type})
		if err := forgetFeed(tx, target); err != nil {
			return err
		}
		scope := scopes.Bucket(key)
		switch {
		case scope == nil:
		case target.AllOfType:
			err = scopes.DeleteBucket(key)
		case scope.Bucket([]byte(target.ID)) != nil:
			err = scope.DeleteBucket([]byte(target.ID))
		}
		if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		undo()
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
	err := t.view(func(tx *bbolt.Tx) error {
		scopes, err := rootBucket(tx, bucketScopes)
		if err != nil {
			return err
		}
		sb := scopes.Bucket(scopeKey(scope))
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
			m, err := readMeta(sb.Bucket(k), scope.Type, k)
			if err != nil {
				return err
			}
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
