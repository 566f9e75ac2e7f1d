package deletetoken_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/deletetoken"
)

func TestRegistry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := deletetoken.New(func() time.Time { return now })
	a := transport.DeleteAggregate(transport.Ref{Type: "order", ID: uuid.NewString()})
	all := transport.DeleteAllOfType(transport.Scope{Type: "order"})

	tok := r.Issue(a)
	assert.False(t, r.Redeem(all, tok), "for its own target only")
	assert.False(t, r.Redeem(a, "nope"))
	assert.True(t, r.Redeem(a, tok))
	assert.False(t, r.Redeem(a, tok), "once")

	tok = r.Issue(a)
	now = now.Add(transport.DeleteTokenTTL)
	assert.False(t, r.Redeem(a, tok), "expired after ten minutes")
}

func ExampleRegistry() {
	r := deletetoken.New(nil)
	target := transport.DeleteAllOfType(transport.Scope{Type: "order"})
	token := r.Issue(target)
	fmt.Println(r.Redeem(target, token), r.Redeem(target, token))
	// Output: true false
}

func TestRegistryIsBoundedAndForgetsOldestFirst(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := deletetoken.New(func() time.Time { return now }, deletetoken.WithCapacity(3))
	a := transport.DeleteAggregate(transport.Ref{Type: "order", ID: uuid.NewString()})
	toks := make([]string, 5)
	for i := range toks {
		toks[i] = r.Issue(a)
	}
	assert.Equal(t, 3, r.Len(), "never more than its capacity")
	assert.False(t, r.Redeem(a, toks[0]), "the oldest is forgotten first")
	assert.False(t, r.Redeem(a, toks[1]))
	assert.True(t, r.Redeem(a, toks[4]))
	assert.True(t, r.Redeem(a, toks[2]))
}

func TestRegistryForgetsExpiredTokensAsItGoes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := deletetoken.New(func() time.Time { return now })
	a := transport.DeleteAggregate(transport.Ref{Type: "order", ID: uuid.NewString()})
	for i := 0; i < 5000; i++ {
		r.Issue(a)
	}
	now = now.Add(transport.DeleteTokenTTL)
	r.Issue(a)
	assert.Equal(t, 1, r.Len(), "expired tokens are gone once a new one is issued")
}

func TestTakeUndoPutsTheTokenBack(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := deletetoken.New(func() time.Time { return now })
	a := transport.DeleteAggregate(transport.Ref{Type: "order", ID: uuid.NewString()})
	tok := r.Issue(a)
	undo, ok := r.Take(a, tok)
	require.True(t, ok)
	assert.False(t, r.Redeem(a, tok), "taken")
	undo() // the delete failed
	assert.True(t, r.Redeem(a, tok), "a failed confirmation does not use the token up")

	tok = r.Issue(a)
	undo, ok = r.Take(a, tok)
	require.True(t, ok)
	undo()
	now = now.Add(transport.DeleteTokenTTL)
	assert.False(t, r.Redeem(a, tok), "put back with its first expiry")
}

// BenchmarkIssueWithManyLive: issuing stays constant-time however many
// tokens are live (it was a sweep over all of them).
func BenchmarkIssueWithManyLive(b *testing.B) {
	r := deletetoken.New(nil)
	a := transport.DeleteAggregate(transport.Ref{Type: "order", ID: uuid.NewString()})
	for i := 0; i < 90_000; i++ {
		r.Issue(a)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Issue(a)
	}
}
