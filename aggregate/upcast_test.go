package aggregate_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

type wallet struct {
	Owner   string
	Balance int64 // cents
}

// The current events.
type WalletOpened struct {
	Owner string `json:"owner"`
}
type MoneyDeposited struct {
	Cents int64 `json:"cents"`
}

// Version 1 of the history stored "WalletCreated" (renamed since) and
// "Deposited" with {"amount": 1.25} in whole currency units; version 2 of
// Deposited stored {"amountCents": 125}; the current name and shape is
// MoneyDeposited {"cents": 125}.
var wallets = aggregate.MustNew[wallet]("wallet",
	aggregate.On(func(a *wallet, e WalletOpened) { a.Owner = e.Owner }),
	aggregate.On(func(a *wallet, e MoneyDeposited) { a.Balance += e.Cents }),
	aggregate.Upcast[wallet]("WalletCreated", aggregate.Rename("WalletOpened")),
	aggregate.Upcast[wallet]("Deposited", func(data []byte) (string, []byte, error) {
		var v1 struct {
			Amount *float64 `json:"amount"`
		}
		if err := json.Unmarshal(data, &v1); err != nil {
			return "", nil, err
		}
		if v1.Amount == nil {
			return "DepositedV2", data, nil // already the second shape
		}
		out, err := json.Marshal(map[string]int64{"amountCents": int64(*v1.Amount*100 + 0.5)})
		return "DepositedV2", out, err
	}),
	aggregate.Upcast[wallet]("DepositedV2", func(data []byte) (string, []byte, error) {
		var v2 struct {
			AmountCents int64 `json:"amountCents"`
		}
		if err := json.Unmarshal(data, &v2); err != nil {
			return "", nil, err
		}
		out, err := json.Marshal(MoneyDeposited{Cents: v2.AmountCents})
		return "MoneyDeposited", out, err
	}),
)

func TestOldEventsLoadAsNewOnes(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	id := uuid.NewString()
	ref := transport.Ref{Type: "wallet", ID: id}
	// History as an older program stored it.
	for _, e := range []transport.Event{
		{EventType: "WalletCreated", Data: json.RawMessage(`{"owner":"ada"}`)},
		{EventType: "Deposited", Data: json.RawMessage(`{"amount":1.25}`)},
		{EventType: "Deposited", Data: json.RawMessage(`{"amountCents":300}`)},
	} {
		require.NoError(t, tr.Store(ctx, ref, []transport.Event{e}, transport.Any))
	}
	repo := repository.New(tr, wallets)
	_, err := repo.Update(ctx, id, func(r *aggregate.Root[wallet]) error {
		assert.Equal(t, wallet{Owner: "ada", Balance: 425}, *r.State())
		return r.Record(MoneyDeposited{Cents: 75})
	})
	require.NoError(t, err)
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, wallet{Owner: "ada", Balance: 500}, *root.State())

	// The stored history is untouched: old events keep their old form.
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, []string{"WalletCreated", "Deposited", "Deposited", "MoneyDeposited"},
		[]string{p.Events[0].EventType, p.Events[1].EventType, p.Events[2].EventType, p.Events[3].EventType})
	assert.JSONEq(t, `{"amount":1.25}`, string(p.Events[1].Data))
}

func TestUpcastForReaders(t *testing.T) {
	typ, data, err := wallets.Upcast("Deposited", []byte(`{"amount":2}`))
	require.NoError(t, err)
	assert.Equal(t, "MoneyDeposited", typ)
	assert.JSONEq(t, `{"cents":200}`, string(data))
	typ, data, err = wallets.Upcast("MoneyDeposited", []byte(`{"cents":1}`))
	require.NoError(t, err)
	assert.Equal(t, "MoneyDeposited", typ, "current events pass through")
	assert.JSONEq(t, `{"cents":1}`, string(data))

	_, _, err = wallets.Upcast("Deposited", []byte(`{"amount":"lots"}`))
	assert.ErrorIs(t, err, aggregate.ErrDecode)
}

func TestUpcasterDefinitionErrors(t *testing.T) {
	_, err := aggregate.New[wallet]("wallet", aggregate.Upcast[wallet]("Old", nil))
	assert.ErrorIs(t, err, aggregate.ErrDefinition)
	_, err = aggregate.New[wallet]("wallet", aggregate.Upcast[wallet]("bad name!", aggregate.Rename("X")))
	assert.ErrorIs(t, err, aggregate.ErrDefinition)
	_, err = aggregate.New[wallet]("wallet", aggregate.Upcast[wallet]("Old", aggregate.Rename("A1x")), aggregate.Upcast[wallet]("Old", aggregate.Rename("B1x")))
	assert.ErrorIs(t, err, aggregate.ErrDefinition)

	loop := aggregate.MustNew[wallet]("wallet",
		aggregate.Upcast[wallet]("Ping", aggregate.Rename("Pong")),
		aggregate.Upcast[wallet]("Pong", aggregate.Rename("Ping")))
	_, _, err = loop.Upcast("Ping", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a loop?")
	root := loop.New(uuid.NewString())
	assert.Error(t, root.Replay("Ping", nil), "a loop fails the load")
}
