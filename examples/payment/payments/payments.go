// Package payments is the domain of the payment example: a payment for an
// order is processed, and may be refunded. PaymentProcessed has the fields
// of the Serialized documentation's own example.
package payments

import (
	"context"
	"errors"
	"fmt"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
)

// Domain errors, for errors.Is.
var (
	ErrAlreadyProcessed = errors.New("payment already processed")
	ErrNotProcessed     = errors.New("payment not processed")
	ErrBadAmount        = errors.New("amount must be positive")
	ErrOverRefund       = errors.New("refund exceeds what was paid")
)

// Payment is the state of one payment. Amounts are in minor units.
type Payment struct {
	Processed bool
	OrderID   string
	Method    string
	Amount    int64
	Currency  string
	Refunded  int64
}

// PaymentProcessed: money was taken for an order.
type PaymentProcessed struct {
	OrderID       string `json:"orderId"`
	PaymentMethod string `json:"paymentMethod"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
}

// PaymentRefunded: some or all of it went back.
type PaymentRefunded struct {
	Amount int64  `json:"amount"`
	Reason string `json:"reason"`
}

// Definition is the payment aggregate, type "payment".
var Definition = aggregate.MustNew[Payment]("payment",
	aggregate.On(func(p *Payment, e PaymentProcessed) {
		p.Processed, p.OrderID, p.Method, p.Amount, p.Currency = true, e.OrderID, e.PaymentMethod, e.Amount, e.Currency
	}),
	aggregate.On(func(p *Payment, e PaymentRefunded) { p.Refunded += e.Amount }),
)

// Process takes a payment for an order.
func Process(orderID, method string, amount int64, currency string) func(*aggregate.Root[Payment]) error {
	return func(r *aggregate.Root[Payment]) error {
		switch {
		case r.State().Processed:
			return ErrAlreadyProcessed
		case amount <= 0:
			return fmt.Errorf("%w: %d", ErrBadAmount, amount)
		}
		return r.Record(PaymentProcessed{OrderID: orderID, PaymentMethod: method, Amount: amount, Currency: currency})
	}
}

// Refund gives back part or all of a processed payment.
func Refund(amount int64, reason string) func(*aggregate.Root[Payment]) error {
	return func(r *aggregate.Root[Payment]) error {
		p := r.State()
		switch {
		case !p.Processed:
			return ErrNotProcessed
		case amount <= 0:
			return fmt.Errorf("%w: %d", ErrBadAmount, amount)
		case p.Refunded+amount > p.Amount:
			return fmt.Errorf("%w: %d refunded of %d, %d more asked", ErrOverRefund, p.Refunded, p.Amount, amount)
		}
		return r.Record(PaymentRefunded{Amount: amount, Reason: reason})
	}
}

// PayOrders is the process between the two aggregates, as a durable
// subscription to the payment feed: when a payment is processed, the order
// it is for records it (orders.PayFor, once per payment id, so a batch
// delivered again after a crash pays nothing twice). Run the returned
// subscription; its checkpoint lives in checkpoints, so a restart goes on
// where it stopped, and a payment stored while no process ran is still
// handled.
func PayOrders(feed transport.Feeder, checkpoints subscription.Checkpoints, orderRepo *repository.Repository[orders.Order], opts ...subscription.Option) (*subscription.Subscription, error) {
	sub, err := subscription.New(feed, "pay-orders", checkpoints, append([]subscription.Option{subscription.Feed(Definition.Type())}, opts...)...)
	if err != nil {
		return nil, err
	}
	subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, e PaymentProcessed) error {
		_, err := orderRepo.Update(ctx, e.OrderID, orders.PayFor(env.AggregateID, e.Amount))
		return err
	})
	return sub, nil
}
