package boltcheckpoint_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
)

// A checkpoint written with its event id reads back whole, and as a plain
// sequence number through Load and Get; an 8-byte value written by an
// earlier version still reads, with no event id.
func TestCheckpointWithEventID(t *testing.T) {
	ctx := context.Background()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	cps, err := boltcheckpoint.New(db)
	require.NoError(t, err)

	want := subscription.Checkpoint{Sequence: 42, EventID: "6f1c2b3a-0000-4000-8000-000000000001"}
	require.NoError(t, cps.Update(ctx, func(ctx context.Context, tx *bbolt.Tx) error {
		return cps.SetCheckpoint(ctx, tx, "new", want)
	}))
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error { // as earlier versions wrote it
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, 7)
		return tx.Bucket([]byte("sourced.checkpoints")).Put([]byte("old"), v)
	}))

	require.NoError(t, cps.Update(ctx, func(ctx context.Context, tx *bbolt.Tx) error {
		got, ok, err := cps.Checkpoint(ctx, tx, "new")
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, want, got)
		got, ok, err = cps.Checkpoint(ctx, tx, "old")
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, subscription.Checkpoint{Sequence: 7}, got)
		_, ok, err = cps.Checkpoint(ctx, tx, "none")
		require.NoError(t, err)
		assert.False(t, ok)
		return nil
	}))
	seq, ok, err := cps.Load(ctx, "new")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(42), seq)
	seq, ok, err = cps.Load(ctx, "old")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(7), seq)
}
