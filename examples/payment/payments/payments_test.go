package payments_test

import (
	"context"
	"testing"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate/aggregatetest"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/examples/payment/payments"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
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

// Given an order, when its payment is processed, then the durable process
// pays the order, once, even when the payment is delivered again.
func TestPaymentPaysTheOrder(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	orderRepo := repository.New(store, orders.Definition)
	paymentRepo := repository.New(store, payments.Definition)
	checkpoints := subscription.NewMemoryCheckpoints()

	orderID, paymentID := uuid.NewString(), uuid.NewString()
	_, err := orderRepo.Create(ctx, orderID, orders.Place("ann", 1000))
	require.NoError(t, err)
	// Stored before the process runs: it is still handled.
	_, err = paymentRepo.Create(ctx, paymentID, payments.Process(orderID, "CARD", 600, "SEK"))
	require.NoError(t, err)

	run := func() {
		t.Helper()
		sub, err := payments.PayOrders(store, checkpoints, orderRepo, subscription.Retry(func() backoff.BackOff { return &backoff.StopBackOff{} }))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- sub.Run(ctx) }()
		head, err := store.FeedHead(ctx, transport.Scope{Type: "payment"})
		require.NoError(t, err)
		require.NoError(t, sub.Await(ctx, head))
		require.NoError(t, sub.Close(ctx))
		require.NoError(t, <-done)
	}
	run()
	order, err := orderRepo.Load(ctx, orderID)
	require.NoError(t, err)
	assert.Equal(t, int64(600), order.State().Paid)
	assert.Equal(t, []string{paymentID}, order.State().Payments)

	// The same batch delivered again (a lost checkpoint) pays nothing twice.
	require.NoError(t, checkpoints.Save(ctx, "pay-orders", 0))
	run()
	order, err = orderRepo.Load(ctx, orderID)
	require.NoError(t, err)
	assert.Equal(t, int64(600), order.State().Paid)
	assert.Equal(t, int64(2), order.Version())
}

func TestPayForOnce(t *testing.T) {
	placed := orders.OrderPlaced{CustomerID: "ann", OrderAmount: 1000}
	aggregatetest.Given(orders.Definition, placed).When(orders.PayFor("p-1", 400)).
		Then(t, orders.PaymentReceived{CustomerID: "ann", AmountPaid: 400, PaymentID: "p-1"})
	aggregatetest.Given(orders.Definition, placed, orders.PaymentReceived{CustomerID: "ann", AmountPaid: 400, PaymentID: "p-1"}).
		When(orders.PayFor("p-1", 400)).Then(t)
}
