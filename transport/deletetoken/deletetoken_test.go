package deletetoken_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

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
