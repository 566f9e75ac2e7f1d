package aggregate_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
)

type account struct {
	Opened  bool
	Balance int
	Notes   []string
}

type AccountOpened struct {
	Owner string `json:"owner"`
}
type Deposited struct {
	Amount int `json:"amount"`
}
type withdrawn struct {
	Amount int `json:"amount"`
}

func accounts(t *testing.T, extra ...aggregate.Option[account]) *aggregate.Definition[account] {
	t.Helper()
	opts := append([]aggregate.Option[account]{
		aggregate.On(func(a *account, e AccountOpened) { a.Opened = true }),
		aggregate.On(func(a *account, e Deposited) { a.Balance += e.Amount }),
		aggregate.OnNamed("MoneyWithdrawn", func(a *account, e withdrawn) { a.Balance -= e.Amount }),
	}, extra...)
	d, err := aggregate.New[account]("account", opts...)
	require.NoError(t, err)
	return d
}

func TestDefinitionNamesEvents(t *testing.T) {
	d := accounts(t)
	assert.Equal(t, "account", d.Type())
	assert.Equal(t, []string{"AccountOpened", "Deposited", "MoneyWithdrawn"}, d.EventTypes())
	name, ok := d.EventType(withdrawn{})
	assert.True(t, ok)
	assert.Equal(t, "MoneyWithdrawn", name, "an explicit name wins over the Go type name")
	_, ok = d.EventType(42)
	assert.False(t, ok)
}

func TestDefinitionErrors(t *testing.T) {
	noop := func(*account, Deposited) {}
	cases := map[string][]aggregate.Option[account]{
		"duplicate name":        {aggregate.On(noop), aggregate.OnNamed("Deposited", func(*account, withdrawn) {})},
		"same Go type twice":    {aggregate.On(noop), aggregate.OnNamed("MoneyIn", noop)},
		"bad event name":        {aggregate.OnNamed("no", noop)},
		"event name with space": {aggregate.OnNamed("Money In", noop)},
		"nil handler":           {aggregate.On[account, Deposited](nil)},
		"nil option":            {nil},
		"nil default":           {aggregate.DefaultHandler[account](nil)},
		"nil initial":           {aggregate.Initial[account](nil)},
	}
	for name, opts := range cases {
		_, err := aggregate.New[account]("account", opts...)
		assert.ErrorIs(t, err, aggregate.ErrDefinition, name)
		if err != nil {
			assert.Contains(t, err.Error(), "account", name)
		}
	}
	for _, bad := range []string{"", "Account", "ab", "-account", "acc ount"} {
		_, err := aggregate.New[account](bad)
		assert.ErrorIs(t, err, aggregate.ErrDefinition, "aggregate type %q", bad)
	}
	assert.Panics(t, func() { aggregate.MustNew[account]("Bad") })
}

func TestRecordAppliesAndKeeps(t *testing.T) {
	d := accounts(t)
	id := uuid.NewString()
	r := d.New(id)
	assert.Equal(t, id, r.ID())
	assert.Equal(t, "account", r.Type())
	assert.Equal(t, int64(0), r.Version())

	require.NoError(t, r.Record(AccountOpened{Owner: "ann"}))
	require.NoError(t, r.Record(Deposited{Amount: 100}))
	require.NoError(t, r.RecordEncrypted(withdrawn{Amount: 30}, "c2VjcmV0"))
	assert.Equal(t, 70, r.State().Balance, "handlers apply at once")
	assert.Equal(t, int64(0), r.Version(), "recording does not change the version")

	rec := r.Uncommitted()
	require.Len(t, rec, 3)
	assert.Equal(t, "AccountOpened", rec[0].EventType)
	assert.JSONEq(t, `{"owner":"ann"}`, string(rec[0].Data))
	assert.Equal(t, "MoneyWithdrawn", rec[2].EventType)
	assert.Equal(t, "c2VjcmV0", rec[2].EncryptedData)
	assert.Equal(t, withdrawn{Amount: 30}, rec[2].Value)
	ids := map[string]bool{}
	for _, e := range rec {
		_, err := uuid.Parse(e.EventID)
		assert.NoError(t, err)
		ids[e.EventID] = true
	}
	assert.Len(t, ids, 3, "each event gets its own id")

	r.Commit(5)
	assert.Equal(t, int64(5), r.Version())
	assert.Empty(t, r.Uncommitted())
}

