// Package aggregatetest tests aggregates as given / when / then stories,
// with no store at all:
//
//	aggregatetest.Given(orders, OrderPlaced{Amount: 100}).
//		When(Pay(100)).
//		Then(t, PaymentReceived{Amount: 100}, OrderFullyPaid{})
//
// Given replays past events into a fresh root, When runs a command on it,
// and Then checks the events the command recorded (or ThenError its error,
// ThenNothing that it recorded nothing). Events are compared as Go values.
package aggregatetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
)

// ID is the aggregate id scenarios use.
const ID = "00000000-0000-4000-8000-000000000001"

// Scenario is a story under way. Build it with Given.
type Scenario[S any] struct {
	def   *aggregate.Definition[S]
	given []any
	cmd   func(*aggregate.Root[S]) error
}

// Given starts a story on an aggregate whose history is events (each its own
// batch, so the root is at version len(events)).
func Given[S any](def *aggregate.Definition[S], events ...any) *Scenario[S] {
	return &Scenario[S]{def: def, given: events}
}

// When sets the command under test.
func (s *Scenario[S]) When(cmd func(*aggregate.Root[S]) error) *Scenario[S] {
	s.cmd = cmd
	return s
}

// run builds the root from the given events and runs the command.
func (s *Scenario[S]) run(t testing.TB) (*aggregate.Root[S], error) {
	t.Helper()
	require.NotNil(t, s.def, "Given needs a definition")
	require.NotNil(t, s.cmd, "call When before Then")
	root := s.def.New(ID)
	for i, e := range s.given {
		require.NoError(t, root.Record(e), "given event %d (%T)", i, e)
		root.Commit(int64(i + 1))
	}
	return root, s.cmd(root)
}

// Then checks that the command succeeded and recorded exactly events, in
// order. It returns the root for further checks of its state.
func (s *Scenario[S]) Then(t testing.TB, events ...any) *aggregate.Root[S] {
	t.Helper()
	root, err := s.run(t)
	require.NoError(t, err, "the command failed")
	got := make([]any, 0, len(root.Uncommitted()))
	for _, r := range root.Uncommitted() {
		got = append(got, r.Value)
	}
	if len(events) == 0 {
		events = []any{}
	}
	assert.Equal(t, events, got, "recorded events")
	return root
}

// ThenNothing checks that the command succeeded and recorded nothing.
func (s *Scenario[S]) ThenNothing(t testing.TB) *aggregate.Root[S] {
	t.Helper()
	return s.Then(t)
}

// ThenError checks that the command failed with an error matching target
// (errors.Is) and that it recorded nothing that a repository would store.
func (s *Scenario[S]) ThenError(t testing.TB, target error) {
	t.Helper()
	_, err := s.run(t)
	require.Error(t, err, "the command should have failed with %v", target)
	assert.ErrorIs(t, err, target)
}

// String describes the story, for test names.
func (s *Scenario[S]) String() string {
	return fmt.Sprintf("given %d event(s) of %s", len(s.given), s.def.Type())
}
