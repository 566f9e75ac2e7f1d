package subscription_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A read model kept by a durable subscription: it catches up on what is
// stored, then follows new batches; a restart with the same checkpoint
// store picks up where it stopped.
func ExampleNew() {
	ctx := context.Background()
	store := memory.New()
	order := transport.Ref{Type: "order", ID: uuid.NewString()}
	_ = store.Store(ctx, order, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"total":120}`)}}, transport.MustNotExist)
	_ = store.Store(ctx, order, []transport.Event{{EventType: "OrderPaid", Data: []byte(`{"amount":120}`)}}, transport.Exactly(1))

	checkpoints := subscription.NewMemoryCheckpoints()
	sub, err := subscription.New(store, "revenue", checkpoints, subscription.Feed("order"))
	if err != nil {
		fmt.Println(err)
		return
	}
	revenue := 0
	done := make(chan struct{})
	subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, e OrderPaid) error {
		revenue += e.Amount
		fmt.Printf("sequence %d: %s paid %d\n", env.Sequence, env.EventType, e.Amount)
		close(done)
		return nil
	})
	go func() {
		<-done
		_ = sub.Close(ctx)
	}()
	if err := sub.Run(ctx); err != nil {
		fmt.Println(err)
	}
	pos, _, _ := checkpoints.Load(ctx, "revenue")
	fmt.Println("revenue", revenue, "checkpoint", pos)
	// Output:
	// sequence 2: OrderPaid paid 120
	// revenue 120 checkpoint 2
}

// Partitions let several consumers share one feed; each aggregate's
// batches stay in one partition, in order.
func ExampleRunAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := memory.New()
	for range 6 {
		_ = store.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"total":1}`)}}, transport.Any)
	}
	checkpoints := subscription.NewMemoryCheckpoints()
	handled := make(chan int64, 6)
	var subs []*subscription.Subscription
	for n := range 2 {
		sub, _ := subscription.New(store, "placed", checkpoints, subscription.Partition(2, n))
		subscription.On(sub, func(_ context.Context, env eventbus.Envelope, _ OrderPlaced) error {
			handled <- env.Sequence
			return nil
		})
		subs = append(subs, sub)
	}
	go func() {
		for range 6 {
			<-handled
		}
		cancel()
	}()
	_ = subscription.RunAll(ctx, subs...)
	fmt.Println(subs[0].Name(), "and", subs[1].Name(), "handled all 6 batches")
	// Output: placed#0/2 and placed#1/2 handled all 6 batches
}
