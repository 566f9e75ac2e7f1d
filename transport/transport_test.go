package transport_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// The patterns the .NET client validates with; our hand-written checks must
// agree with them on every input.
var (
	aggregateTypeRegexp = regexp.MustCompile(`^[a-z0-9]+[a-z0-9\-_]+[a-z0-9]+$`)
	eventTypeRegexp     = regexp.MustCompile(`^[a-zA-Z0-9]+[a-zA-Z0-9\-_]+[a-zA-Z0-9]+$`)
)

// The API's patterns, plus our bound of 255 characters.
type bounded struct{ *regexp.Regexp }

func (b bounded) MatchString(s string) bool { return len(s) <= 255 && b.Regexp.MatchString(s) }

var (
	aggregateTypePattern = bounded{aggregateTypeRegexp}
	eventTypePattern     = bounded{eventTypeRegexp}
)

var nameSeeds = []string{
	"", "a", "ab", "abc", "order", "order-line", "order_line", "-order", "order-",
	"_ab", "ab_", "a-b", "a--b", "Order", "ORDER", "order line", "ordér", "o\x00r",
	"PaymentProcessed", "payment-processed-v2", "123", "a_-_b", strings.Repeat("a", 300), strings.Repeat("a", 255), strings.Repeat("a", 256),
}

func TestValidateAggregateTypeMatchesPattern(t *testing.T) {
	for _, name := range nameSeeds {
		err := transport.ValidateAggregateType(name)
		assert.Equal(t, aggregateTypePattern.MatchString(name), err == nil, "aggregate type %q", name)
		if err != nil {
			assert.ErrorIs(t, err, transport.ErrInvalid)
		}
	}
}

func TestValidateEventTypeMatchesPattern(t *testing.T) {
	for _, name := range nameSeeds {
		err := transport.ValidateEventType(name)
		assert.Equal(t, eventTypePattern.MatchString(name), err == nil, "event type %q", name)
	}
}

func FuzzValidateNames(f *testing.F) {
	for _, s := range nameSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := transport.ValidateAggregateType(name) == nil, aggregateTypePattern.MatchString(name); got != want {
			t.Fatalf("aggregate type %q: valid=%v, pattern says %v", name, got, want)
		}
		if got, want := transport.ValidateEventType(name) == nil, eventTypePattern.MatchString(name); got != want {
			t.Fatalf("event type %q: valid=%v, pattern says %v", name, got, want)
		}
	})
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"", uuid.NewString(), strings.ToUpper(uuid.NewString()), "not-a-uuid",
		"{" + uuid.NewString() + "}", "urn:uuid:" + uuid.NewString(), strings.ReplaceAll(uuid.NewString(), "-", "")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := transport.ValidateID(id)
		if err == nil {
			// Accepted ids are canonical 36-character UUIDs.
			require.Len(t, id, 36)
			_, perr := uuid.Parse(id)
			require.NoError(t, perr)
			return
		}
		require.ErrorIs(t, err, transport.ErrInvalid)
		require.LessOrEqual(t, len(err.Error()), 300, "a bad id must not blow up the message")
	})
}

func TestValidateIDAndTenant(t *testing.T) {
	id := uuid.NewString()
	assert.NoError(t, transport.ValidateID(id))
	assert.ErrorIs(t, transport.ValidateID(""), transport.ErrInvalid)
	assert.ErrorIs(t, transport.ValidateID("{"+id+"}"), transport.ErrInvalid, "only the canonical form is accepted")
	assert.NoError(t, transport.ValidateTenant(""), "empty tenant is the default tenant")
	assert.NoError(t, transport.ValidateTenant(id))
	assert.ErrorIs(t, transport.ValidateTenant("acme"), transport.ErrInvalid)

	ref := transport.Ref{Type: "order", ID: id}
	assert.NoError(t, ref.Validate())
	ref.Tenant = "acme"
	assert.ErrorIs(t, ref.Validate(), transport.ErrInvalid)
}

func TestValidateEvents(t *testing.T) {
	ok := transport.Event{EventType: "OrderPlaced", Data: []byte(`{}`)}
	assert.NoError(t, transport.ValidateEvents([]transport.Event{ok}))
	assert.ErrorIs(t, transport.ValidateEvents(nil), transport.ErrInvalid)

	tooMany := make([]transport.Event, transport.MaxBatchEvents+1)
	for i := range tooMany {
		tooMany[i] = ok
	}
	assert.ErrorIs(t, transport.ValidateEvents(tooMany), transport.ErrInvalid)
	assert.NoError(t, transport.ValidateEvents(tooMany[:transport.MaxBatchEvents]))

	cases := map[string]transport.Event{
		"bad type":      {EventType: "x"},
		"bad event id":  {EventType: "OrderPlaced", EventID: "nope"},
		"too long data": {EventType: "OrderPlaced", EncryptedData: strings.Repeat("x", transport.MaxEncryptedData+1)},
	}
	for name, e := range cases {
		err := transport.ValidateEvents([]transport.Event{e})
		assert.ErrorIs(t, err, transport.ErrInvalid, name)
	}
	assert.NoError(t, transport.ValidateEvents([]transport.Event{{EventType: "OrderPlaced",
		EncryptedData: strings.Repeat("x", transport.MaxEncryptedData)}}))
}

