package projection_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// A parked entry, retried once its cause is fixed, goes through the typed
// handlers again in one transaction with its removal: a failing retry
// leaves it parked and the read model unchanged; a good one applies it
// once and unparks it; a second retry finds nothing. The checkpoint does
// not move.
func TestRetryParkedThroughTheHandlers(t *testing.T) {
	tr := memory.New()
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = uuid.NewString()
		put(t, tr, transport.Ref{Type: "order", ID: ids[i]}, "OrderPlaced", OrderPlaced{Total: i + 1})
	}
	db, cps := boltDB(t)
	p := projection.New(cps)
	orders(p)
	broken := true
	projection.On(p, func(_ context.Context, _ *bbolt.Tx, env eventbus.Envelope, _ OrderPlaced) error {
		if broken && env.Sequence == 2 {
			return errors.New("cannot apply 2 yet")
		}
		return nil
	})
	sub, err := subscription.New(tr, "orders", cps, subscription.Wait(time.Second), subscription.Retry(noRetry),
		subscription.OnFailure(subscription.Park(cps)))
	require.NoError(t, err)
	p.Attach(sub)
	run(t, sub, 3)
	require.Equal(t, map[string]int{"1": 1, "3": 1}, bucket(t, db, "applied"))

	ctx := context.Background()
	err = p.Retry(ctx, "orders", 2)
	require.Error(t, err, "the cause is not fixed yet")
	parked, err := cps.ListParked(ctx, "orders")
	require.NoError(t, err)
	require.Len(t, parked, 1, "a failed retry leaves the entry parked")
	assert.Equal(t, map[string]int{"1": 1, "3": 1}, bucket(t, db, "applied"), "and the read model unchanged")

	broken = false
	require.NoError(t, p.Retry(ctx, "orders", 2))
	assert.Equal(t, map[string]int{"1": 1, "2": 1, "3": 1}, bucket(t, db, "applied"))
	assert.Equal(t, map[string]int{ids[0]: 1, ids[1]: 2, ids[2]: 3}, bucket(t, db, "total"), "the typed handlers ran")
	parked, err = cps.ListParked(ctx, "orders")
	require.NoError(t, err)
	assert.Empty(t, parked)
	assert.ErrorIs(t, p.Retry(ctx, "orders", 2), boltcheckpoint.ErrNotParked, "applied once: nothing left to retry")
	assert.ErrorIs(t, cps.Discard(ctx, "orders", 2), boltcheckpoint.ErrNotParked)
	pos, _, _ := cps.Load(ctx, "orders")
	assert.Equal(t, int64(3), pos, "the checkpoint does not move")
}

// A store that keeps no parked entries says so.
func TestRetryNeedsAParkedStore(t *testing.T) {
	p := projection.New[*memTx](&memStore{state: &memTx{rows: map[string]int{}, cps: map[string]subscription.Checkpoint{}}})
	err := p.Retry(context.Background(), "orders", 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "keeps no parked entries")
}

// upcastPlaced renames the old event type OrderCreated to OrderPlaced.
type upcastPlaced struct{}

func (upcastPlaced) Type() string { return "order" }
func (upcastPlaced) Upcast(typ string, data []byte) (string, []byte, error) {
	if typ == "OrderCreated" {
		return "OrderPlaced", data, nil
	}
	return typ, data, nil
}

// A parked entry of an old event type, retried with the subscription's
// upcasters and tenant, reaches the typed handler upcast and with its
// tenant; without them its old type reaches no handler.
func TestRetryUpcastsAndNamesTheTenant(t *testing.T) {
	ctx := context.Background()
	_, cps := boltDB(t)
	id := uuid.NewString()
	entry := transport.FeedEntry{Sequence: 7, AggregateType: "order", AggregateID: id, Version: 1,
		Events: []transport.Event{{EventID: uuid.NewString(), EventType: "OrderCreated", Data: []byte(`{"total":5}`)}}}
	var got []eventbus.Envelope
	p := projection.New(cps)
	projection.On(p, func(_ context.Context, _ *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
		assert.Equal(t, 5, e.Total)
		got = append(got, env)
		return nil
	})
	require.NoError(t, cps.Park(ctx, "orders", entry, errors.New("broken then")))
	require.NoError(t, p.Retry(ctx, "orders", 7, projection.RetryUpcast(upcastPlaced{}), projection.RetryTenant("acme")))
	require.Len(t, got, 1, "the old event type reached the handler of its current one")
	assert.Equal(t, "acme", got[0].Tenant)
	assert.Equal(t, "OrderPlaced", got[0].EventType)
}
