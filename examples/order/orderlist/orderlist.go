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
	"fmt"
	"sort"
	"sync/atomic"
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
	bucketMeta = []byte("order-list-meta")
	keyMarker  = []byte("marker")
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
// and returns the checkpoint it started from and how many batches it
// applied. It does not wait for the feed's head: after the newest batches
// are deleted the head stays above every entry still readable. When the feed entry at the
// checkpoint is not the one the list applied last, the store is not the one
// the list was built from (a local server restarted on memory, say), and
// the list is rebuilt from scratch.
func (l *List) CatchUp(ctx context.Context, feed transport.Feeder) (from int64, applied int, err error) {
	head, err := feed.FeedHead(ctx, transport.Scope{Type: "order"})
	if err != nil {
		return 0, 0, err
	}
	from, _, err = l.cps.Load(ctx, Name)
	if err != nil {
		return 0, 0, err
	}
	if from > 0 {
		same, err := l.sameStore(ctx, feed, from)
		if err != nil {
			return 0, 0, err
		}
		if !same {
			if err := l.reset(ctx); err != nil {
				return 0, 0, err
			}
			from = 0
		}
	}
	if from >= head {
		return from, 0, nil
	}
	ends := &untilEnd{Feeder: feed}
	sub, err := subscription.New(ends, Name, l.cps, subscription.Feed("order"))
	if err != nil {
		return from, 0, err
	}
	apply := l.cps.Apply(sub.Name(), func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		applied++
		return applyEntry(tx, e)
	})
	stop := func() { go func() { _ = sub.Close(context.WithoutCancel(ctx)) }() }
	ends.stop = stop
	sub.OnEntry(func(ctx context.Context, e transport.FeedEntry) error {
		if err := apply(ctx, e); err != nil {
			return err
		}
		if end := ends.end.Load(); end > 0 && e.Sequence >= end {
			stop()
		}
		return nil
	})
	return from, applied, sub.Run(ctx)
}

// untilEnd is the feed as CatchUp's subscription reads it: reads do not
// wait, and the first page that says there is no more marks the end (its
// last entry), or stops the subscription at once when it is empty.
type untilEnd struct {
	transport.Feeder
	end  atomic.Int64
	stop func()
}

// ReadFeed reads without waiting and notes where the feed ends.
func (u *untilEnd) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	q.Wait = 0
	p, err := u.Feeder.ReadFeed(ctx, q)
	if err != nil || p.HasMore {
		return p, err
	}
	if len(p.Entries) == 0 {
		u.stop()
	} else {
		u.end.Store(p.Entries[len(p.Entries)-1].Sequence)
	}
	return p, nil
}

// sameStore reports whether the feed's entry at the checkpoint is the one
// the list applied last.
func (l *List) sameStore(ctx context.Context, feed transport.Feeder, checkpoint int64) (bool, error) {
	var marker string
	if err := l.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			marker = string(b.Get(keyMarker))
		}
		return nil
	}); err != nil {
		return false, err
	}
	p, err := feed.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: checkpoint - 1, Limit: 1})
	if err != nil {
		return false, err
	}
	return len(p.Entries) == 1 && p.Entries[0].Sequence == checkpoint && len(p.Entries[0].Events) > 0 &&
		p.Entries[0].Events[0].EventID == marker, nil
}

// reset empties the list and forgets its checkpoint.
func (l *List) reset(ctx context.Context) error {
	err := l.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketRows, bucketMeta} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return l.cps.Reset(ctx, Name)
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
	v, err := json.Marshal(row)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(e.AggregateID), v); err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil || len(e.Events) == 0 {
		return err
	}
	return meta.Put(keyMarker, []byte(e.Events[0].EventID))
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
