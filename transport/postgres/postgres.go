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
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
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

// ErrSchemaTooNew: the database's schema was migrated by a newer release of
// this package than the running one (its version is above SchemaVersion).
// Open and New refuse it, and CheckSchema reports it: an older release
// must not write to tables whose meaning it does not know.
var ErrSchemaTooNew = errors.New("postgres transport: the database schema is newer than this release knows")

// SchemaVersion is the newest schema migration this release knows and
// applies: Open and New bring an older schema up to it, and refuse a newer
// one with ErrSchemaTooNew.
const SchemaVersion = 5

// maxIdentifier is PostgreSQL's longest identifier, in bytes (NAMEDATALEN-1).
const maxIdentifier = 63

// channelSuffix makes the notification channel from the schema name.
const channelSuffix = "_feed"

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// maxSchemaName is the longest schema name: the channel, the schema's name
// with channelSuffix, must be an identifier too.
const maxSchemaName = maxIdentifier - len(channelSuffix)

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

// WithClock sets the clock that dates batches (tests use it to move time).
// Delete tokens expire by the database's clock, so that processes whose
// clocks differ agree; a clock given here shifts it only by how far it has
// moved since Open beyond this machine's clock.
func WithClock(now func() time.Time) Option {
	return func(t *Transport) {
		if now != nil {
			t.now, t.clocked = now, true
		}
	}
}

// WithSequencerInterval sets how often the sequencer looks for batches that
// other processes stored and left without numbers (default 100 ms).
// Batches this process stores are numbered soon after their commit (see
// WithSequencerDelay).
func WithSequencerInterval(d time.Duration) Option {
	return func(t *Transport) {
		if d > 0 {
			t.interval = d
		}
	}
}

// WithSequencerDelay sets how long the background sequencer lets commits
// gather before it numbers them (default 5 ms). Longer means fewer, larger
// numbering runs, so less work per batch under load, and a later wake-up
// for feed readers that wait (FeedQuery.Wait); a read that starts after a
// Store returned gets that batch whatever the delay (see the package doc).
func WithSequencerDelay(d time.Duration) Option {
	return func(t *Transport) {
		if d > 0 {
			t.gather = d
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
	clocked  bool      // now was given (WithClock)
	opened   time.Time // this machine's time at Open
	openedAt time.Time // now's time at Open
	interval time.Duration
	chunk    atomic.Int64 // the most batches one numbering run numbers (see sequencerChunk)

	signal  commitsignal.Signal // broadcast when batches get numbers
	kick    chan struct{}       // wakes the sequencer after a local commit
	gather  time.Duration       // how long the sequencer lets commits gather
	busy    atomic.Bool         // feed reads have lately found batches to number
	lastSeq atomic.Int64        // the highest feed number this process has seen given

	failures atomic.Int64    // sequencer runs that failed, since Open
	ctx      context.Context // of the background work; Close cancels it
	stop     context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Once

	origin string // this Transport's name in its notifications

	beforeCommit func(ctx context.Context, tx pgx.Tx) // tests only
	beforeBatch  func(i int)                          // tests only
	afterRead    func()                               // tests only
	onRun        atomic.Pointer[func(numbered int64)] // tests only
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
		interval: 100 * time.Millisecond, kick: make(chan struct{}, 1), gather: gatherTime, origin: uuid.NewString()}
	for _, o := range opts {
		if o != nil {
			o(t)
		}
	}
	if !schemaName.MatchString(t.schema) || len(t.schema) > maxSchemaName {
		return nil, fmt.Errorf("%w: schema name %q must match %s and be at most %d bytes long (its notification channel, the name with %q, must be a PostgreSQL identifier of at most %d)",
			ErrConfig, t.schema, schemaName, maxSchemaName, channelSuffix, maxIdentifier)
	}
	t.opened, t.openedAt = time.Now(), t.now()
	t.chunk.Store(sequencerChunk)
	t.q = newQueries(t.schema)
	if err := t.migrate(ctx); err != nil {
		if errors.Is(err, ErrSchemaTooNew) {
			return nil, err
		}
		return nil, fmt.Errorf("postgres transport: migrating schema %s: %w", t.schema, redact(err))
	}
	if err := t.repairRestore(ctx); err != nil {
		return nil, err
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

// migrate brings the schema to SchemaVersion. It reads the version first,
// without a lock and without writing: a schema that is up to date is left
// alone, so a role with rights on the data only (no CREATE) can open it.
// Otherwise it applies the migrations the schema lacks (see migrateTo).
func (t *Transport) migrate(ctx context.Context) error {
	v, err := t.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return t.tooNew(v)
	}
	if v == SchemaVersion {
		return nil
	}
	return t.migrateTo(ctx, 0)
}

// schemaVersion reads the schema's version: 0 when there is no schema yet.
func (t *Transport) schemaVersion(ctx context.Context) (int, error) {
	s := pgx.Identifier{t.schema, "schema_migrations"}.Sanitize()
	var exists bool
	var v int
	err := t.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s).Scan(&exists)
	if err == nil && exists {
		err = t.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s).Scan(&v)
	}
	return v, err
}

