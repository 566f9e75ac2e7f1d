package payments_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate/aggregatetest"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/examples/payment/payments"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

var processed = payments.PaymentProcessed{OrderID: "o-1", PaymentMethod: "CARD", Amount: 1000, Currency: "SEK"}

func TestProcess(t *testing.T) {
	aggregatetest.Given(payments.Definition).When(payments.Process("o-1", "CARD", 1000, "SEK")).Then(t, processed)
	aggregatetest.Given(payments.Definition, processed).When(payments.Process("o-1", "CARD", 1000, "SEK")).ThenError(t, payments.ErrAlreadyProcessed)
	aggregatetest.Given(payments.Definition).When(payments.Process("o-1", "CARD", 0, "SEK")).ThenError(t, payments.ErrBadAmount)
}

func TestRefund(t *testing.T) {
	aggregatetest.Given(payments.Definition, processed).When(payments.Refund(400, "damaged")).
		Then(t, payments.PaymentRefunded{Amount: 400, Reason: "damaged"})
	aggregatetest.Given(payments.Definition, processed, payments.PaymentRefunded{Amount: 800}).
		When(payments.Refund(300, "again")).ThenError(t, payments.ErrOverRefund)
	aggregatetest.Given(payments.Definition).When(payments.Refund(1, "x")).ThenError(t, payments.ErrNotProcessed)
	aggregatetest.Given(payments.Definition, processed).When(payments.Refund(-1, "x")).ThenError(t, payments.ErrBadAmount)
}

// Given an order, when its payment is processed, then the order is paid,
// through the event bus.
func TestPaymentPaysTheOrder(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	bus := eventbus.New()
	defer bus.Close(ctx)
	orderRepo := repository.New(store, orders.Definition)
	paymentRepo := repository.New(store, payments.Definition, repository.WithPublisher(bus))
	_, err := payments.PayOrders(bus, orderRepo)
	require.NoError(t, err)

	orderID := uuid.NewString()
	_, err = orderRepo.Create(ctx, orderID, orders.Place("ann", 1000))
	require.NoError(t, err)
	_, err = paymentRepo.Create(ctx, uuid.NewString(), payments.Process(orderID, "CARD", 1000, "SEK"))
	require.NoError(t, err)

	order, err := orderRepo.Load(ctx, orderID)
	require.NoError(t, err)
	assert.True(t, order.State().FullyPaid)
	assert.Equal(t, int64(2), order.Version())

	// A payment for an order that does not exist: the payment is stored, the
	// failure of the process is reported.
	_, err = paymentRepo.Create(ctx, uuid.NewString(), payments.Process(uuid.NewString(), "CARD", 5, "SEK"))
	assert.ErrorIs(t, err, repository.ErrPublish)
}
