package orderlist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

// Partitions is the partition count of the consumer group that keeps the
// list in PostgreSQL: fixed when the group is first created.
const Partitions = 4

// PGList is the order list in a PostgreSQL table (order_list), kept by a
// consumer group: every process that catches up joins the group "order-list"
// and handles the partitions it holds, so processes running side by side
// share the work, each batch applied exactly once (the row and the
// partition's checkpoint commit in one transaction, fenced by the
// partition's lease).
type PGList struct {
	pool  *pgxpool.Pool
	cps   *pgcheckpoint.Store
	every time.Duration // how often members sync and the catch-up looks
}

// OpenPostgres creates the table and the checkpoint store's schema if they
// are missing.
func OpenPostgres(ctx context.Context, pool *pgxpool.Pool) (*PGList, error) {
	cps, err := pgcheckpoint.New(ctx, pool)
	if err != nil {
		return nil, err
	}
	// Processes that start together take turns (CREATE TABLE IF NOT EXISTS
	// alone races).
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('sourced-examples.order_list'))"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS order_list (
			id text PRIMARY KEY, part int NOT NULL, customer text NOT NULL DEFAULT '',
			amount bigint NOT NULL DEFAULT 0, paid bigint NOT NULL DEFAULT 0, status text NOT NULL DEFAULT '')`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating the order list table: %w", err)
	}
	return &PGList{pool: pool, cps: cps, every: 200 * time.Millisecond}, nil
}

// CatchUp joins the group as member and applies the batches of the
// partitions it holds until every partition of the list (this member's,
// and those of the members running beside it) has caught up with the
// feed's head as of the call; then it leaves the group, handing its
// partitions to the others at once. It returns how many batches this
// process applied. A partition whose checkpoint the feed no longer holds
// (a store reset) is cleared and rebuilt.
func (l *PGList) CatchUp(ctx context.Context, feed transport.Feeder, member string) (applied int, err error) {
	head, err := feed.FeedHead(ctx, transport.Scope{Type: "order"})
	if err != nil {
		return 0, err
	}
	var n atomic.Int64
	var mu sync.Mutex
	mine := map[int]bool{} // partitions this member caught up to head
	mem, err := group.NewMember(l.cps, Name, member, Partitions, func(p transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
		cps := l.cps.WithFence(fence)
		sub, err := subscription.New(feed, Name, cps, subscription.Feed("order"), subscription.Partition(p.Count, p.Number),
			subscription.Wait(l.every),
			subscription.OnStale(subscription.Rebuild(func(ctx context.Context) error {
				// Only while this member still holds the partition.
				return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
					if err := cps.CheckFence(ctx, tx); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "DELETE FROM order_list WHERE part = $1", p.Number)
					return err
				})
			})))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(cps.Apply(sub.Name(), func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
			if err := applyPG(ctx, tx, p.Number, e); err != nil {
				return err
			}
			n.Add(1)
			return nil
		}))
		go func() {
			if sub.Await(ctx, head) == nil {
				mu.Lock()
				mine[p.Number] = true
				mu.Unlock()
			}
		}()
		return sub, nil
	}, group.Every(l.every), group.GiveUpAfter(8*time.Second))
	if err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mem.Run(runCtx) }()
	tick := time.NewTicker(l.every)
	defer tick.Stop()
	for {
		mu.Lock()
		ours := make(map[int]bool, len(mine))
		for p, ok := range mine {
			ours[p] = ok
		}
		mu.Unlock()
		ok, err := l.caughtUp(ctx, feed, head, ours, mem.Partitions())
		if err != nil {
			cancel()
			return int(n.Load()), errors.Join(err, <-done)
		}
		if ok {
			cancel()
			return int(n.Load()), <-done
		}
		select {
		case err := <-done:
			return int(n.Load()), fmt.Errorf("the order list's group member stopped: %w", err)
		case <-ctx.Done():
			cancel()
			return int(n.Load()), errors.Join(ctx.Err(), <-done)
		case <-tick.C:
		}
	}
}

// caughtUp reports whether every partition has handled the feed up to
// head: one this member caught up itself, or one it does not run whose
// checkpoint has no entry of its partition above it up to head (another
// member's work). A partition this member runs counts only once its own
// subscription caught up (it checked its checkpoint against the feed).
func (l *PGList) caughtUp(ctx context.Context, feed transport.Feeder, head int64, mine map[int]bool, running []int) (bool, error) {
	if len(running) == 0 && len(mine) == 0 {
		return false, nil // not synced yet
	}
	runs := map[int]bool{}
	for _, p := range running {
		runs[p] = true
	}
	for p := range Partitions {
		if mine[p] {
			continue
		}
		if runs[p] {
			return false, nil
		}
		seq, _, err := l.cps.Load(ctx, subscription.PartitionName(Name, Partitions, p))
		if err != nil {
			return false, err
		}
		if seq > head {
			return false, nil // a stale checkpoint: its holder rebuilds
		}
		page, err := feed.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: seq, Limit: 1,
			Partition: transport.Partition{Count: Partitions, Number: p}})
		if err != nil {
			return false, err
		}
		if len(page.Entries) > 0 && page.Entries[0].Sequence <= head {
			return false, nil
		}
	}
	return true, nil
}

// applyPG changes the order's row for one stored batch, in the
// transaction that writes the partition's checkpoint.
func applyPG(ctx context.Context, tx pgx.Tx, part int, e transport.FeedEntry) error {
	row := Row{ID: e.AggregateID}
	err := tx.QueryRow(ctx, "SELECT customer, amount, paid, status FROM order_list WHERE id = $1", e.AggregateID).
		Scan(&row.Customer, &row.Amount, &row.Paid, &row.Status)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if err := row.apply(e); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "INSERT INTO order_list (id, part, customer, amount, paid, status) VALUES ($1, $2, $3, $4, $5, $6) "+
		"ON CONFLICT (id) DO UPDATE SET customer = excluded.customer, amount = excluded.amount, paid = excluded.paid, status = excluded.status",
		row.ID, part, row.Customer, row.Amount, row.Paid, row.Status)
	return err
}

// Rows returns the list, ordered by id, and its totals.
func (l *PGList) Rows(ctx context.Context) ([]Row, Totals, error) {
	rows, err := l.pool.Query(ctx, "SELECT id, customer, amount, paid, status FROM order_list ORDER BY id")
	if err != nil {
		return nil, Totals{}, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var x Row
		err := r.Scan(&x.ID, &x.Customer, &x.Amount, &x.Paid, &x.Status)
		return x, err
	})
	var t Totals
	for _, r := range out {
		t.Orders++
		t.Amount += r.Amount
		t.Paid += r.Paid
		if r.Status == "shipped" {
			t.Shipped++
		}
	}
	return out, t, err
}
