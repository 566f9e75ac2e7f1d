package repository_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
)

type Approval struct{ By string }
type Review struct{ By string }

// approved embeds two structs with a field of one name: encoding/json
// drops both.
type approved struct {
	Approval
	Review
}

type Signed struct {
	Approver, Reviewer string
}

type level int

// leveled embeds an unexported non-struct type: encoding/json ignores it.
type leveled struct {
	level
	Name string
}

type Raised struct{ To int }

type stamped struct {
	At    time.Time
	Count int
}

type Stamped struct{ At time.Time }

// snapshotThenLoad writes twice with a snapshot at every version and loads
// with a fresh repository: the load must equal the state in hand.
func snapshotThenLoad[S any](t *testing.T, def *aggregate.Definition[S], events ...any) (loaded, direct *S, snapped bool) {
	t.Helper()
	ctx := context.Background()
	mem := memory.New()
	snaps := snapshot.NewMemory()
	id := uuid.NewString()
	repo := repository.New(mem, def, repository.WithSnapshots(snaps, 1, 1))
	_, err := repo.Create(ctx, id, func(r *aggregate.Root[S]) error {
		for _, e := range events {
			if err := r.Record(e); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	_, snapped, err = snaps.Get(ctx, transport.Ref{Type: def.Type(), ID: id})
	require.NoError(t, err)
	root, err := repository.New(mem, def, repository.WithSnapshots(snaps, 1, 1)).Load(ctx, id)
	require.NoError(t, err)
	plain, err := repository.New(mem, def).Load(ctx, id)
	require.NoError(t, err)
	return root.State(), plain.State(), snapped
}

// A snapshot never makes a load differ from the events: states JSON
// cannot carry are found by round-tripping them, not from a list.
func TestSnapshotsOnlyOfStatesThatRoundTrip(t *testing.T) {
	t.Run("two embedded fields of one name", func(t *testing.T) {
		def := aggregate.MustNew[approved]("approved", aggregate.On(func(s *approved, e Signed) {
			s.Approval.By, s.Review.By = e.Approver, e.Reviewer
		}))
		loaded, direct, snapped := snapshotThenLoad(t, def, Signed{Approver: "ann", Reviewer: "bob"})
		assert.Equal(t, direct, loaded)
		assert.Equal(t, "ann", loaded.Approval.By)
		assert.False(t, snapped)
	})
	t.Run("an embedded unexported non-struct", func(t *testing.T) {
		def := aggregate.MustNew[leveled]("leveled", aggregate.On(func(s *leveled, e Raised) { s.level = level(e.To) }))
		loaded, direct, snapped := snapshotThenLoad(t, def, Raised{To: 4})
		assert.Equal(t, direct, loaded)
		assert.Equal(t, level(4), loaded.level)
		assert.False(t, snapped)
	})
	t.Run("a time survives", func(t *testing.T) {
		def := aggregate.MustNew[stamped]("stamped", aggregate.On(func(s *stamped, e Stamped) { s.At = e.At; s.Count++ }))
		at := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
		loaded, direct, snapped := snapshotThenLoad(t, def, Stamped{At: at})
		assert.True(t, snapped, "a state JSON carries whole is snapshotted")
		assert.True(t, loaded.At.Equal(direct.At))
	})
}

type Noted struct {
	Text string
	Memo string `json:"-"`
}

type notes struct{ Memos []string }

// A cached root holds what a load would see: an event field JSON leaves
// out is not in the cached state either.
func TestCacheHoldsWhatALoadSees(t *testing.T) {
	ctx := context.Background()
	def := aggregate.MustNew[notes]("notes", aggregate.On(func(s *notes, e Noted) { s.Memos = append(s.Memos, e.Text+e.Memo) }))
	mem := memory.New()
	id := uuid.NewString()
	cached := repository.New(mem, def, repository.WithCache(8))
	_, err := cached.Create(ctx, id, func(r *aggregate.Root[notes]) error { return r.Record(Noted{Text: "a"}) })
	require.NoError(t, err)
	for _, memo := range []string{"-secret", ""} {
		_, err = cached.Update(ctx, id, func(r *aggregate.Root[notes]) error { return r.Record(Noted{Text: "b", Memo: memo}) })
		require.NoError(t, err)
	}
	var seen []string
	_, err = cached.Update(ctx, id, func(r *aggregate.Root[notes]) error {
		seen = append([]string(nil), r.State().Memos...)
		return nil
	})
	require.NoError(t, err)
	loaded, err := repository.New(mem, def).Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, loaded.State().Memos, seen)
	assert.Equal(t, []string{"a", "b", "b"}, seen)
}

// A Save whose store was resolved as landed leaves the root current: the
// next Save goes on from it.
func TestSaveResolvedAsLandedCommitsTheRoot(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.FailAfter(transport.ErrAmbiguous)), faultinject.OpStore))
	repo := newRepo(t, faulty)
	root := counters.New(uuid.NewString())
	require.NoError(t, root.Record(CounterCreated{}))
	res, err := repo.Save(ctx, root)
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.Version)
	assert.Equal(t, int64(1), root.Version())
	assert.Empty(t, root.Uncommitted())
	require.NoError(t, root.Record(Incremented{By: 1}))
	res, err = repo.Save(ctx, root)
	require.NoError(t, err)
	assert.Equal(t, int64(2), res.Version)
}

// A second Create of one id says the aggregate exists (and is still a
// conflict for errors.Is); a Create that records nothing is an error.
func TestCreateSaysWhatHappened(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	_, err = repo.Create(ctx, id, create)
	assert.ErrorIs(t, err, repository.ErrAlreadyExists)
	assert.ErrorIs(t, err, transport.ErrConflict)
	assert.ErrorContains(t, err, "already exists")
	assert.ErrorContains(t, err, id)

	other := uuid.NewString()
	_, err = repo.Create(ctx, other, func(*aggregate.Root[counter]) error { return nil })
	assert.ErrorIs(t, err, repository.ErrNothingRecorded)
	ok, err := repo.Exists(ctx, other)
	require.NoError(t, err)
	assert.False(t, ok)
}

type Titled struct{ Title string }

type titles struct{ All []string }

// A string that is not valid UTF-8 comes back from storage changed: the
// cached root holds what a load holds.
func TestCacheHoldsWhatALoadSeesForBadUTF8(t *testing.T) {
	ctx := context.Background()
	def := aggregate.MustNew[titles]("titles", aggregate.On(func(s *titles, e Titled) { s.All = append(s.All, e.Title) }))
	mem := memory.New()
	id := uuid.NewString()
	cached := repository.New(mem, def, repository.WithCache(8))
	_, err := cached.Create(ctx, id, func(r *aggregate.Root[titles]) error { return r.Record(Titled{Title: "ok"}) })
	require.NoError(t, err)
	_, err = cached.Update(ctx, id, func(r *aggregate.Root[titles]) error { return r.Record(Titled{Title: "bad \xff"}) })
	require.NoError(t, err)
	var seen []string
	_, err = cached.Update(ctx, id, func(r *aggregate.Root[titles]) error {
		seen = append([]string(nil), r.State().All...)
		return nil
	})
	require.NoError(t, err)
	loaded, err := repository.New(mem, def).Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, loaded.State().All, seen)
}
