package aggregate_test

import (
	"errors"
	"testing"

	"github.com/sourced-go/sourced/aggregate"
)

// FuzzReplay feeds arbitrary stored events to hydration: it must never
// panic, and every failure is ErrUnknownEvent or ErrDecode.
func FuzzReplay(f *testing.F) {
	for _, s := range []struct{ typ, data string }{
		{"Deposited", `{"amount":10}`}, {"Deposited", `{"amount":"x"}`}, {"Deposited", `[]`},
		{"Deposited", ``}, {"Deposited", `null`}, {"MoneyWithdrawn", `{"amount":1e400}`},
		{"AccountOpened", `{"owner":"\ud800"}`}, {"Nope", `{}`}, {"", "\x00"},
	} {
		f.Add(s.typ, []byte(s.data))
	}
	d := aggregate.MustNew[account]("account",
		aggregate.On(func(a *account, e AccountOpened) { a.Opened = true }),
		aggregate.On(func(a *account, e Deposited) { a.Balance += e.Amount }),
		aggregate.OnNamed("MoneyWithdrawn", func(a *account, e withdrawn) { a.Balance -= e.Amount }),
	)
	f.Fuzz(func(t *testing.T, eventType string, data []byte) {
		err := d.New("2c3cf88c-ee88-427e-818a-ab0267511c84").Replay(eventType, data)
		if err != nil && !errors.Is(err, aggregate.ErrUnknownEvent) && !errors.Is(err, aggregate.ErrDecode) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
