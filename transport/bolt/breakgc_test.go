package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// A group run again without a write that failed halfway keeps the type
// index and the feed's counts of the writes it stored, and nothing of the
// one it left out; a leader whose own write is refused still commits the
// others.
func TestRerunGroupKeepsTypeFeedsAndCounts(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	old := newRef()
	require.NoError(t, h.tr.Store(ctx, old, groupEvent, transport.MustNotExist))
	// A plain value where the aggregate's bucket would go (damage): the
	// check finds no aggregate, the write fails creating its bucket, after
	// the batch before it in the bulk was written, feed entry and all.
	poisoned := uuid.NewString()
	require.NoError(t, h.tr.db.Update(func(tx *bbolt.Tx) error {
		sb, err := tx.Bucket(bucketScopes).CreateBucketIfNotExists(scopeKey(transport.Scope{Type: "invoice"}))
		if err != nil {
			return err
		}
		return sb.Put([]byte(poisoned), []byte("not a bucket"))
	}))
	seen := len(h.commitSizes())
	release := h.hold(seen)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(seen)

	refused := h.store(ctx, old, transport.MustNotExist) // leads the group, refused
	h.waitQueued(1)
	a := transport.Ref{Type: "invoice", ID: uuid.NewString()}
	aDone := h.store(ctx, a, transport.MustNotExist)
	h.waitQueued(1)
	bad := h.bulk(ctx, transport.Scope{Type: "invoice"}, batchOf(uuid.NewString(), transport.MustNotExist), batchOf(poisoned, transport.MustNotExist))
	h.waitQueued(1)
	b := transport.Ref{Type: "order", ID: uuid.NewString()}
	bDone := h.store(ctx, b, transport.MustNotExist)
	h.waitQueued(1)
	c := transport.Ref{Type: "invoice", ID: uuid.NewString()}
	cDone := h.bulk(ctx, transport.Scope{Type: "invoice"}, batchOf(c.ID, transport.MustNotExist))
	h.waitQueued(1)
	release()
	require.NoError(t, <-leadDone)
	require.ErrorIs(t, <-refused, transport.ErrConflict)
	require.NoError(t, <-aDone)
	require.ErrorIs(t, <-bad, transport.ErrUnavailable)
	require.NoError(t, <-bDone)
	require.NoError(t, <-cDone)
	assert.Equal(t, []int{1, 3}, h.commitSizes()[seen:])

	p, err := h.tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "invoice"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.Equal(t, []string{a.ID, c.ID}, []string{p.Entries[0].AggregateID, p.Entries[1].AggregateID})
	assert.Equal(t, p.Entries[0].Sequence+2, p.Entries[1].Sequence, "b's entry between them, nothing of the bulk left out")
	assert.Equal(t, p.Entries[1].Sequence, p.Head)
	infos, err := h.tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{
		{AggregateType: "invoice", Aggregates: 2, Batches: 2, Events: 2},
		{AggregateType: "order", Aggregates: 3, Batches: 3, Events: 3},
	}, infos)
}