func (t *Transport) tooNew(v int) error {
	return fmt.Errorf("%w: schema %s is at version %d, this release knows up to %d; upgrade this program (or open another schema)",
		ErrSchemaTooNew, t.schema, v, SchemaVersion)
}

// CheckSchema reports whether the database's schema is still the one this
// Transport works with: nil when it is at SchemaVersion, an error wrapping
// ErrSchemaTooNew when a newer release has migrated it since Open (this
// process should stop writing and be upgraded), another error when it is
// older or cannot be read. A server's readiness check may call it.
func (t *Transport) CheckSchema(ctx context.Context) error {
	v, err := t.schemaVersion(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("postgres transport: reading the version of schema %s: %w", t.schema, redact(err))
	case v > SchemaVersion:
		return t.tooNew(v)
	case v < SchemaVersion:
		return fmt.Errorf("postgres transport: schema %s is at version %d, below the %d this release needs", t.schema, v, SchemaVersion)
	}
	return nil
}

// migrateTo applies the migrations up to version upTo (0: all of them),
// under a transaction-level advisory lock so that processes starting
// together take turns.
func (t *Transport) migrateTo(ctx context.Context, upTo int) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	// READ COMMITTED: what is read after the lock must be what the process
	// before us left.
	// No statement_timeout: a migration runs once, and the one that
	// rewrites every batch (2), or numbers what an older release left (5),
	// takes as long as the data is large, and the lock waits for another
	// process's migration; a role's short timeout would only make each
	// start fail the same way (the context still bounds it).
	return pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('statement_timeout', '0', true)"); err != nil {
			return err
		}
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
		if current > SchemaVersion {
			return t.tooNew(current)
		}
		for _, f := range files {
			v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(f, "migrations/"), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration file %s: %w", f, err)
			}
			if v <= current || (upTo > 0 && v > upTo) {
				continue
			}
			body, err := migrations.ReadFile(f)
			if err != nil {
				return err
			}
			sql := strings.NewReplacer("{{schema}}", s, "{{sequencer_lock}}", strconv.FormatInt(lockKey("sourced.sequencer."+t.schema), 10)).Replace(string(body))
			if _, err := tx.Exec(ctx, sql); err != nil {
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

// typeKey is the advisory lock key of an aggregate type of a tenant, and
// aggKey that of one aggregate (see the lock statements in queries). Two
// that collide only make a store or a delete wait longer.
func (t *Transport) typeKey(tenant, typ string) int64 {
	h := fnv.New64a()
	for _, s := range [...]string{"sourced.type", t.schema, tenant, typ} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	return int64(h.Sum64())
}

func (t *Transport) aggKey(ref transport.Ref) int64 {
	h := fnv.New64a()
	for _, s := range [...]string{"sourced.aggregate", t.schema, ref.Tenant, ref.Type, ref.ID} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	return int64(h.Sum64())
}

// clockOffset is how far the clock given with WithClock has moved since
// Open beyond this machine's: the database's clock, which delete tokens
// expire by, is shifted by it. A clock that is merely set apart (a
// process whose clock is wrong) shifts nothing.
func (t *Transport) clockOffset() time.Duration {
	if !t.clocked {
		return 0
	}
	return t.now().Sub(t.openedAt) - time.Since(t.opened)
}

func idHash(id string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int64(h.Sum32())
}

// sequencer numbers committed batches in the background: soon after a
// local commit (commits that arrive together share a run), and every
// interval for batches that other processes stored and did not number.
// Feed readers never depend on it: they settle what they need themselves
// (see settled). Every run wakes this process's waiting readers when the
// feed has grown since this process last saw it, whoever numbered it (so
// a notification lost while the listener reconnected costs one interval
// at most). When a run fails, it tries again after a growing wait
// (backoff), logging once when the store becomes unreachable and once
// when it is back.
func (t *Transport) sequencer() {
	defer t.wg.Done()
	ctx := t.ctx
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	gather := time.NewTimer(0)
	<-gather.C
	policy := backoff.NewExponentialBackOff()
	policy.InitialInterval, policy.MaxInterval, policy.MaxElapsedTime = t.interval, 30*time.Second, 0
	failing, again := false, false
	for {
		if !again {
			select {
			case <-ctx.Done():
				return
			case <-t.kick:
				gather.Reset(t.gather)
				select {
				case <-gather.C:
				case <-ctx.Done():
					return
				}
			case <-tick.C:
			}
		}
		again = false
		err := t.sequence(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if failing {
				failing = false
				t.log.Info("postgres feed sequencer: the store is reachable again", zap.String("schema", t.schema))
			}
			policy.Reset()
			continue
		}
		t.failures.Add(1)
		if !failing {
			failing = true
			t.log.Error("postgres feed sequencer: the store is unreachable; retrying with backoff (logged again only once it is back)",
				zap.String("schema", t.schema), zap.Error(redact(err)))
		}
		// The run may have committed all the same (the answer was lost):
		// let waiting readers look.
		t.signal.Broadcast()
		wait := time.NewTimer(policy.NextBackOff())
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return
		}
		again = true
	}
}

