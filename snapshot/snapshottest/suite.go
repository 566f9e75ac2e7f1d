// Package snapshottest is the conformance suite of snapshot stores, ours and
// yours:
//
//	func TestSnapshots(t *testing.T) {
//		snapshottest.Run(t, func(t *testing.T) snapshot.Store { return mystore.New() })
//	}
package snapshottest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
)

// Run checks a store: round trips, the latest version wins, tenants and
// types are apart, deletes, bad input, and concurrent puts.
func Run(t *testing.T, newStore func(t *testing.T) snapshot.Store) {
	ctx := context.Background()
	ref := func() transport.Ref { return transport.Ref{Type: "order", ID: uuid.NewString()} }

	t.Run("RoundTrip", func(t *testing.T) {
		s, r := newStore(t), ref()
		_, ok, err := s.Get(ctx, r)
		require.NoError(t, err)
		assert.False(t, ok)
		in := snapshot.Snapshot{Version: 7, Schema: 2, Marker: uuid.NewString(), State: []byte(`{"total":42,"note":"åäö"}`)}
		require.NoError(t, s.Put(ctx, r, in))
		got, ok, err := s.Get(ctx, r)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, in, got)
	})
	t.Run("LatestWins", func(t *testing.T) {
		s, r := newStore(t), ref()
		require.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: 10, State: []byte(`10`)}))
		require.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: 5, State: []byte(`5`)}))
		got, _, err := s.Get(ctx, r)
		require.NoError(t, err)
		assert.Equal(t, int64(10), got.Version, "an older snapshot never replaces a newer one")
		require.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: 20, State: []byte(`20`)}))
		got, _, err = s.Get(ctx, r)
		require.NoError(t, err)
		assert.Equal(t, int64(20), got.Version)
	})
	t.Run("Apart", func(t *testing.T) {
		s, r := newStore(t), ref()
		other := r
		other.Tenant = uuid.NewString()
		typ := r
		typ.Type = "invoice"
		require.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: 1, State: []byte(`1`)}))
		for _, o := range []transport.Ref{other, typ} {
			_, ok, err := s.Get(ctx, o)
			require.NoError(t, err)
			assert.False(t, ok)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s, r := newStore(t), ref()
		require.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: 1, State: []byte(`1`)}))
		require.NoError(t, s.Delete(ctx, r))
		_, ok, err := s.Get(ctx, r)
		require.NoError(t, err)
		assert.False(t, ok)
		require.NoError(t, s.Delete(ctx, r), "deleting nothing is fine")
	})
	t.Run("InvalidInput", func(t *testing.T) {
		s := newStore(t)
		_, _, err := s.Get(ctx, transport.Ref{Type: "order", ID: "nope"})
		assert.True(t, errors.Is(err, snapshot.ErrInvalid), "%v", err)
		assert.ErrorIs(t, s.Put(ctx, ref(), snapshot.Snapshot{Version: 0, State: []byte(`1`)}), snapshot.ErrInvalid)
		assert.ErrorIs(t, s.Put(ctx, ref(), snapshot.Snapshot{Version: 1}), snapshot.ErrInvalid)
		assert.ErrorIs(t, s.Delete(ctx, transport.Ref{Type: "Bad!", ID: uuid.NewString()}), snapshot.ErrInvalid)
	})
	t.Run("Concurrent", func(t *testing.T) {
		s, r := newStore(t), ref()
		var wg sync.WaitGroup
		for v := 1; v <= 32; v++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, s.Put(ctx, r, snapshot.Snapshot{Version: int64(v), State: []byte(`1`)}))
			}()
		}
		wg.Wait()
		got, _, err := s.Get(ctx, r)
		require.NoError(t, err)
		assert.Equal(t, int64(32), got.Version)
	})
}
