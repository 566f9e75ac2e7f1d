// Package pgcheckpoint keeps subscription checkpoints, parked entries and
// consumer-group leases in PostgreSQL (pgx/v5), in a schema of its own
// that it creates and migrates.
//
// Experimental: this API may change in any minor version.
//
// Exactly once: Apply runs a handler and writes the checkpoint in one
// transaction, so a read model kept in the same database changes exactly
// once per entry, crashes included. The events may live anywhere (the
// PostgreSQL transport, the hosted API, the local server).
//
// Consumer groups: Store is a group.Coordinator. Each partition's lease is
// a row whose generation grows at every claim, expired by the database's
// clock. WithFence returns the store for one claim of one partition: its
// Save, Apply and Park check in their own transaction that the lease
// generation is still the claim's, and fail with group.ErrFenced when
// another member has claimed the partition since, so a member paused past
// its lease can never commit after it resumes.
//
// Checkpoints record the entry they stand on (subscription.EntryCheckpoints:
// the sequence number and the entry's first event id), for the
// subscription's stale-checkpoint check. Save never moves a checkpoint
// back; ResetTo (subscription.Reset, ResetGroup) does, refused while a
// live lease of the group holds the partition. CheckFence lets a
// partition's holder fence writes of its own outside Apply (the clear
// function of subscription.Rebuild).
package pgcheckpoint

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
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/transport"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DefaultSchema is the schema the tables live in unless WithSchema says
// otherwise.
const DefaultSchema = "sourced_subscriptions"

var (
	// ErrConfig: New was given something it cannot use.
	ErrConfig = errors.New("pgcheckpoint: bad configuration")
	// ErrSchemaNewer: the schema was migrated by a newer version of this
	// package than the running one; upgrade the code (nothing is changed).
	ErrSchemaNewer = errors.New("pgcheckpoint: schema is newer than this code")
)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Option configures a Store.
type Option func(*Store)

// WithSchema sets the schema of the tables (default DefaultSchema): lower
// case letters, digits and underscores.
func WithSchema(name string) Option { return func(s *Store) { s.schema = name } }

// WithLeaseTime sets how long a consumer-group lease lasts without renewal
// (default group.DefaultLeaseTime): a member that dies loses its
// partitions within this time. Members should Sync (group.Every) well
// within it.
func WithLeaseTime(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.lease = d
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// Store keeps checkpoints, parked entries and leases. It is safe for
// concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	s      string // sanitized schema
	lease  time.Duration
	log    *zap.Logger
	fence  group.Fence
}

var (
	_ subscription.Checkpoints      = (*Store)(nil)
	_ subscription.EntryCheckpoints = (*Store)(nil)
	_ subscription.Resetter         = (*Store)(nil)
	_ subscription.Parker           = (*Store)(nil)
	_ group.Coordinator             = (*Store)(nil)
)

// New uses pool (which it never closes), creating or migrating the schema.
// It fails with ErrSchemaNewer when the schema was migrated by newer code.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrConfig)
	}
	s := &Store{pool: pool, schema: DefaultSchema, lease: group.DefaultLeaseTime, log: zap.NewNop()}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	if !schemaName.MatchString(s.schema) {
		return nil, fmt.Errorf("%w: schema name %q must match %s", ErrConfig, s.schema, schemaName)
	}
	s.s = pgx.Identifier{s.schema}.Sanitize()
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("pgcheckpoint: migrating schema %s: %w", s.schema, err)
	}
	return s, nil
}

// Schema returns the schema the tables live in.
func (s *Store) Schema() string { return s.schema }

// migrate applies the embedded migrations the schema lacks, under a
// transaction-level advisory lock so that processes starting together
// take turns.
func (s *Store) migrate(ctx context.Context) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	type mig struct {
		v    int
		file string
	}
	var ms []mig
	for _, f := range files {
		v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(f, "migrations/"), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration file %s: %w", f, err)
		}
		ms = append(ms, mig{v, f})
	}
	latest := ms[len(ms)-1].v
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("sourced.pgcheckpoint.migrate."+s.schema)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s.s); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.s+".schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.s+".schema_migrations").Scan(&current); err != nil {
			return err
		}
		if current > latest {
			return fmt.Errorf("%w: schema %s is at version %d, this code knows up to %d", ErrSchemaNewer, s.schema, current, latest)
		}
		for _, m := range ms {
			if m.v <= current {
				continue
			}
			body, err := migrations.ReadFile(m.file)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, strings.ReplaceAll(string(body), "{{schema}}", s.s)); err != nil {
				return fmt.Errorf("migration %d: %w", m.v, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".schema_migrations (version) VALUES ($1)", m.v); err != nil {
				return err
			}
			s.log.Info("pgcheckpoint schema migrated", zap.String("schema", s.schema), zap.Int("version", m.v))
		}
		return nil
	})
}

func lockKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum64())
}

// WithFence returns a view of the store for one claim of one partition
// (see group.Run): its Save, Apply and Park fail with group.ErrFenced once
// another member has claimed the partition. The zero Fence fences nothing.
func (s *Store) WithFence(f group.Fence) *Store {
	c := *s
	c.fence = f
	return &c
}

// Fence returns the fence this view checks (the zero Fence for none).
func (s *Store) Fence() group.Fence { return s.fence }

// Load implements subscription.Checkpoints.
func (s *Store) Load(ctx context.Context, name string) (int64, bool, error) {
	c, ok, err := s.LoadCheckpoint(ctx, name)
	return c.Sequence, ok, err
}

