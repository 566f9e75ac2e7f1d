package faultinject_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
)

// A Later fault answers at once and makes the call just before the n-th
// next call passes: that call already sees it.
func TestLandLaterLandsBeforeTheNthNextCall(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	ref := transport.Ref{Type: "account", ID: uuid.NewString()}
	tr := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.LandLater(transport.ErrAmbiguous, 2)), faultinject.OpStore))
	cancelled, cancel := context.WithCancel(ctx)
	err := tr.Store(cancelled, ref, []transport.Event{{EventID: uuid.NewString(), EventType: "Opened", Data: []byte(`{}`)}}, transport.Exactly(0))
	cancel() // the request in flight outlives the caller's context
	require.ErrorIs(t, err, transport.ErrAmbiguous)
	assert.Equal(t, 1, tr.Held())

	ok, err := tr.Exists(ctx, ref) // first call after: not landed yet
	require.NoError(t, err)
	assert.False(t, ok)
	ok, err = tr.Exists(ctx, ref) // second: lands just before
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, 0, tr.Held())
	st := tr.Stats()
	assert.EqualValues(t, 1, st.Later)
	assert.EqualValues(t, 1, st.Landed)
	assert.EqualValues(t, 1, st.Injected())
}

func TestLandMakesEveryHeldCall(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	tr := faultinject.Wrap(mem, faultinject.Only(func(faultinject.Op) faultinject.Fault {
		return faultinject.LandLater(transport.ErrUnavailable, 100)
	}, faultinject.OpStore))
	refs := []transport.Ref{{Type: "account", ID: uuid.NewString()}, {Type: "account", ID: uuid.NewString()}}
	for _, ref := range refs {
		err := tr.Store(ctx, ref, []transport.Event{{EventID: uuid.NewString(), EventType: "Opened", Data: []byte(`{}`)}}, transport.Exactly(0))
		require.ErrorIs(t, err, transport.ErrUnavailable)
	}
	assert.Equal(t, 2, tr.Held())
	tr.Land()
	for _, ref := range refs {
		ok, err := mem.Exists(ctx, ref)
		require.NoError(t, err)
		assert.True(t, ok)
	}
}
