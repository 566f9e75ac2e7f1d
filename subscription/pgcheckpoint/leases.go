package pgcheckpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/subscription/group"
)

// Join implements group.Coordinator: the group is created with partitions
// partitions by its first member; a member that joins with another count
// fails with group.ErrPartitionCount.
func (s *Store) Join(ctx context.Context, grp, member string, partitions int) (group.Membership, error) {
	if err := group.CheckJoin(grp, member, partitions); err != nil {
		return nil, err
	}
	m := &membership{s: s, group: grp, member: member, token: uuid.NewString(), changed: make(chan struct{}, 1)}
	// Listen before joining, so that no release after the join is missed.
	m.listen(ctx)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".groups (name, partitions) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", grp, partitions); err != nil {
			return err
		}
		var stored int
		if err := tx.QueryRow(ctx, "SELECT partitions FROM "+s.s+".groups WHERE name = $1 FOR SHARE", grp).Scan(&stored); err != nil {
			return err
		}
		if stored != partitions {
			return group.PartitionCountError(grp, stored, partitions)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".leases (grp, part) SELECT $1, generate_series(0, $2::int - 1) ON CONFLICT DO NOTHING", grp, partitions); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".members (grp, token, member, expires_at) VALUES ($1, $2, $3, clock_timestamp() + $4::interval)",
			grp, m.token, member, s.lease); err != nil {
			return err
		}
		return m.notify(ctx, tx)
	})
	if err != nil {
		m.stopListening()
		if errors.Is(err, group.ErrPartitionCount) {
			return nil, err
		}
		return nil, fmt.Errorf("pgcheckpoint: joining group %q: %w", grp, err)
	}
	return m, nil
}

type membership struct {
	s       *Store
	group   string
	member  string
	token   string
	changed chan struct{}
	mu      sync.Mutex
	closed  bool

	stopListen context.CancelFunc // nil when not listening
	listening  chan struct{}      // closed when the listener returns
}

// channel is the name of the PostgreSQL notification channel of the
// store's groups: short, whatever the schema's length.
func (s *Store) channel() string {
	return fmt.Sprintf("sourced_groups_%016x", uint64(lockKey(s.schema)))
}

