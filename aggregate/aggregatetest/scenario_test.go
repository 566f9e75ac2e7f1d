package aggregatetest_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/aggregate/aggregatetest"
)

type lamp struct{ On bool }
type SwitchedOn struct{}
type SwitchedOff struct{}

var errBroken = errors.New("broken")

var lamps = aggregate.MustNew[lamp]("lamp",
	aggregate.On(func(l *lamp, _ SwitchedOn) { l.On = true }),
	aggregate.On(func(l *lamp, _ SwitchedOff) { l.On = false }),
)

func switchOn(r *aggregate.Root[lamp]) error {
	if r.State().On {
		return nil
	}
	return r.Record(SwitchedOn{})
}

func TestScenario(t *testing.T) {
	root := aggregatetest.Given(lamps).When(switchOn).Then(t, SwitchedOn{})
	assert.True(t, root.State().On)
	assert.Equal(t, int64(0), root.Version())

	root = aggregatetest.Given(lamps, SwitchedOn{}).When(switchOn).ThenNothing(t)
	assert.Equal(t, int64(1), root.Version())

	aggregatetest.Given(lamps, SwitchedOn{}, SwitchedOff{}).
		When(func(*aggregate.Root[lamp]) error { return errBroken }).
		ThenError(t, errBroken)
	assert.Contains(t, aggregatetest.Given(lamps, SwitchedOn{}).String(), "1 event(s) of lamp")
}

// The helper's own checks must be able to fail.
func TestScenarioReportsMismatch(t *testing.T) {
	fake := &testing.T{}
	ok := func() (ok bool) {
		defer func() { recover() }()
		aggregatetest.Given(lamps).When(switchOn).Then(fake, SwitchedOff{})
		return true
	}()
	assert.True(t, ok)
	assert.True(t, fake.Failed(), "a wrong expectation fails the test")
}