// Writers race on a few aggregates with Store and StoreBulk, expecting
// the versions they loaded, some with contexts that end at once or while
// they wait: afterwards each aggregate holds exactly the acknowledged
// batches, once each, in versions that follow each other, and the feed
// numbers them without gap or repeat.
func TestRacingWritersOnSharedAggregates(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()}
	scope := transport.Scope{Type: "order"}
	var mu sync.Mutex
	acked := map[string]bool{} // tokens of acknowledged batches
	sent := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				c, cancel := context.WithCancel(ctx)
				switch i % 5 {
				case 3:
					cancel()
				case 4:
					go cancel()
				}
				token := func(id string) string { return fmt.Sprintf("%s-%d-%d", id, w, i) }
				version := func(id string) int64 {
					p, err := h.tr.Load(ctx, transport.Ref{Type: "order", ID: id}, 0, 0)
					if err != nil {
						return 0
					}
					for p.HasMore {
						p, err = h.tr.Load(ctx, transport.Ref{Type: "order", ID: id}, p.Version, 0)
						require.NoError(t, err)
					}
					return p.Version
				}
				event := func(id string) []transport.Event {
					return []transport.Event{{EventType: "Noted", Data: []byte(`"` + token(id) + `"`)}}
				}
				a, b := ids[(w+i)%len(ids)], ids[(w+2*i+1)%len(ids)]
				var err error
				var tokens []string
				if i%2 == 0 || a == b {
					tokens = []string{token(a)}
					exp := transport.Exactly(version(a))
					if i%7 == 0 {
						exp = transport.Any
					}
					mu.Lock()
					sent[token(a)] = true
					mu.Unlock()
					err = h.tr.Store(c, transport.Ref{Type: "order", ID: a}, event(a), exp)
				} else {
					tokens = []string{token(a), token(b)}
					mu.Lock()
					sent[token(a)], sent[token(b)] = true, true
					mu.Unlock()
					err = h.tr.StoreBulk(c, scope, []transport.Batch{
						{AggregateID: a, Events: event(a), Expected: transport.Exactly(version(a))},
						{AggregateID: b, Events: event(b), Expected: transport.Exactly(version(b))},
					})
				}
				cancel()
				if err == nil {
					mu.Lock()
					for _, tk := range tokens {
						acked[tk] = true
					}
					mu.Unlock()
				} else if !errors.Is(err, transport.ErrConflict) && !errors.Is(err, context.Canceled) {
					t.Errorf("unexpected error: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	found := map[string]int{}
	total := 0
	for _, id := range ids {
		ref := transport.Ref{Type: "order", ID: id}
		var since int64
		for {
			p, err := h.tr.Load(ctx, ref, since, 0)
			if errors.Is(err, transport.ErrNotFound) {
				break
			}
			require.NoError(t, err)
			for _, e := range p.Events {
				var tk string
				require.NoError(t, json.Unmarshal(e.Data, &tk))
				found[tk]++
			}
			total += int(p.Version - since)
			since = p.Version
			if !p.HasMore {
				break
			}
		}
	}
	for tk, n := range found {
		assert.Equal(t, 1, n, "batch %s stored once", tk)
		assert.True(t, acked[tk], "batch %s stored only if acknowledged", tk)
	}
	for tk := range acked {
		assert.Equal(t, 1, found[tk], "acknowledged batch %s is stored", tk)
	}
	assert.Len(t, feedIDs(t, h.tr, 0), total, "one feed entry per batch, numbered without gaps")
	t.Logf("%d of %d batches acknowledged, in %d transactions", len(acked), len(sent), len(h.commitSizes()))
}

// A transaction in which every write was refused commits nothing: it is
// rolled back, as a conflicting Store's transaction was before the group
// commit, instead of committing an empty transaction (a meta and freelist
// page written, an fsync) to say no.
func TestRefusedWritesCommitNothing(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	ref := newRef()
	require.NoError(t, h.tr.Store(ctx, ref, groupEvent, transport.MustNotExist))
	before := h.txID()
	require.ErrorIs(t, h.tr.Store(ctx, ref, groupEvent, transport.Exactly(5)), transport.ErrConflict)
	require.ErrorIs(t, h.tr.StoreBulk(ctx, ref.Scope(), []transport.Batch{batchOf(ref.ID, transport.MustNotExist)}), transport.ErrConflict)
	assert.Equal(t, before, h.txID(), "a lone conflict commits no transaction")

	seen := len(h.commitSizes())
	release := h.hold(seen)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(seen)
	c1 := h.store(ctx, ref, transport.MustNotExist)
	c2 := h.store(ctx, ref, transport.Exactly(0))
	h.waitQueued(2)
	release()
	require.NoError(t, <-leadDone)
	require.ErrorIs(t, <-c1, transport.ErrConflict)
	require.ErrorIs(t, <-c2, transport.ErrConflict)
	assert.Equal(t, before+1, h.txID(), "the leader's transaction, none for the group of conflicts")
}
