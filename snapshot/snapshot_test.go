package snapshot_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/snapshot/snapshottest"
)

func TestMemory(t *testing.T) {
	snapshottest.Run(t, func(*testing.T) snapshot.Store { return snapshot.NewMemory() })
}

func TestBolt(t *testing.T) {
	snapshottest.Run(t, func(t *testing.T) snapshot.Store {
		db, err := bbolt.Open(filepath.Join(t.TempDir(), "snapshots.db"), 0o600, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		s, err := snapshot.NewBolt(db)
		require.NoError(t, err)
		return s
	})
}