// LoadCheckpoint implements subscription.EntryCheckpoints: the checkpoint
// of the subscription called name, with the first event id of the entry
// it stands on ("" when saved without it).
func (s *Store) LoadCheckpoint(ctx context.Context, name string) (subscription.Checkpoint, bool, error) {
	return scanCheckpoint(s.pool.QueryRow(ctx, "SELECT seq, first_event_id FROM "+s.s+".checkpoints WHERE name = $1", name), name)
}

// scanCheckpoint reads a checkpoint row (seq, first_event_id), and false
// when there is none.
func scanCheckpoint(row pgx.Row, name string) (subscription.Checkpoint, bool, error) {
	var c subscription.Checkpoint
	var id *string
	err := row.Scan(&c.Sequence, &id)
	if errors.Is(err, pgx.ErrNoRows) {
		return subscription.Checkpoint{}, false, nil
	}
	if err != nil {
		return subscription.Checkpoint{}, false, fmt.Errorf("pgcheckpoint: loading checkpoint %q: %w", name, err)
	}
	if id != nil {
		c.EventID = *id
	}
	return c, true, nil
}

// SaveCheckpoint implements subscription.EntryCheckpoints, as Save does
// with the entry's event id.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, c subscription.Checkpoint) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.SaveFenced(ctx, tx, name, c, s.fence)
	})
	return permanentIfFenced(err)
}

// Save implements subscription.Checkpoints. It never moves a checkpoint
// back (one that Apply wrote ahead of the subscription stays), and checks
// the view's fence.
func (s *Store) Save(ctx context.Context, name string, seq int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.SaveFenced(ctx, tx, name, subscription.Checkpoint{Sequence: seq}, s.fence)
	})
	return permanentIfFenced(err)
}

// SaveFenced writes a checkpoint inside a transaction of the caller's,
// first checking (and locking against a claim until the transaction ends)
// that fence is still the current claim of its partition; the zero Fence
// checks nothing. It never moves a checkpoint back; a save at the
// checkpoint's sequence number without an event id keeps the one it has.
func (s *Store) SaveFenced(ctx context.Context, tx pgx.Tx, name string, pos subscription.Checkpoint, fence group.Fence) error {
	if err := s.checkFence(ctx, tx, fence); err != nil {
		return err
	}
	var id *string
	if pos.EventID != "" {
		id = &pos.EventID
	}
	_, err := tx.Exec(ctx, s.saveCheckpointSQL(), name, pos.Sequence, id)
	if err != nil {
		return fmt.Errorf("pgcheckpoint: saving checkpoint %q at %d: %w", name, pos.Sequence, err)
	}
	return nil
}

// saveCheckpointSQL writes a checkpoint ($1 name, $2 seq, $3 first event
// id or NULL), never moving it back.
func (s *Store) saveCheckpointSQL() string {
	return "INSERT INTO " + s.s + ".checkpoints AS c (name, seq, first_event_id) VALUES ($1, $2, $3) " +
		"ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = now(), " +
		"first_event_id = CASE WHEN excluded.first_event_id IS NULL AND c.seq = excluded.seq THEN c.first_event_id ELSE excluded.first_event_id END " +
		"WHERE c.seq <= excluded.seq"
}

// checkFence locks the partition's lease row against a claim (FOR SHARE)
// and checks its generation.
func (s *Store) checkFence(ctx context.Context, tx pgx.Tx, f group.Fence) error {
	if f.IsZero() {
		return nil
	}
	var gen int64
	err := tx.QueryRow(ctx, "SELECT generation FROM "+s.s+".leases WHERE grp = $1 AND part = $2 FOR SHARE", f.Group, f.Partition).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s: no such lease", group.ErrFenced, f)
	}
	if err != nil {
		return fmt.Errorf("pgcheckpoint: checking lease of %s: %w", f, err)
	}
	if gen != f.Generation {
		return fmt.Errorf("%w: %s: the partition was claimed again (generation %d)", group.ErrFenced, f, gen)
	}
	return nil
}

// permanentIfFenced keeps a subscription from retrying a fenced write:
// the lease will not come back.
func permanentIfFenced(err error) error {
	if errors.Is(err, group.ErrFenced) {
		return backoff.Permanent(err)
	}
	return err
}

// Reset forgets the checkpoint of the subscription called name, so that it
// starts over.
func (s *Store) Reset(ctx context.Context, name string) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM "+s.s+".checkpoints WHERE name = $1", name)
	return err
}

// Apply returns an entry handler (for Subscription.OnEntry) that runs fn
// and writes the checkpoint of the subscription called name (its Name())
// in one transaction, after checking the view's fence; it skips an entry
// the checkpoint has already passed, so the redelivery that follows a
// crash changes nothing.
func (s *Store) Apply(name string, fn func(ctx context.Context, tx pgx.Tx, entry transport.FeedEntry) error) func(context.Context, transport.FeedEntry) error {
	return func(ctx context.Context, e transport.FeedEntry) error {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := s.checkFence(ctx, tx, s.fence); err != nil {
				return err
			}
			var cur int64
			err := tx.QueryRow(ctx, "SELECT seq FROM "+s.s+".checkpoints WHERE name = $1 FOR UPDATE", name).Scan(&cur)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return err
			case cur >= e.Sequence:
				return nil // applied before a crash or a restart
			}
			if err := fn(ctx, tx, e); err != nil {
				return err
			}
			return s.SaveFenced(ctx, tx, name, subscription.CheckpointOf(e), group.Fence{})
		})
		return permanentIfFenced(err)
	}
}
