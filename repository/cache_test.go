package repository_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

const variantEnv = "SOURCED_REPOSITORY_VARIANT"

// TestSuiteWithCacheAndSnapshots runs every test of this package again
// with cached roots and snapshots every 3 versions.
func TestSuiteWithCacheAndSnapshots(t *testing.T) {
	if os.Getenv(variantEnv) != "" {
		t.Skip("already the variant")
	}
	if testing.Short() {
		t.Skip("the variant run is skipped in -short mode")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^Test", "-test.skip", "^TestSuiteWithCacheAndSnapshots$")
	cmd.Env = append(os.Environ(), variantEnv+"=cache")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// counting counts the events its transport's loads return.
type counting struct {
	transport.Transport
	events atomic.Int64
	loads  atomic.Int64
}

func (c *counting) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	p, err := c.Transport.Load(ctx, ref, since, limit)
	c.events.Add(int64(len(p.Events)))
	c.loads.Add(1)
	return p, err
}

func (c *counting) reset() { c.events.Store(0); c.loads.Store(0) }

func grow(t *testing.T, repo *repository.Repository[counter], id string, n int) {
	t.Helper()
	for range n {
		_, err := repo.Update(context.Background(), id, increment)
		require.NoError(t, err)
	}
}

func TestCacheReadsOnlyTheTail(t *testing.T) {
	ctx := context.Background()
	tr := &counting{Transport: memory.New()}
	repo := newRepo(t, tr, repository.WithCache(4))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, repo, id, 50)

	tr.reset()
	res, err := repo.Update(ctx, id, increment)
	require.NoError(t, err)
	assert.Equal(t, int64(52), res.Version)
	assert.Equal(t, int64(1), tr.loads.Load(), "one read")
	assert.Equal(t, int64(1), tr.events.Load(), "only the batch the root was at, to check it")
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 51, root.State().Count)
}

func TestCacheSeesOtherWriters(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	cachedRepo, other := newRepo(t, tr, repository.WithCache(4)), newRepo(t, tr)
	id := uuid.NewString()
	_, err := cachedRepo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, cachedRepo, id, 2)
	grow(t, other, id, 3)
	res, err := cachedRepo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		assert.Equal(t, 5, r.State().Count, "the cached root caught up with the other writer")
		assert.Equal(t, int64(6), r.Version())
		return increment(r)
	})
	require.NoError(t, err)
	assert.Equal(t, int64(7), res.Version)
}

func TestCacheNoticesARecreatedAggregate(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	cachedRepo, other := newRepo(t, tr, repository.WithCache(4)), newRepo(t, tr)
	id := uuid.NewString()
	_, err := cachedRepo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, cachedRepo, id, 4) // cached at version 5, count 4

	// Another process deletes it and creates it again, longer this time.
	token, err := other.RequestDelete(ctx, id)
	require.NoError(t, err)
	require.NoError(t, other.ConfirmDelete(ctx, id, token))
	_, err = other.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, other, id, 6) // version 7, count 6

	_, err = cachedRepo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		assert.Equal(t, 6, r.State().Count, "not the stale 4 plus a tail of someone else's history")
		assert.Equal(t, int64(7), r.Version())
		return nil
	})
	require.NoError(t, err)
}

func TestCacheDropsARootAfterAFailedCommand(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New(), repository.WithCache(4))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, repo, id, 1)
	boom := errors.New("no")
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		require.NoError(t, r.Record(Incremented{By: 100}))
		return boom
	})
	require.ErrorIs(t, err, boom)
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		assert.Equal(t, 1, r.State().Count, "the failed command's event is nowhere")
		return nil
	})
	require.NoError(t, err)
}

func TestSnapshotsShortenLoads(t *testing.T) {
	ctx := context.Background()
	tr := &counting{Transport: memory.New()}
	snaps := snapshot.NewMemory()
	repo := newRepo(t, tr, repository.WithSnapshots(snaps, 1, 10))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, repo, id, 24) // version 25: snapshots at 10 and 20

	s, ok, err := snaps.Get(ctx, transport.Ref{Type: "counter", ID: id})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, int64(20), s.Version)
	assert.Equal(t, 1, s.Schema)

	tr.reset()
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 24, root.State().Count)
	assert.Equal(t, int64(25), root.Version())
	assert.Equal(t, int64(6), tr.events.Load(), "the snapshot's batch and the 5 after it")

	// Another schema: the snapshot is ignored, the state rebuilt.
	tr.reset()
	bumped := newRepo(t, tr, repository.WithSnapshots(snaps, 2, 10))
	root, err = bumped.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 24, root.State().Count)
	assert.Equal(t, int64(25), tr.events.Load(), "every event, from the start")
}

func TestBadSnapshotsAreIgnored(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	snaps := snapshot.NewMemory()
	repo := newRepo(t, tr, repository.WithSnapshots(snaps, 1, 1000))
	id := uuid.NewString()
	ref := transport.Ref{Type: "counter", ID: id}
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	grow(t, repo, id, 3)
	page, err := tr.Load(ctx, ref, 1, 1)
	require.NoError(t, err)
	marker := page.Events[0].EventID // the last event of version 2

	for name, s := range map[string]snapshot.Snapshot{
		"does not decode":        {Version: 2, Schema: 1, Marker: marker, State: []byte(`{"Count":"many"}`)},
		"batch no longer stored": {Version: 2, Schema: 1, Marker: uuid.NewString(), State: []byte(`{"Created":true,"Count":500}`)},
	} {
		require.NoError(t, snaps.Delete(ctx, ref))
		require.NoError(t, snaps.Put(ctx, ref, s))
		root, err := repo.Load(ctx, id)
		require.NoError(t, err, name)
		assert.Equal(t, 3, root.State().Count, name)
	}
	// A good one is used: a lie in it shows it was.
	require.NoError(t, snaps.Delete(ctx, ref))
	require.NoError(t, snaps.Put(ctx, ref, snapshot.Snapshot{Version: 2, Schema: 1, Marker: marker, State: []byte(`{"Created":true,"Count":500}`)}))
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 502, root.State().Count, "state from the snapshot plus the two later increments")
}

type secretive struct {
	Count  int
	hidden int
}

func TestStatesThatJSONLosesAreNotSnapshotted(t *testing.T) {
	ctx := context.Background()
	def := aggregate.MustNew[secretive]("secretive", aggregate.On(func(s *secretive, _ Incremented) { s.Count++; s.hidden++ }))
	core, logs := observer.New(zapcore.WarnLevel)
	snaps := snapshot.NewMemory()
	repo := repository.New(memory.New(), def, repository.WithSnapshots(snaps, 1, 1), repository.WithLogger(zap.New(core)))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, func(r *aggregate.Root[secretive]) error { return r.Record(Incremented{}) })
	require.NoError(t, err)
	_, ok, err := snaps.Get(ctx, transport.Ref{Type: "secretive", ID: id})
	require.NoError(t, err)
	assert.False(t, ok)
	require.Equal(t, 1, logs.FilterMessage("no snapshot taken: the state would not survive JSON").Len())
	assert.Contains(t, logs.All()[0].ContextMap()["reason"], "secretive.hidden")
}
