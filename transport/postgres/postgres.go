package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
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
	kick    chan struct{}       // wakes the sequencer after a local commit
	quit    chan struct{}
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
// sequencer. The connection string never appears in an error.
func Open(ctx context.Context, connString string, opts ...Option) (*Transport, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: the connection string does not parse (it is not repeated here: it may hold a password)", ErrConfig)
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
		interval: 100 * time.Millisecond, kick: make(chan struct{}, 1), quit: make(chan struct{})}
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
	t.wg.Add(2)
	go t.sequencer()
	go t.listen()
	return t, nil
}

// Close stops the sequencer and the listener, and closes the pool if Open
// made it.
func (t *Transport) Close() error {
	t.closeMu.Do(func() {
		close(t.quit)
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

// sequencer numbers settled batches: after every local commit, and every
// interval for other processes' batches.
func (t *Transport) sequencer() {
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-t.quit
		cancel()
	}()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			return
		case <-t.kick:
		case <-tick.C:
		}
		for {
			n, _, err := t.sequence(ctx, nil)
			if err != nil {
				if ctx.Err() == nil {
					t.log.Warn("postgres feed sequencer failed; it tries again", zap.Error(redact(err)))
				}
				break
			}
			if n == 0 {
				break
			}
			t.signal.Broadcast()
		}
	}
}

// sequence gives feed numbers to the batches whose transactions are all
// settled, in transaction order, and returns how many it numbered and
// whether the batches with the ids in wait (if any) have numbers now.
// Sequencers take turns on an advisory lock; a pass that finds nothing to
// number writes nothing.
func (t *Transport) sequence(ctx context.Context, wait []int64) (n int, done bool, err error) {
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		var base int64
		var locked any
		if err := tx.QueryRow(ctx, t.q.lockCounter, t.q.lock).Scan(&locked, &base); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, t.q.pending)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			if _, err := tx.Exec(ctx, t.q.number, base, ids); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, t.q.setCounter, base+int64(len(ids))); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", t.q.channel); err != nil {
				return err
			}
			n = len(ids)
		}
		if len(wait) == 0 {
			return nil
		}
		var left int
		if err := tx.QueryRow(ctx, t.q.unnumbered, wait).Scan(&left); err != nil {
			return err
		}
		done = left == 0
		return nil
	})
	return n, done, err
}

// awaitNumbers returns once the batches with these ids have feed numbers:
// then a batch is in the feed when its Store returns. It waits for older
// transactions still running to settle, woken by the sequencing of others.
// A failure here is logged, not returned: the batches are stored, and the
// background sequencer numbers them.
func (t *Transport) awaitNumbers(ctx context.Context, ids []int64) {
	for {
		changed := t.signal.Changed()
		n, done, err := t.sequence(ctx, ids)
		if n > 0 {
			t.signal.Broadcast()
		}
		if err != nil {
			if ctx.Err() == nil {
				t.log.Warn("postgres: a stored batch awaits its feed number from the background sequencer", zap.Error(redact(err)))
			}
			return
		}
		if done {
			return
		}
		select {
		case <-changed:
		case <-time.After(t.interval):
		case <-ctx.Done():
			return
		}
	}
}

// listen wakes this process's waiting feed readers when another process
// numbers batches.
func (t *Transport) listen() {
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-t.quit
		cancel()
	}()
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