// listen starts a goroutine that holds one connection of its own,
// LISTENing for the group's changes (joins, releases, leaves) so that
// Changed wakes the member at once. When it cannot, the member sees those
// changes at its next Sync.
func (m *membership) listen(ctx context.Context) {
	pc, err := m.s.pool.Acquire(ctx)
	if err != nil {
		m.s.log.Warn("pgcheckpoint: cannot listen for group changes; members notice them at their next sync", zap.String("group", m.group), zap.Error(err))
		return
	}
	conn := pc.Hijack() // ours alone: it never goes back to the pool listening
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{m.s.channel()}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		m.s.log.Warn("pgcheckpoint: cannot listen for group changes; members notice them at their next sync", zap.String("group", m.group), zap.Error(err))
		return
	}
	lctx, cancel := context.WithCancel(context.Background())
	m.stopListen, m.listening = cancel, make(chan struct{})
	go func() {
		defer close(m.listening)
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				if lctx.Err() == nil {
					m.s.log.Warn("pgcheckpoint: listening for group changes failed; members notice them at their next sync", zap.String("group", m.group), zap.Error(err))
				}
				return
			}
			grp, token, _ := strings.Cut(n.Payload, "\n")
			if grp == m.group && token != m.token {
				select {
				case m.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
}

func (m *membership) stopListening() {
	if m.stopListen != nil {
		m.stopListen()
		<-m.listening
	}
}

// notify tells the group's other members, when tx commits, that what they
// should hold may have changed.
func (m *membership) notify(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", m.s.channel(), m.group+"\n"+m.token)
	return err
}

// Sync implements group.Membership. One transaction: it locks the group
// (members sync one at a time), renews the member's heartbeat and its
// live leases, removes expired members, and claims free or expired
// partitions, lowest first, up to the member's share; each claim adds 1
// to the partition's generation. Times are the database's. A partition
// whose lease row is locked (its former owner is in the middle of a
// fenced write, or stopped there) is skipped until the lock goes.
func (m *membership) Sync(ctx context.Context) (group.State, error) {
	if m.isClosed() {
		return group.State{}, group.ErrClosed
	}
	s := m.s
	var st group.State
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A lock held longer than this (a member stopped in the middle of
		// a fenced write holds its lease row) fails this Sync rather than
		// stall the group; the next one tries again.
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", max(s.lease/4, 100*time.Millisecond).Milliseconds())); err != nil {
			return err
		}
		var partitions int
		if err := tx.QueryRow(ctx, "SELECT partitions FROM "+s.s+".groups WHERE name = $1 FOR UPDATE", m.group).Scan(&partitions); err != nil {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.s+".members (grp, token, member, expires_at) VALUES ($1, $2, $3, $4::timestamptz + $5::interval) "+
			"ON CONFLICT (grp, token) DO UPDATE SET expires_at = excluded.expires_at", m.group, m.token, m.member, now, s.lease); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM "+s.s+".members WHERE grp = $1 AND expires_at <= $2", m.group, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			if err := m.notify(ctx, tx); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, "SELECT token FROM "+s.s+".members WHERE grp = $1 ORDER BY member, token", m.group)
		if err != nil {
			return err
		}
		tokens, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		share := group.Share(partitions, len(tokens), slices.Index(tokens, m.token))
		rows, err = tx.Query(ctx, "UPDATE "+s.s+".leases SET expires_at = $3::timestamptz + $4::interval "+
			"WHERE grp = $1 AND owner = $2 AND expires_at > $3 RETURNING part, generation", m.group, m.token, now, s.lease)
		if err != nil {
			return err
		}
		held, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lease])
		if err != nil {
			return err
		}
		if want := share - len(held); want > 0 {
			rows, err = tx.Query(ctx, "UPDATE "+s.s+".leases SET owner = $2, member = $3, generation = generation + 1, expires_at = $4::timestamptz + $5::interval "+
				"WHERE grp = $1 AND part IN (SELECT part FROM "+s.s+".leases WHERE grp = $1 AND (owner IS NULL OR expires_at <= $4) ORDER BY part LIMIT $6 FOR UPDATE SKIP LOCKED) "+
				"RETURNING part, generation", m.group, m.token, m.member, now, s.lease, want)
			if err != nil {
				return err
			}
			claimed, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lease])
			if err != nil {
				return err
			}
			held = append(held, claimed...)
		}
		sort.Slice(held, func(i, j int) bool { return held[i].Part < held[j].Part })
		st = group.State{Held: make([]group.Fence, len(held))}
		for i, l := range held {
			st.Held[i] = group.Fence{Group: m.group, Member: m.member, Partition: l.Part, Generation: l.Generation}
		}
		if n := len(held) - share; n > 0 {
			for _, l := range held[len(held)-n:] {
				st.Surplus = append(st.Surplus, l.Part)
			}
		}
		return nil
	})
	if err != nil {
		return group.State{}, fmt.Errorf("pgcheckpoint: group %q member %q: sync: %w", m.group, m.member, err)
	}
	return st, nil
}

type lease struct {
	Part       int
	Generation int64
}

// Release implements group.Membership.
func (m *membership) Release(ctx context.Context, partitions ...int) error {
	if m.isClosed() {
		return group.ErrClosed
	}
	if len(partitions) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, m.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE "+m.s.s+".leases SET owner = NULL, member = NULL, expires_at = NULL WHERE grp = $1 AND owner = $2 AND part = ANY($3)",
			m.group, m.token, partitions); err != nil {
			return err
		}
		return m.notify(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("pgcheckpoint: group %q member %q: release: %w", m.group, m.member, err)
	}
	return nil
}

// Changed implements group.Membership: it is signalled (through LISTEN and
// NOTIFY) when another member joins, releases partitions or leaves, or a
// Sync removes an expired member.
func (m *membership) Changed() <-chan struct{} { return m.changed }

// Close implements group.Membership: it releases every lease and removes
// the member, so that the others claim its partitions at their next Sync.
func (m *membership) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return group.ErrClosed
	}
	m.closed = true
	m.mu.Unlock()
	m.stopListening()
	err := pgx.BeginFunc(ctx, m.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE "+m.s.s+".leases SET owner = NULL, member = NULL, expires_at = NULL WHERE grp = $1 AND owner = $2", m.group, m.token); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+m.s.s+".members WHERE grp = $1 AND token = $2", m.group, m.token); err != nil {
			return err
		}
		return m.notify(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("pgcheckpoint: group %q member %q: leaving: %w", m.group, m.member, err)
	}
	return nil
}

func (m *membership) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}
