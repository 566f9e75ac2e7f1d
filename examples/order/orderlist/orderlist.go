// Package orderlist is the read model of the order example: one row per
// order with its amount, what is paid and its status, and totals over all
// orders. A durable subscription keeps it in a bbolt file, writing each
// batch's change and the subscription's checkpoint in one transaction, so
// every batch is applied exactly once, and a second run picks up where the
// first stopped.
package orderlist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

// Name is the subscription's (and its checkpoint's) name.
const Name = "order-list"

var (
	bucketRows = []byte("order-list")
	// bucketMeta held, in lists written by older versions, the event id
	// of the last entry applied (the checkpoint keeps it now).
	bucketMeta = []byte("order-list-meta")
)

// Row is one order in the list.
type Row struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Amount   int64  `json:"amount"`
	Paid     int64  `json:"paid"`
	Status   string `json:"status"` // placed, paid, shipped or canceled
}

// Totals sum up the list.
type Totals struct {
	Orders  int
	Amount  int64
	Paid    int64
	Shipped int
}

// List is the order list in its bbolt file.
type List struct {
	db  *bbolt.DB
	cps *boltcheckpoint.Store
}

// Open opens (or creates) the list's file.
func Open(path string) (*List, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the order list %s: %w", path, err)
	}
	cps, err := boltcheckpoint.New(db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &List{db: db, cps: cps}, nil
}

// Close closes the file.
func (l *List) Close() error { return l.db.Close() }

// CatchUp applies every order batch stored after the list's checkpoint,
// up to the end of the feed (the first read that says there is no more),
// and returns the checkpoint it started from (0 when it rebuilt the list)
// and how many batches it applied. It does not wait for the feed's head
// to be reached by an entry: after the newest batches are deleted the head
// stays above every entry still readable. When the feed no longer holds
// the entry at the list's checkpoint, the store is not the one the list
// was built from (a local server restarted on memory, say): the
// subscription's stale-checkpoint check finds it, and the list is rebuilt
// from scratch (subscription.OnStale(subscription.Rebuild(...))).
func (l *List) CatchUp(ctx context.Context, feed transport.Feeder) (from int64, applied int, err error) {
	head, err := feed.FeedHead(ctx, transport.Scope{Type: "order"})
	if err != nil {
		return 0, 0, err
	}
	from, _, err = l.cps.Load(ctx, Name)
	if err != nil {
		return 0, 0, err
	}
	rebuilt := false
	sub, err := subscription.New(feed, Name, l.cps, subscription.Feed("order"),
		subscription.OnStale(subscription.Rebuild(func(context.Context) error {
			rebuilt = true
			return l.clear()
		})))
	if err != nil {
		return from, 0, err
	}
	sub.OnEntry(l.cps.Apply(sub.Name(), func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		applied++
		return applyEntry(tx, e)
	}))
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	// A read that reaches the end of the feed counts as caught up to the
	// head it saw, so this returns after deletes too.
	awaitErr := sub.Await(ctx, head)
	closeErr := sub.Close(context.WithoutCancel(ctx))
	err = errors.Join(<-done, closeErr)
	if err == nil && awaitErr != nil {
		err = awaitErr
	}
	if rebuilt {
		from = 0
	}
	return from, applied, err
}

// clear empties the list, for a rebuild.
func (l *List) clear() error {
	return l.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketRows, bucketMeta} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// applyEntry changes the rows for one stored batch.
func applyEntry(tx *bbolt.Tx, e transport.FeedEntry) error {
	b, err := tx.CreateBucketIfNotExists(bucketRows)
	if err != nil {
		return err
	}
	row := Row{ID: e.AggregateID}
	if v := b.Get([]byte(e.AggregateID)); v != nil {
		if err := json.Unmarshal(v, &row); err != nil {
			return err
		}
	}
	if err := row.apply(e); err != nil {
		return err
	}
	v, err := json.Marshal(row)
	if err != nil {
		return err
	}
	return b.Put([]byte(e.AggregateID), v)
}

// apply changes the row for one stored batch of its order.
func (row *Row) apply(e transport.FeedEntry) error {
	for _, ev := range e.Events {
		switch ev.EventType {
		case "OrderPlaced":
			var p orders.OrderPlaced
			if err := json.Unmarshal(ev.Data, &p); err != nil {
				return err
			}
			row.Customer, row.Amount, row.Status = p.CustomerID, p.OrderAmount, "placed"
		case "PaymentReceived":
			var p orders.PaymentReceived
			if err := json.Unmarshal(ev.Data, &p); err != nil {
				return err
			}
			row.Paid += p.AmountPaid
		case "OrderFullyPaid":
			row.Status = "paid"
		case "OrderShipped":
			row.Status = "shipped"
		case "OrderCanceled":
			row.Status = "canceled"
		}
	}
	return nil
}

// Rows returns the list, ordered by id, and its totals.
func (l *List) Rows() ([]Row, Totals, error) {
	var rows []Row
	var t Totals
	err := l.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRows)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r Row
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			rows = append(rows, r)
			t.Orders++
			t.Amount += r.Amount
			t.Paid += r.Paid
			if r.Status == "shipped" {
				t.Shipped++
			}
			return nil
		})
	})
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows, t, err
}

// Checkpoint returns the sequence number the list has reached.
func (l *List) Checkpoint(ctx context.Context) (int64, error) {
	seq, _, err := l.cps.Load(ctx, Name)
	return seq, err
}
