package orders_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sourced-go/sourced/aggregate/aggregatetest"
	"github.com/sourced-go/sourced/examples/order/orders"
)

const ann = "ann"

var placed = orders.OrderPlaced{CustomerID: ann, OrderAmount: 1000}

func TestPlace(t *testing.T) {
	aggregatetest.Given(orders.Definition).When(orders.Place(ann, 1000)).Then(t, placed)
	aggregatetest.Given(orders.Definition, placed).When(orders.Place(ann, 1000)).ThenError(t, orders.ErrAlreadyPlaced)
	aggregatetest.Given(orders.Definition).When(orders.Place(ann, 0)).ThenError(t, orders.ErrBadAmount)
}

func TestPayInPartsThenFully(t *testing.T) {
	root := aggregatetest.Given(orders.Definition, placed).
		When(orders.Pay(400)).
		Then(t, orders.PaymentReceived{CustomerID: ann, AmountPaid: 400})
	assert.Equal(t, int64(400), root.State().Paid)
	assert.False(t, root.State().FullyPaid)

	aggregatetest.Given(orders.Definition, placed, orders.PaymentReceived{CustomerID: ann, AmountPaid: 400}).
		When(orders.Pay(600)).
		Then(t, orders.PaymentReceived{CustomerID: ann, AmountPaid: 600}, orders.OrderFullyPaid{CustomerID: ann})
}

func TestOverpaymentStillCompletes(t *testing.T) {
	aggregatetest.Given(orders.Definition, placed).
		When(orders.Pay(1500)).
		Then(t, orders.PaymentReceived{CustomerID: ann, AmountPaid: 1500}, orders.OrderFullyPaid{CustomerID: ann})
}

func TestPayRules(t *testing.T) {
	aggregatetest.Given(orders.Definition).When(orders.Pay(10)).ThenError(t, orders.ErrNotPlaced)
	aggregatetest.Given(orders.Definition, placed).When(orders.Pay(-5)).ThenError(t, orders.ErrBadAmount)
	aggregatetest.Given(orders.Definition, placed, orders.OrderCanceled{CustomerID: ann}).When(orders.Pay(10)).ThenError(t, orders.ErrCanceled)
	aggregatetest.Given(orders.Definition, placed, orders.PaymentReceived{AmountPaid: 1000}, orders.OrderFullyPaid{}).
		When(orders.Pay(10)).ThenError(t, orders.ErrAlreadyPaid)
}

func TestShip(t *testing.T) {
	paid := []any{placed, orders.PaymentReceived{CustomerID: ann, AmountPaid: 1000}, orders.OrderFullyPaid{CustomerID: ann}}
	aggregatetest.Given(orders.Definition, paid...).When(orders.Ship("TRK-1")).
		Then(t, orders.OrderShipped{CustomerID: ann, TrackingNumber: "TRK-1"})
	aggregatetest.Given(orders.Definition, append(paid, orders.OrderShipped{TrackingNumber: "TRK-1"})...).
		When(orders.Ship("TRK-1")).ThenNothing(t)
	aggregatetest.Given(orders.Definition, placed).When(orders.Ship("TRK-1")).ThenError(t, orders.ErrNotFullyPaid)
	aggregatetest.Given(orders.Definition, paid...).When(orders.Ship("")).ThenError(t, orders.ErrMissingTracking)
	aggregatetest.Given(orders.Definition, placed, orders.OrderCanceled{}).When(orders.Ship("TRK-1")).ThenError(t, orders.ErrCanceled)
}

func TestCancel(t *testing.T) {
	aggregatetest.Given(orders.Definition, placed).When(orders.Cancel("changed my mind")).
		Then(t, orders.OrderCanceled{CustomerID: ann, Reason: "changed my mind"})
	aggregatetest.Given(orders.Definition, placed, orders.OrderCanceled{}).When(orders.Cancel("again")).ThenNothing(t)
	aggregatetest.Given(orders.Definition, placed, orders.PaymentReceived{AmountPaid: 1000}, orders.OrderFullyPaid{}, orders.OrderShipped{}).
		When(orders.Cancel("too late")).ThenError(t, orders.ErrAlreadyShipped)
	aggregatetest.Given(orders.Definition).When(orders.Cancel("x")).ThenError(t, orders.ErrNotPlaced)
}
