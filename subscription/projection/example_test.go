package projection_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A read model of order totals in a bbolt file, kept exactly once by
// typed handlers that receive the page's transaction.
func Example() {
	ctx := context.Background()
	store := memory.New()
	const orderID = "0b6f9a52-5d2e-4a43-9d1e-2f4f1c3a7e01"
	for _, e := range []transport.Event{
		{EventType: "OrderPlaced", Data: []byte(`{"total":30}`)},
		{EventType: "OrderPaid", Data: []byte(`{"amount":30}`)},
	} {
		if err := store.Store(ctx, transport.Ref{Type: "order", ID: orderID}, []transport.Event{e}, transport.Any); err != nil {
			panic(err)
		}
	}

	dir, _ := os.MkdirTemp("", "projection-example")
	defer os.RemoveAll(dir)
	db, err := bbolt.Open(filepath.Join(dir, "orders.db"), 0o600, nil)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	cps, err := boltcheckpoint.New(db)
	if err != nil {
		panic(err)
	}

	p := projection.New(cps)
	set := func(tx *bbolt.Tx, id, field string, n int) error {
		b, err := tx.CreateBucketIfNotExists([]byte("orders"))
		if err != nil {
			return err
		}
		return b.Put([]byte(id+"/"+field), []byte(strconv.Itoa(n)))
	}
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
		return set(tx, env.AggregateID, "total", e.Total)
	})
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPaid) error {
		return set(tx, env.AggregateID, "paid", e.Amount)
	})

	sub, err := subscription.New(store, "orders", cps, subscription.Feed("order"))
	if err != nil {
		panic(err)
	}
	p.Attach(sub)
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	_ = sub.Await(ctx, 2) // caught up with the feed's head
	_ = sub.Close(ctx)
	if err := <-done; err != nil {
		panic(err)
	}

	_ = db.View(func(tx *bbolt.Tx) error {
		_ = tx.Bucket([]byte("orders")).ForEach(func(k, v []byte) error {
			fmt.Printf("%s = %s\n", k, v)
			return nil
		})
		c, _ := boltcheckpoint.GetCheckpoint(tx, "orders")
		fmt.Println("checkpoint at", c.Sequence)
		return nil
	})
	// Output:
	// 0b6f9a52-5d2e-4a43-9d1e-2f4f1c3a7e01/paid = 30
	// 0b6f9a52-5d2e-4a43-9d1e-2f4f1c3a7e01/total = 30
	// checkpoint at 2
}
