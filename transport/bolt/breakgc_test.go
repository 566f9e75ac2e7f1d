package bolt

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
)

// damageAtCommit writes an aggregate of its own tenant whose bucket has a
// page of its own, then changes that page's overflow count on disk so
// that reading the page works but freeing it, which only the commit of a
// write to the aggregate does, panics in bbolt ("page N already freed"):
// damage that no write meets while it is applied. It returns the
// aggregate, at version 1.
func damageAtCommit(t *testing.T, path string) transport.Ref {
	t.Helper()
	tr, err := Open(path)
	require.NoError(t, err)
	ctx := context.Background()
	sick := transport.Ref{Tenant: uuid.NewString(), Type: "order", ID: uuid.NewString()}
	big := []transport.Event{{EventType: "Big", Data: []byte(`"` + strings.Repeat("x", 3000) + `"`)}}
	require.NoError(t, tr.Store(ctx, sick, big, transport.MustNotExist))
	for range 5 {
		require.NoError(t, tr.Store(ctx, newRef(), groupEvent, transport.MustNotExist))
	}
	var root, free uint64
	var pageSize int
	require.NoError(t, tr.db.View(func(tx *bbolt.Tx) error {
		b, err := aggregateBucket(tx, sick)
		require.NoError(t, err)
		root, pageSize = uint64(b.RootPage()), tx.DB().Info().PageSize
		require.NotZero(t, root, "the aggregate's bucket has a page of its own")
		for id := root + 1; free == 0; id++ {
			p, err := tx.Page(int(id))
			require.NoError(t, err)
			require.NotNil(t, p, "a free page after the aggregate's")
			if p.Type == "free" {
				free = id
			}
		}
		return nil
	}))
	require.NoError(t, tr.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	binary.LittleEndian.PutUint32(b[int(root)*pageSize+12:], uint32(free-root)) // the page header's overflow
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return sick
}

// A group whose transaction fails to commit (here bbolt panics on a
// damaged page that only the commit of one write touches) blames none of
// its writes in particular: each is run again alone and gets the answer it
// would have had without the group. A good write grouped with the damaged
// one is stored, and a write refused as a conflict because of the damaged
// write (never stored) is not told it conflicts.
func TestGroupWhoseCommitFailsAnswersEachAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	sick := damageAtCommit(t, path)
	h := groupHarnessAt(t, path)
	ctx := context.Background()
	require.ErrorIs(t, h.tr.Store(ctx, sick, groupEvent, transport.Exactly(1)), ErrDamaged, "the damage: a store to the aggregate fails at its commit")
	seen := len(h.commitSizes())

	release := h.hold(seen)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(seen)
	sick1 := h.store(ctx, sick, transport.Exactly(1))
	h.waitQueued(1)
	good := newRef()
	goodDone := h.store(ctx, good, transport.MustNotExist)
	h.waitQueued(1)
	sick2 := h.store(ctx, sick, transport.Exactly(1))
	h.waitQueued(1)
	release()
	require.NoError(t, <-leadDone)

	assert.ErrorIs(t, <-sick1, ErrDamaged)
	assert.NoError(t, <-goodDone, "a good write is not failed by another's damage")
	err := <-sick2
	assert.ErrorIs(t, err, ErrDamaged)
	assert.NotErrorIs(t, err, transport.ErrConflict, "the aggregate is at version 1: Exactly(1) does not conflict")
	ok, err := h.tr.Exists(ctx, good)
	require.NoError(t, err)
	assert.True(t, ok)
	p, err := h.tr.Load(ctx, sick, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Version)
}