func TestRecordUnregistered(t *testing.T) {
	d := accounts(t)
	id := uuid.NewString()
	r := d.New(id)
	err := r.Record(struct{ X int }{1})
	require.ErrorIs(t, err, aggregate.ErrUnregisteredEvent)
	assert.Contains(t, err.Error(), id)
	assert.Contains(t, err.Error(), "account")
	assert.ErrorIs(t, r.Record(&Deposited{Amount: 1}), aggregate.ErrUnregisteredEvent, "a pointer is another Go type")
	assert.Empty(t, r.Uncommitted())
}

func TestRecordEncodeFailure(t *testing.T) {
	type Weird struct{ C chan int }
	d, err := aggregate.New[account]("account", aggregate.On(func(*account, Weird) {}))
	require.NoError(t, err)
	r := d.New(uuid.NewString())
	assert.Error(t, r.Record(Weird{C: make(chan int)}))
	assert.Empty(t, r.Uncommitted(), "an event that cannot be encoded is not kept")
}

func TestReplay(t *testing.T) {
	d := accounts(t)
	id := uuid.NewString()
	r := d.New(id)
	require.NoError(t, r.Replay("AccountOpened", []byte(`{"owner":"bo"}`)))
	require.NoError(t, r.Replay("Deposited", []byte(`{"amount":10}`)))
	require.NoError(t, r.Replay("MoneyWithdrawn", []byte(`{"amount":3}`)))
	require.NoError(t, r.Replay("Deposited", nil), "an event without data replays as the zero value")
	assert.Equal(t, 7, r.State().Balance)
	assert.Empty(t, r.Uncommitted(), "replayed events are history, not new events")

	err := r.Replay("AccountClosed", []byte(`{}`))
	require.ErrorIs(t, err, aggregate.ErrUnknownEvent)
	assert.Contains(t, err.Error(), "AccountClosed")
	assert.Contains(t, err.Error(), id)
	assert.Contains(t, err.Error(), "account")

	err = r.Replay("Deposited", []byte(`{"amount":"ten"}`))
	assert.ErrorIs(t, err, aggregate.ErrDecode)
	assert.Contains(t, err.Error(), id)
}

func TestUnknownEventPolicies(t *testing.T) {
	ignoring := accounts(t, aggregate.IgnoreUnknown[account]())
	r := ignoring.New(uuid.NewString())
	assert.NoError(t, r.Replay("SomethingNew", []byte(`{}`)))

	var seen []string
	withDefault := accounts(t, aggregate.DefaultHandler(func(a *account, eventType string, data []byte) error {
		if eventType == "Broken" {
			return errors.New("cannot handle")
		}
		seen = append(seen, eventType)
		a.Notes = append(a.Notes, string(data))
		return nil
	}))
	r = withDefault.New(uuid.NewString())
	require.NoError(t, r.Replay("SomethingNew", []byte(`{"x":1}`)))
	assert.Equal(t, []string{"SomethingNew"}, seen)
	assert.Equal(t, []string{`{"x":1}`}, r.State().Notes)
	assert.Error(t, r.Replay("Broken", nil))
}

func TestInitialState(t *testing.T) {
	d := accounts(t, aggregate.Initial(func() account { return account{Balance: 5, Notes: []string{}} }))
	a, b := d.New(uuid.NewString()), d.New(uuid.NewString())
	require.NoError(t, a.Record(Deposited{Amount: 1}))
	assert.Equal(t, 6, a.State().Balance)
	assert.Equal(t, 5, b.State().Balance, "each root gets its own initial state")
}

// A shopping cart: the state is a plain struct, each event a plain struct,
// and one call per event type registers both its handler and its name.
func ExampleNew() {
	type Cart struct {
		Items []string
	}
	type ItemAdded struct {
		SKU string `json:"sku"`
	}

	carts, err := aggregate.New[Cart]("cart",
		aggregate.On(func(c *Cart, e ItemAdded) { c.Items = append(c.Items, e.SKU) }),
	)
	if err != nil {
		panic(err)
	}

	cart := carts.New("7d3c2a56-2b9f-4b5e-9d1a-5f8e8f1e2c3b")
	_ = cart.Record(ItemAdded{SKU: "book-42"})
	fmt.Println(cart.State().Items, cart.Version())
	for _, e := range cart.Uncommitted() {
		fmt.Println(e.EventType, string(e.Data))
	}
	// Output:
	// [book-42] 0
	// ItemAdded {"sku":"book-42"}
}
