// Package orders is the domain of the order example: an order is placed,
// paid (in one or more payments), shipped, or canceled. Event names and
// fields follow the Serialized samples, so history written by other
// Serialized clients reads back.
package orders

import (
	"errors"
	"fmt"
	"slices"

	"github.com/sourced-go/sourced/aggregate"
)

// Domain errors, for errors.Is.
var (
	ErrAlreadyPlaced   = errors.New("order already placed")
	ErrNotPlaced       = errors.New("order not placed")
	ErrBadAmount       = errors.New("amount must be positive")
	ErrAlreadyPaid     = errors.New("order already fully paid")
	ErrNotFullyPaid    = errors.New("order not fully paid")
	ErrAlreadyShipped  = errors.New("order already shipped")
	ErrCanceled        = errors.New("order canceled")
	ErrMissingTracking = errors.New("tracking number required")
)

// Order is the state of one order. Amounts are in minor units (cents).
type Order struct {
	Placed         bool
	CustomerID     string
	Amount         int64
	Paid           int64
	FullyPaid      bool
	Shipped        bool
	TrackingNumber string
	Canceled       bool
	CancelReason   string
	// Payments are the ids of the payments recorded with PayFor.
	Payments []string
}

// OrderPlaced: a customer placed an order for an amount.
type OrderPlaced struct {
	CustomerID  string `json:"customerId"`
	OrderAmount int64  `json:"orderAmount"`
}

// PaymentReceived: money came in for the order.
type PaymentReceived struct {
	CustomerID string `json:"customerId"`
	AmountPaid int64  `json:"amountPaid"`
	// PaymentID names the payment, when one is known (see PayFor).
	PaymentID string `json:"paymentId,omitempty"`
}

// OrderFullyPaid: the payments reached the order amount.
type OrderFullyPaid struct {
	CustomerID string `json:"customerId"`
}

// OrderShipped: the order left the warehouse.
type OrderShipped struct {
	CustomerID     string `json:"customerId"`
	TrackingNumber string `json:"trackingNumber"`
}

// OrderCanceled: the order was canceled before shipping.
type OrderCanceled struct {
	CustomerID string `json:"customerId"`
	Reason     string `json:"reason"`
}

// Definition is the order aggregate: type "order" and its handlers.
var Definition = aggregate.MustNew[Order]("order",
	aggregate.On(func(o *Order, e OrderPlaced) {
		o.Placed, o.CustomerID, o.Amount = true, e.CustomerID, e.OrderAmount
	}),
	aggregate.On(func(o *Order, e PaymentReceived) {
		o.Paid += e.AmountPaid
		if e.PaymentID != "" {
			o.Payments = append(o.Payments, e.PaymentID)
		}
	}),
	aggregate.On(func(o *Order, _ OrderFullyPaid) { o.FullyPaid = true }),
	aggregate.On(func(o *Order, e OrderShipped) { o.Shipped, o.TrackingNumber = true, e.TrackingNumber }),
	aggregate.On(func(o *Order, e OrderCanceled) { o.Canceled, o.CancelReason = true, e.Reason }),
)

// Command is what the order commands are: functions on the root.
type Command = func(*aggregate.Root[Order]) error

// Place places a new order. Use it with repository.Create, which also
// refuses an id that already exists.
func Place(customerID string, amount int64) Command {
	return func(r *aggregate.Root[Order]) error {
		if r.State().Placed {
			return ErrAlreadyPlaced
		}
		if amount <= 0 {
			return fmt.Errorf("%w: order amount %d", ErrBadAmount, amount)
		}
		return r.Record(OrderPlaced{CustomerID: customerID, OrderAmount: amount})
	}
}

// Pay records a payment and, when the paid total reaches the order amount,
// OrderFullyPaid in the same batch.
func Pay(amount int64) Command { return pay(amount, "") }

func pay(amount int64, paymentID string) Command {
	return func(r *aggregate.Root[Order]) error {
		o := r.State()
		switch {
		case !o.Placed:
			return ErrNotPlaced
		case o.Canceled:
			return ErrCanceled
		case o.FullyPaid:
			return ErrAlreadyPaid
		case amount <= 0:
			return fmt.Errorf("%w: payment %d", ErrBadAmount, amount)
		}
		if err := r.Record(PaymentReceived{CustomerID: o.CustomerID, AmountPaid: amount, PaymentID: paymentID}); err != nil {
			return err
		}
		if o.Paid >= o.Amount {
			return r.Record(OrderFullyPaid{CustomerID: o.CustomerID})
		}
		return nil
	}
}

// PayFor records the payment paymentID for the order, once: when that
// payment is recorded already it changes nothing and records nothing, so a
// reaction that is delivered twice pays once.
func PayFor(paymentID string, amount int64) Command {
	return func(r *aggregate.Root[Order]) error {
		if slices.Contains(r.State().Payments, paymentID) {
			return nil
		}
		return pay(amount, paymentID)(r)
	}
}

// Ship ships a fully paid order. Shipping it again changes nothing and
// records nothing.
func Ship(trackingNumber string) Command {
	return func(r *aggregate.Root[Order]) error {
		o := r.State()
		switch {
		case !o.Placed:
			return ErrNotPlaced
		case o.Shipped:
			return nil
		case o.Canceled:
			return ErrCanceled
		case !o.FullyPaid:
			return fmt.Errorf("%w: %d of %d paid", ErrNotFullyPaid, o.Paid, o.Amount)
		case trackingNumber == "":
			return ErrMissingTracking
		}
		return r.Record(OrderShipped{CustomerID: o.CustomerID, TrackingNumber: trackingNumber})
	}
}

// Cancel cancels an order that has not shipped. Canceling it again changes
// nothing and records nothing.
func Cancel(reason string) Command {
	return func(r *aggregate.Root[Order]) error {
		o := r.State()
		switch {
		case !o.Placed:
			return ErrNotPlaced
		case o.Canceled:
			return nil
		case o.Shipped:
			return ErrAlreadyShipped
		}
		return r.Record(OrderCanceled{CustomerID: o.CustomerID, Reason: reason})
	}
}