func TestDeleteTarget(t *testing.T) {
	id := uuid.NewString()
	one := transport.DeleteAggregate(transport.Ref{Type: "order", ID: id})
	assert.NoError(t, one.Validate())
	assert.Equal(t, "order/"+id, one.String())

	all := transport.DeleteAllOfType(transport.Scope{Type: "order"})
	assert.NoError(t, all.Validate())
	assert.Equal(t, "order", all.String())

	// A missing id never widens a delete to the whole type.
	assert.ErrorIs(t, transport.DeleteTarget{Type: "order"}.Validate(), transport.ErrInvalid)
	assert.ErrorIs(t, transport.DeleteTarget{Type: "order", ID: id, AllOfType: true}.Validate(), transport.ErrInvalid)
}

func TestExpectedVersion(t *testing.T) {
	var zero transport.ExpectedVersion
	assert.True(t, zero.IsAny(), "the zero value performs no check")
	assert.Equal(t, transport.Any, zero)
	assert.True(t, zero.Check(42))
	assert.Equal(t, "any", zero.String())

	assert.Equal(t, transport.Exactly(0), transport.MustNotExist)
	assert.True(t, transport.MustNotExist.Check(0))
	assert.False(t, transport.MustNotExist.Check(1))
	n, ok := transport.Exactly(7).Value()
	assert.Equal(t, int64(7), n)
	assert.True(t, ok)
	assert.False(t, transport.Exactly(7).Check(6))
	assert.False(t, transport.Exactly(-1).Valid())
	assert.True(t, transport.Any.Valid())
}

func TestErrorKindsAndMessage(t *testing.T) {
	id := uuid.NewString()
	ref := transport.Ref{Tenant: uuid.NewString(), Type: "order", ID: id}
	e := transport.NewError("store", ref, transport.ErrConflict)
	e.Expected = transport.Exactly(3)
	e.StatusCode = 409

	var err error = e
	assert.ErrorIs(t, err, transport.ErrConflict)
	assert.NotErrorIs(t, err, transport.ErrNotFound)
	msg := err.Error()
	assert.Contains(t, msg, "store order/"+id)
	assert.Contains(t, msg, ref.Tenant)
	assert.Contains(t, msg, "expected version 3")
	assert.Contains(t, msg, "HTTP 409")

	wrapped := fmt.Errorf("placing order: %w", err)
	var te *transport.Error
	require.ErrorAs(t, wrapped, &te)
	assert.Equal(t, "order", te.AggregateType)
	assert.Equal(t, id, te.AggregateID)

	cause := transport.Wrap(context.DeadlineExceeded, "load", ref, transport.ErrUnavailable)
	assert.ErrorIs(t, cause, transport.ErrUnavailable)
	assert.ErrorIs(t, cause, context.DeadlineExceeded, "the cause stays reachable")
	assert.Nil(t, transport.Wrap(nil, "load", ref, transport.ErrUnavailable))

	// Wrapping a validation error names the operation and the aggregate.
	v := transport.Wrap(transport.ValidateEventType("x"), "store", ref, transport.ErrInvalid)
	assert.ErrorIs(t, v, transport.ErrInvalid)
	assert.Contains(t, v.Error(), "store order/"+id)

	rl := &transport.Error{Op: "load", Kind: transport.ErrRateLimited,
		RateLimit: &transport.RateLimit{Limit: 10, Reset: time.Unix(1700000000, 0)}}
	assert.Contains(t, rl.Error(), "resets at 2023-11-14T22:13:20Z")
	assert.True(t, errors.Is(rl, transport.ErrRateLimited))
}

func ExampleExactly() {
	fmt.Println(transport.Any, transport.MustNotExist, transport.Exactly(3))
	fmt.Println(transport.Exactly(3).Check(3), transport.Exactly(3).Check(4))
	// Output:
	// any 0 3
	// true false
}

func ExampleValidateAggregateType() {
	fmt.Println(transport.ValidateAggregateType("order") == nil)
	err := transport.ValidateAggregateType("Order")
	fmt.Println(errors.Is(err, transport.ErrInvalid))
	// Output:
	// true
	// true
}
