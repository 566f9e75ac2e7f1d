// Command payment processes a payment for an order, and a durable
// subscription pays the order: two aggregates, one process between them
// that never misses a payment, even one stored while it was not running.
//
//	go run ./examples/payment
//	go run ./examples/payment -data shop.db   # run it twice
//	go run ./examples/payment -api http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/examples/internal/backend"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/examples/payment/payments"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/transport"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("payment", flag.ContinueOnError)
	var store backend.Flags
	store.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := store.Open(getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	tr := st.Transport
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	say("sourced: a payment pays an order\n=================================")
	say("   store: %s", st.Desc)

	bus := eventbus.New()
	defer bus.Close(ctx)
	orderRepo := repository.New(tr, orders.Definition)
	paymentRepo := repository.New(tr, payments.Definition, repository.WithPublisher(bus))

	// The process that pays orders follows the payment feed durably. With
	// -data its checkpoint lives beside the data file; elsewhere it starts
	// from the beginning of the feed each run, which orders.PayFor makes
	// safe (each payment is recorded once).
	feed, err := st.Feeder()
	if err != nil {
		return err
	}
	var checkpoints subscription.Checkpoints = subscription.NewMemoryCheckpoints()
	if store.Data != "" {
		db, err := bbolt.Open(st.ViewPath("pay-orders"), 0o600, &bbolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer db.Close()
		if checkpoints, err = boltcheckpoint.New(db); err != nil {
			return err
		}
	}
	process, err := payments.PayOrders(feed, checkpoints, orderRepo)
	if err != nil {
		return err
	}
	if seq, ok, err := checkpoints.Load(ctx, process.Name()); err != nil {
		return err
	} else if ok {
		say("   pay-orders process: resuming after sequence number %d", seq)
	}
	processDone := make(chan error, 1)
	go func() { processDone <- process.Run(ctx) }()
	defer func() {
		_ = process.Close(ctx)
		<-processDone
	}()
	caughtUp := func() error {
		head, err := feed.FeedHead(ctx, transport.Scope{Type: payments.Definition.Type()})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return process.Await(wctx, head)
	}
	// Watch everything the payment repository publishes.
	if _, err := eventbus.SubscribeAll(bus, func(_ context.Context, e eventbus.Envelope) error {
		say("   bus: %s %s v%d published", e.AggregateType, e.EventType, e.Version)
		return nil
	}); err != nil {
		return err
	}

	orderID, paymentID := uuid.NewString(), uuid.NewString()
	say("\n1. Bo places order %s for 250.00 SEK", orderID[:8])
	if _, err := orderRepo.Create(ctx, orderID, orders.Place("bo", 25000)); err != nil {
		return err
	}
	say("\n2. The card payment %s is processed", paymentID[:8])
	res, err := paymentRepo.Create(ctx, paymentID, payments.Process(orderID, "CARD", 25000, "SEK"))
	if err != nil {
		return err
	}
	say("   payment stored at version %d", res.Version)
	if err := caughtUp(); err != nil {
		return err
	}
	say("   the pay-orders subscription handled it (position %d)", process.Position())

	order, err := orderRepo.Load(ctx, orderID)
	if err != nil {
		return err
	}
	say("\n3. The order now: paid %d.%02d SEK, fully paid=%v, version %d",
		order.State().Paid/100, order.State().Paid%100, order.State().FullyPaid, order.Version())

	say("\n4. Half is refunded")
	if res, err = paymentRepo.Update(ctx, paymentID, payments.Refund(12500, "one item damaged")); err != nil {
		return err
	}
	say("   refund stored at version %d", res.Version)

	say("\n5. A refund of more than is left is refused")
	_, err = paymentRepo.Update(ctx, paymentID, payments.Refund(20000, "all of it"))
	if !errors.Is(err, payments.ErrOverRefund) {
		return fmt.Errorf("expected the refund to be refused, got %v", err)
	}
	say("   refused: %v", errors.Unwrap(errors.Unwrap(err)))
	p, err := paymentRepo.Load(ctx, paymentID)
	if err != nil {
		return err
	}
	say("\n6. The payment: %d.%02d %s by %s, %d.%02d refunded", p.State().Amount/100, p.State().Amount%100,
		p.State().Currency, p.State().Method, p.State().Refunded/100, p.State().Refunded%100)
	return nil
}
