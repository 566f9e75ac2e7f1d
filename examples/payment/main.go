// Command payment processes a payment for an order and lets the event bus
// pay the order: two aggregates, one process between them.
//
//	go run ./examples/payment
//	go run ./examples/payment -api http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/examples/internal/backend"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/examples/payment/payments"
	"github.com/sourced-go/sourced/repository"
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
	tr, desc, err := store.Open(getenv)
	if err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	say("sourced: a payment pays an order\n=================================")
	say("   store: %s", desc)

	bus := eventbus.New()
	defer bus.Close(ctx)
	orderRepo := repository.New(tr, orders.Definition)
	paymentRepo := repository.New(tr, payments.Definition, repository.WithPublisher(bus))
	if _, err := payments.PayOrders(bus, orderRepo); err != nil {
		return err
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
	say("   payment stored at version %d; the pay-orders process ran on the bus", res.Version)

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