// SequencerFailures returns how many background numbering runs have failed
// since Open (each is retried with backoff): for metrics and health checks.
func (t *Transport) SequencerFailures() int64 { return t.failures.Load() }

// sequence gives feed numbers to the committed batches that have none,
// in transaction order, a bounded chunk per run and as many runs as there
// are chunks (see queueSequencer).
func (t *Transport) sequence(ctx context.Context) error {
	for {
		b := &pgx.Batch{}
		t.queueSequencer(b)
		res := t.pool.SendBatch(ctx, b)
		run, err := t.readSequencer(res)
		if cerr := res.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		t.saw(run)
		if !run.more {
			return nil
		}
	}
}

// run is what a numbering run did: how many batches it numbered, the last
// number given so far (by any process), and whether more batches wait.
type run struct {
	numbered, seq int64
	more          bool
}

// saw wakes this process's waiting readers when run shows the feed grew
// since this process last looked.
func (t *Transport) saw(r run) {
	if f := t.onRun.Load(); f != nil {
		(*f)(r.numbered)
	}
	for {
		last := t.lastSeq.Load()
		if r.seq <= last {
			return
		}
		if t.lastSeq.CompareAndSwap(last, r.seq) {
			t.signal.Broadcast()
			return
		}
	}
}

// sequencerTimeout bounds the statements of a numbering run, whatever the
// role's or the session's statement_timeout and lock_timeout (a short one
// must not stop the feed: a run that always fails numbers nothing, ever).
const sequencerTimeout = "60s"

// queueSequencer queues one numbering run: it takes the sequencers'
// advisory lock, numbers, moves the counter and notifies other processes.
// It is a transaction of its own, READ COMMITTED whatever the session's
// default, since each statement must take a snapshot of its own (the
// numbering one after the lock), with its own timeouts, without JIT
// compilation (the planner's estimates for its small tables can pass
// jit_above_cost, and compiling costs far more than the run), and without
// sequential scans (it reads a few rows at the end of batches' (tx, id)
// index, however many batches there are; a guess that the range is a
// third of the table must not make it read all of them).
func (t *Transport) queueSequencer(b *pgx.Batch) {
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue("SELECT set_config('statement_timeout', '" + sequencerTimeout + "', true), set_config('lock_timeout', '0', true), set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)")
	b.Queue(t.q.lockAndMark, t.q.lock)
	b.Queue(t.q.sequence, t.q.channel, t.origin, t.chunk.Load())
	b.Queue("COMMIT")
}

// readSequencer reads the results of queueSequencer: what the run did.
func (t *Transport) readSequencer(res pgx.BatchResults) (r run, err error) {
	if _, err = res.Exec(); err != nil { // BEGIN
		return
	}
	if _, err = res.Exec(); err != nil { // the timeouts
		return
	}
	if _, err = res.Exec(); err != nil { // the lock
		return
	}
	var async *string // the commit's flush setting, when the run changed it
	if err = res.QueryRow().Scan(&r.numbered, &r.seq, &r.more, &async); err != nil {
		return
	}
	_, err = res.Exec() // COMMIT
	return
}

// gatherTime is how long the background sequencer lets commits gather
// before it numbers them, unless WithSequencerDelay says otherwise: at 32
// writers, 5 ms stored up to 10% more batches a second than 2 ms, and
// 10 or 20 ms no more than 5 (docs/performance.md).
const gatherTime = 5 * time.Millisecond

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
	// Notifications sent while no connection listened are lost: whoever
	// waits looks again.
	t.signal.Broadcast()
	for {
		n, err := raw.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload == t.origin {
			continue // our own sequencer: its stores and readers know already
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
