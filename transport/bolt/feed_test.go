package bolt_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

func readAll(t *testing.T, f transport.Feeder, tenant string, since int64) []transport.FeedEntry {
	t.Helper()
	var out []transport.FeedEntry
	for {
		p, err := f.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Tenant: tenant, Type: transport.AllTypes}, Since: since})
		require.NoError(t, err)
		out = append(out, p.Entries...)
		if !p.HasMore {
			return out
		}
		since = p.Entries[len(p.Entries)-1].Sequence
	}
}

func TestFeedSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	tenant := uuid.NewString()
	a := transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	require.NoError(t, tr.Store(ctx, a, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"n":1}`)}}, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, a, []transport.Event{{EventType: "OrderPaid"}, {EventType: "OrderShipped"}}, transport.Exactly(1)))
	before := readAll(t, tr, tenant, 0)
	require.Len(t, before, 2)
	require.NoError(t, tr.Close())

	tr = open(t, path)
	after := readAll(t, tr, tenant, 0)
	assert.Equal(t, before, after, "the same entries under the same numbers")
	require.NoError(t, tr.Store(ctx, a, []transport.Event{{EventType: "OrderClosed"}}, transport.Exactly(2)))
	next := readAll(t, tr, tenant, before[1].Sequence)
	require.Len(t, next, 1)
	assert.Equal(t, before[1].Sequence+1, next[0].Sequence, "numbering goes on where it stopped")
	assert.Equal(t, int64(3), next[0].Version)
	infos, err := tr.FeedOverview(ctx, tenant)
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 1, Batches: 3, Events: 4}}, infos)
}

// TestUpgradesFormat1 opens a file written before feeds existed: the feed is
// built from the stored batches, each aggregate's in version order.
func TestUpgradesFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	a, b := uuid.NewString(), uuid.NewString()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		require.NoError(t, meta.Put([]byte("format"), []byte("1")))
		scopes, _ := tx.CreateBucket([]byte("scopes"))
		scope, _ := scopes.CreateBucket([]byte("\x00order"))
		for id, batches := range map[string][]string{a: {`[{"eventId":"` + uuid.NewString() + `","eventType":"OrderPlaced"}]`, `[{"eventType":"OrderPaid"},{"eventType":"OrderShipped"}]`}, b: {`[{"eventType":"OrderPlaced","data":{"n":2}}]`}} {
			agg, _ := scope.CreateBucket([]byte(id))
			for i, batch := range batches {
				k := make([]byte, 8)
				binary.BigEndian.PutUint64(k, uint64(i+1))
				require.NoError(t, agg.Put(k, []byte(batch)))
			}
			m := make([]byte, 16)
			binary.BigEndian.PutUint64(m[:8], uint64(len(batches)))
			binary.BigEndian.PutUint64(m[8:], uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()))
			require.NoError(t, agg.Put([]byte("meta"), m))
		}
		return nil
	}))
	require.NoError(t, db.Close())

	tr := open(t, path)
	entries := readAll(t, tr, "", 0)
	require.Len(t, entries, 3)
	versions := map[string][]int64{}
	for i, e := range entries {
		assert.Equal(t, int64(i+1), e.Sequence)
		versions[e.AggregateID] = append(versions[e.AggregateID], e.Version)
	}
	assert.Equal(t, map[string][]int64{a: {1, 2}, b: {1}}, versions)
	updated := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		if e.AggregateID == a && e.Version == 1 {
			assert.True(t, e.Stored.IsZero(), "format 1 never knew when an older batch was stored: %s", e.Stored)
		} else {
			assert.True(t, e.Stored.Equal(updated), "an aggregate's newest batch was stored at its last update")
		}
	}
	infos, err := tr.FeedOverview(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{{AggregateType: "order", Aggregates: 2, Batches: 3, Events: 4}}, infos)
	p, err := tr.Load(context.Background(), transport.Ref{Type: "order", ID: a}, 0, 0)
	require.NoError(t, err)
	assert.Len(t, p.Events, 3, "the batches themselves are untouched")
	require.NoError(t, tr.Close())

	// Upgraded once: reopening keeps the numbers.
	tr = open(t, path)
	assert.Equal(t, entries, readAll(t, tr, "", 0))
}
