package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DefaultSchema is the schema the tables live in unless WithSchema says
// otherwise.
const DefaultSchema = "sourced"

// ErrConfig: Open or New was given something it cannot use (a bad
// connection string, schema name or option).
var ErrConfig = errors.New("postgres transport: bad configuration")

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Option configures a Transport.
type Option func(*Transport)

// WithSchema sets the schema of the tables (default DefaultSchema): lower
// case letters, digits and underscores.
func WithSchema(name string) Option { return func(t *Transport) { t.schema = name } }

// WithLogger sets the logger (default zap.NewNop()). Nothing logged holds a
// connection string or a password.
func WithLogger(l *zap.Logger) Option {
	return func(t *Transport) {
		if l != nil {
			t.log = l
		}
	}
}

// WithClock sets the clock that dates batches and expires delete tokens.
func WithClock(now func() time.Time) Option {
	return func(t *Transport) {
		if now != nil {
			t.now = now
		}
	}
}

// WithSequencerInterval sets how often the sequencer looks for batches that
// other processes stored (default 100 ms). Batches this process stores are
// numbered right after their commit.
func WithSequencerInterval(d time.Duration) Option {
	return func(t *Transport) {
		if d > 0 {
			t.interval = d
		}
	}
}

// Transport keeps events in PostgreSQL. It is safe for concurrent use by
// many goroutines and many processes. Build it with Open or New; Close it.
type Transport struct {
	pool     *pgxpool.Pool
	ownPool  bool
	schema   string
	q        queries
	log      *zap.Logger
	now      func() time.Time
	interval time.Duration

	signal  commitsignal.Signal // broadcast when batches get numbers
	mu      sync.Mutex
	waiters map[*waiter]struct{} // stores waiting for their numbers
	waiting map[int64]*waiter    // by batch id
	kick    chan struct{}        // wakes the sequencer after a local commit
	ctx     context.Context      // of the background work; Close cancels it
	stop    context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Once

	beforeCommit func(ctx context.Context, tx pgx.Tx) // tests only
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Lister    = (*Transport)(nil)
	_ transport.Feeder    = (*Transport)(nil)
)

// Open connects to the database a connection string names (a pgx pool
// that Close closes), creates or migrates the schema, and starts the
// sequencer. The pool holds up to 16 connections (or 4 per CPU, if more)
// unless the string sets pool_max_conns. The connection string never
// appears in an error.
func Open(ctx context.Context, connString string, opts ...Option) (*Transport, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: the connection string does not parse (it is not repeated here: it may hold a password)", ErrConfig)
	}
	if !strings.Contains(connString, "pool_max_conns") {
		cfg.MaxConns = int32(max(16, 4*runtime.NumCPU()))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, redact(err))
	}
	t, err := newTransport(ctx, pool, true, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return t, nil
}

// New uses a pool of the caller's, which Close leaves open.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Transport, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrConfig)
	}
	return newTransport(ctx, pool, false, opts)
}

func newTransport(ctx context.Context, pool *pgxpool.Pool, own bool, opts []Option) (*Transport, error) {
	t := &Transport{pool: pool, ownPool: own, schema: DefaultSchema, log: zap.NewNop(), now: time.Now,
		interval: 100 * time.Millisecond, kick: make(chan struct{}, 1), waiters: map[*waiter]struct{}{}, waiting: map[int64]*waiter{}}
	for _, o := range opts {
		if o != nil {
			o(t)
		}
	}
	if !schemaName.MatchString(t.schema) {
		return nil, fmt.Errorf("%w: schema name %q must match %s", ErrConfig, t.schema, schemaName)
	}
	t.q = newQueries(t.schema)
	if err := t.migrate(ctx); err != nil {
		return nil, fmt.Errorf("postgres transport: migrating schema %s: %w", t.schema, redact(err))
	}
	t.ctx, t.stop = context.WithCancel(context.Background())
	t.wg.Add(2)
	go t.sequencer()
	go t.listen()
	return t, nil
}

// Close stops the sequencer and the listener, and closes the pool if Open
// made it.
func (t *Transport) Close() error {
	t.closeMu.Do(func() {
		t.stop()
		t.wg.Wait()
		if t.ownPool {
			t.pool.Close()
		}
	})
	return nil
}

// Schema returns the schema the tables live in.
func (t *Transport) Schema() string { return t.schema }

// migrate applies the embedded migrations that the schema lacks, under a
// transaction-level advisory lock so that processes starting together take
// turns.
func (t *Transport) migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	return pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("sourced.migrate."+t.schema)); err != nil {
			return err
		}
		s := pgx.Identifier{t.schema}.Sanitize()
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s+".schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s+".schema_migrations").Scan(&current); err != nil {
			return err
		}
		for _, f := range files {
			v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(f, "migrations/"), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration file %s: %w", f, err)
			}
			if v <= current {
				continue
			}
			body, err := migrations.ReadFile(f)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, strings.ReplaceAll(string(body), "{{schema}}", s)); err != nil {
				return fmt.Errorf("migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s+".schema_migrations (version) VALUES ($1)", v); err != nil {
				return err
			}
			t.log.Info("postgres schema migrated", zap.String("schema", t.schema), zap.Int("version", v))
		}
		return nil
	})
}

func lockKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum64())
}

func idHash(id string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int64(h.Sum32())
}

// sequencer numbers settled batches, when a local store asks, when
// another process numbered some (an older transaction of ours may have
// been waiting for it), and every interval for batches whose writer went
// away; then it lets the stores waiting for their numbers return.
func (t *Transport) sequencer() {
	defer t.wg.Done()
	ctx := t.ctx
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		changed := t.signal.Changed()
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-tick.C:
		case <-changed:
		}
		for {
			ids, err := t.sequence(ctx)
			if err != nil {
				if ctx.Err() == nil {
					t.log.Warn("postgres feed sequencer failed; it tries again", zap.Error(redact(err)))
				}
				break
			}
			if len(ids) == 0 {
				// Another process may have numbered what our stores wait for.
				if err := t.check(ctx); err != nil && ctx.Err() == nil {
					t.log.Warn("postgres feed sequencer could not check waiting stores", zap.Error(redact(err)))
				}
				break
			}
			t.signal.Broadcast()
			t.release(ids)
		}
	}
}

// waiter is a store waiting for its batches' feed numbers.
type waiter struct {
	left map[int64]bool
	done chan struct{}
}

// release lets go the stores whose batches are all among ids now.
func (t *Transport) release(ids []int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.waiters) == 0 {
		return
	}
	for _, id := range ids {
		if w := t.waiting[id]; w != nil {
			delete(w.left, id)
			delete(t.waiting, id)
			if len(w.left) == 0 {
				close(w.done)
				delete(t.waiters, w)
			}
		}
	}
}

// check asks the database which awaited batches have numbers (another
// process's sequencer may have given them) and releases their stores.
func (t *Transport) check(ctx context.Context) error {
	t.mu.Lock()
	ids := make([]int64, 0, len(t.waiting))
	for id := range t.waiting {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	rows, err := t.pool.Query(ctx, t.q.numbered, ids)
	if err != nil {
		return err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	t.release(got)
	return nil
}

// awaitNumbers returns once the batches with these ids have feed numbers,
// so that a batch is in the feed when its Store returns. The sequencer
// numbers them, after any older transaction still open has settled. If
// that takes longer than maxNumberWait, or ctx ends, it returns anyway: the
// batches are stored, and the sequencer numbers them soon.
func (t *Transport) awaitNumbers(ctx context.Context, ids []int64) {
	w := &waiter{left: make(map[int64]bool, len(ids)), done: make(chan struct{})}
	t.mu.Lock()
	for _, id := range ids {
		w.left[id] = true
		t.waiting[id] = w
	}
	t.waiters[w] = struct{}{}
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
	timer := time.NewTimer(maxNumberWait)
	defer timer.Stop()
	select {
	case <-w.done:
		return
	case <-ctx.Done():
	case <-timer.C:
		t.log.Warn("postgres: a stored batch still waits for its feed number; an old transaction may hold the feed back", zap.Int64s("batch_ids", ids))
	case <-t.ctx.Done():
	}
	t.mu.Lock()
	for id := range w.left {
		delete(t.waiting, id)
	}
	delete(t.waiters, w)
	t.mu.Unlock()
}

// maxNumberWait bounds how long a store waits for its feed number.
const maxNumberWait = 30 * time.Second

// sequence gives feed numbers to the batches whose transactions are all
// settled, in transaction order, and returns the ids it numbered: one
// round trip to the sequence_feed function (migration 2), which takes the
// sequencers' advisory lock, reads the horizon, numbers and notifies.
func (t *Transport) sequence(ctx context.Context) ([]int64, error) {
	rows, err := t.pool.Query(ctx, t.q.sequence, t.q.lock, t.q.channel)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// listen wakes this process's waiting feed readers when another process
// numbers batches.
func (t *Transport) listen() {
	defer t.wg.Done()
	ctx := t.ctx
	policy := backoff.NewExponentialBackOff()
	policy.MaxElapsedTime = 0
	for ctx.Err() == nil {
		err := t.listenOnce(ctx, policy)
		if ctx.Err() != nil {
			return
		}
		wait := policy.NextBackOff()
		t.log.Warn("postgres feed listener lost its connection; reconnecting", zap.Duration("wait", wait), zap.Error(redact(err)))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

func (t *Transport) listenOnce(ctx context.Context, policy *backoff.ExponentialBackOff) error {
	conn, err := t.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is LISTENing: it does not go back to the pool.
	raw := conn.Hijack()
	defer raw.Close(context.Background())
	if _, err := raw.Exec(ctx, "LISTEN "+pgx.Identifier{t.q.channel}.Sanitize()); err != nil {
		return err
	}
	policy.Reset()
	for {
		if _, err := raw.WaitForNotification(ctx); err != nil {
			return err
		}
		t.signal.Broadcast()
	}
}

// redact keeps connection details out of an error: pgx's own errors name
// the user and host at most, never the password, but a parse error would
// quote the string.
func redact(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string")
	}
	return err
}

// Pool returns the connection pool the transport uses.
func (t *Transport) Pool() *pgxpool.Pool { return t.pool }
