package repository_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
)

type counter struct {
	Created bool
	Count   int
}

type CounterCreated struct{}
type Incremented struct {
	By int `json:"by"`
}

var counters = aggregate.MustNew[counter]("counter",
	aggregate.On(func(c *counter, _ CounterCreated) { c.Created = true }),
	aggregate.On(func(c *counter, e Incremented) { c.Count += e.By }),
)

var errTooBig = errors.New("counter too big")

func create(root *aggregate.Root[counter]) error { return root.Record(CounterCreated{}) }

func increment(root *aggregate.Root[counter]) error {
	if root.State().Count >= 1_000_000 {
		return errTooBig
	}
	return root.Record(Incremented{By: 1})
}

// zeroWait retries at once, up to n times: deterministic and fast.
func zeroWait(n uint64) repository.Option {
	return repository.WithRetry(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, n) })
}

func newRepo(t *testing.T, tr transport.Transport, opts ...repository.Option) *repository.Repository[counter] {
	t.Helper()
	if os.Getenv(variantEnv) == "cache" {
		// TestSuiteWithCacheAndSnapshots runs every test again this way.
		// The test's own options come last and win.
		opts = append([]repository.Option{repository.WithCache(64), repository.WithSnapshots(snapshot.NewMemory(), 1, 3)}, opts...)
	}
	return repository.New(tr, counters, append([]repository.Option{zeroWait(1000)}, opts...)...)
}

func TestCreateLoadUpdate(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()

	res, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	assert.Equal(t, repository.Result{Version: 1, Events: 1}, res)

	res, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		for i := 0; i < 3; i++ {
			if err := r.Record(Incremented{By: 2}); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, repository.Result{Version: 2, Events: 3}, res, "one batch, one version")

	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, int64(2), root.Version())
	assert.Equal(t, counter{Created: true, Count: 6}, *root.State())
	assert.Empty(t, root.Uncommitted())

	ok, err := repo.Exists(ctx, id)
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestLoadPagesThroughHistory(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	repo := newRepo(t, tr, repository.WithPageSize(7))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	for i := 0; i < 50; i++ {
		_, err := repo.Update(ctx, id, increment)
		require.NoError(t, err)
	}
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, int64(51), root.Version())
	assert.Equal(t, 50, root.State().Count)
}

func TestCreateExistingConflicts(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	_, err = repo.Create(ctx, id, create)
	assert.ErrorIs(t, err, transport.ErrConflict)
}

func TestUpdateMissing(t *testing.T) {
	_, err := newRepo(t, memory.New()).Update(context.Background(), uuid.NewString(), increment)
	assert.ErrorIs(t, err, transport.ErrNotFound)
}

func TestCommandErrorStoresNothing(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	repo := newRepo(t, tr)
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)

	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		_ = r.Record(Incremented{By: 1})
		return errTooBig
	})
	require.ErrorIs(t, err, errTooBig, "the command's error comes back as it is")
	assert.Contains(t, err.Error(), id)
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, int64(1), root.Version(), "nothing was stored")

	_, err = repo.Create(ctx, uuid.NewString(), func(r *aggregate.Root[counter]) error { return errTooBig })
	assert.ErrorIs(t, err, errTooBig)
}

func TestNoOpCommandStoresNothing(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	res, err := repo.Update(ctx, id, func(*aggregate.Root[counter]) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, repository.Result{Version: 1, Events: 0}, res)
}

func TestUnregisteredEventFailsCommand(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(struct{}{}) })
	assert.ErrorIs(t, err, aggregate.ErrUnregisteredEvent)
}

func TestUnknownStoredEventFailsLoad(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	id := uuid.NewString()
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "counter", ID: id},
		[]transport.Event{{EventType: "CounterRenamed", Data: []byte(`{}`)}}, transport.Any))
	_, err := newRepo(t, tr).Load(ctx, id)
	require.ErrorIs(t, err, aggregate.ErrUnknownEvent)
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "counter", te.AggregateType)
	assert.Equal(t, id, te.AggregateID)
	assert.Contains(t, err.Error(), "CounterRenamed")
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	_, err := repo.Load(ctx, "not-a-uuid")
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = repo.Update(ctx, "", increment)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = repo.Update(ctx, uuid.NewString(), nil)
	assert.ErrorIs(t, err, repository.ErrNilCommand)
	_, err = repo.Create(ctx, uuid.NewString(), nil)
	assert.ErrorIs(t, err, repository.ErrNilCommand)
	_, err = repo.Save(ctx, nil)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = repo.ForTenant("acme").Load(ctx, uuid.NewString())
	assert.ErrorIs(t, err, transport.ErrInvalid, "a tenant must be a UUID")
	var nilRepo *repository.Repository[counter]
	_, err = nilRepo.Load(ctx, uuid.NewString())
	assert.ErrorIs(t, err, transport.ErrInvalid, "a nil repository errors, never panics")
}

// The proof: 16 goroutines x 50 increments on ONE aggregate end with
// exactly 800 increments at version 801 (800 plus the creation).
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	repo := newRepo(t, tr, zeroWait(100_000))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)

	const goroutines, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := repo.Update(ctx, id, increment); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, goroutines*each, root.State().Count, "nothing lost, nothing doubled")
	assert.Equal(t, int64(goroutines*each+1), root.Version())
}

func TestConflictRetryReRunsOnFreshStateAndLogs(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	core, logs := observer.New(zapcore.DebugLevel)
	repo := newRepo(t, tr, repository.WithLogger(zap.New(core)))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)

	// The first run of the command races with another writer and loses.
	runs := 0
	var seen []int
	res, err := repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		runs++
		seen = append(seen, r.State().Count)
		if runs == 1 {
			_, err := repo.Update(ctx, id, increment)
			require.NoError(t, err)
		}
		return r.Record(Incremented{By: 10})
	})
	require.NoError(t, err)
	assert.Equal(t, 2, runs, "the command ran again after the conflict")
	assert.Equal(t, []int{0, 1}, seen, "the second run saw the other writer's increment")
	assert.Equal(t, int64(3), res.Version)

	retries := logs.FilterMessage("store did not go through, retrying").All()
	require.Len(t, retries, 1)
	fields := retries[0].ContextMap()
	assert.Equal(t, "counter", fields["aggregate_type"])
	assert.Equal(t, id, fields["aggregate_id"])
	assert.Equal(t, int64(1), fields["attempt"])
	assert.Contains(t, fields, "wait")
}

func TestOnlyConflictsAreRetried(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.Fail(transport.ErrUnavailable)), faultinject.OpStore))
	runs := 0
	_, err = newRepo(t, faulty).Update(ctx, id, func(r *aggregate.Root[counter]) error { runs++; return increment(r) })
	assert.ErrorIs(t, err, transport.ErrUnavailable)
	assert.Equal(t, 1, runs, "an unavailable store is not retried by the repository")
}

func TestRetryGivesUpAfterPolicy(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	storm := faultinject.Wrap(mem, faultinject.Only(func(faultinject.Op) faultinject.Fault {
		return faultinject.Fail(transport.ErrConflict)
	}, faultinject.OpStore))
	runs := 0
	_, err = newRepo(t, storm, zeroWait(4)).Update(ctx, id, func(r *aggregate.Root[counter]) error { runs++; return increment(r) })
	assert.ErrorIs(t, err, transport.ErrConflict)
	assert.Equal(t, 5, runs, "one attempt plus four retries")
}

func TestCancelDuringBackoff(t *testing.T) {
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(context.Background(), id, create)
	require.NoError(t, err)
	storm := faultinject.Wrap(mem, faultinject.Only(func(faultinject.Op) faultinject.Fault {
		return faultinject.Fail(transport.ErrConflict)
	}, faultinject.OpStore))
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	repo := repository.New(storm, counters, repository.WithRetry(func() backoff.BackOff {
		return backoff.NewConstantBackOff(time.Hour) // would wait forever without the ctx
	}))
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		runs++
		cancel()
		return increment(r)
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, runs)
}

func TestAmbiguousStoreThatLandedIsNotRepeated(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	// The store goes through, but the caller hears a timeout.
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.FailAfter(transport.ErrAmbiguous)), faultinject.OpStore))
	runs := 0
	res, err := newRepo(t, faulty).Update(ctx, id, func(r *aggregate.Root[counter]) error { runs++; return increment(r) })
	require.NoError(t, err)
	assert.Equal(t, 1, runs, "the command is not run again once its batch is found")
	assert.Equal(t, repository.Result{Version: 2, Events: 1}, res)
	root, err := newRepo(t, mem).Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 1, root.State().Count, "stored exactly once")
}

func TestAmbiguousStoreThatDidNotLandIsRetried(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.Fail(transport.ErrAmbiguous)), faultinject.OpStore))
	res, err := newRepo(t, faulty).Update(ctx, id, increment)
	require.NoError(t, err)
	assert.Equal(t, int64(2), res.Version)
	root, err := newRepo(t, mem).Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 1, root.State().Count, "stored exactly once")
}

func TestAmbiguousCreate(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	faulty := faultinject.Wrap(mem, faultinject.Only(faultinject.Sequence(
		faultinject.FailAfter(transport.ErrAmbiguous)), faultinject.OpStore))
	id := uuid.NewString()
	res, err := newRepo(t, faulty).Create(ctx, id, create)
	require.NoError(t, err, "the create landed; the repository finds its event and says so")
	assert.Equal(t, repository.Result{Version: 1, Events: 1}, res)
}

func TestAmbiguousUnresolvedIsReported(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	id := uuid.NewString()
	_, err := newRepo(t, mem).Create(ctx, id, create)
	require.NoError(t, err)
	always := faultinject.Wrap(mem, faultinject.Only(func(faultinject.Op) faultinject.Fault {
		return faultinject.Fail(transport.ErrAmbiguous)
	}, faultinject.OpStore))
	_, err = newRepo(t, always, zeroWait(3)).Update(ctx, id, increment)
	assert.ErrorIs(t, err, transport.ErrAmbiguous, "when the budget runs out the caller is told the outcome is unknown")
}

type recordingPublisher struct {
	mu   sync.Mutex
	got  []eventbus.Envelope
	fail error
}

func (p *recordingPublisher) Publish(_ context.Context, events []eventbus.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, events...)
	return p.fail
}

func TestPublishAfterCommitOnly(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	pub := &recordingPublisher{}
	tenant := uuid.NewString()
	repo := newRepo(t, mem, repository.WithPublisher(pub), repository.WithTenant(tenant))
	id := uuid.NewString()
	_, err := repo.Create(ctx, id, create)
	require.NoError(t, err)
	_, err = repo.Update(ctx, id, func(r *aggregate.Root[counter]) error {
		_ = r.Record(Incremented{By: 1})
		return r.Record(Incremented{By: 2})
	})
	require.NoError(t, err)
	require.Len(t, pub.got, 3)
	e := pub.got[2]
	assert.Equal(t, tenant, e.Tenant)
	assert.Equal(t, "counter", e.AggregateType)
	assert.Equal(t, id, e.AggregateID)
	assert.Equal(t, int64(2), e.Version)
	assert.Equal(t, "Incremented", e.EventType)
	assert.Equal(t, Incremented{By: 2}, e.Value)
	assert.JSONEq(t, `{"by":2}`, string(e.Data))
	assert.Equal(t, Incremented{By: 1}, pub.got[1].Value, "stored order")

	// A failing store publishes nothing.
	broken := newRepo(t, faultinject.Wrap(mem, faultinject.Only(func(faultinject.Op) faultinject.Fault {
		return faultinject.Fail(transport.ErrUnavailable)
	}, faultinject.OpStore)), repository.WithPublisher(pub), repository.WithTenant(tenant))
	_, err = broken.Update(ctx, id, increment)
	require.Error(t, err)
	assert.Len(t, pub.got, 3, "nothing published for a failed store")
}

func TestPublishErrorKeepsCommit(t *testing.T) {
	ctx := context.Background()
	pub := &recordingPublisher{fail: errors.New("handler down")}
	repo := newRepo(t, memory.New(), repository.WithPublisher(pub))
	id := uuid.NewString()
	res, err := repo.Create(ctx, id, create)
	require.ErrorIs(t, err, repository.ErrPublish)
	assert.Equal(t, repository.Result{Version: 1, Events: 1}, res, "the commit stands")
	ok, err := repo.Exists(ctx, id)
	require.NoError(t, err)
	assert.True(t, ok)
}

func TestSaveAndDelete(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	id := uuid.NewString()
	root := counters.New(id)
	require.NoError(t, root.Record(CounterCreated{}))
	res, err := repo.Save(ctx, root)
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.Version)
	assert.Equal(t, int64(1), root.Version(), "Save commits the root")
	assert.Empty(t, root.Uncommitted())

	stale := counters.New(id)
	require.NoError(t, stale.Record(CounterCreated{}))
	_, err = repo.Save(ctx, stale)
	assert.ErrorIs(t, err, transport.ErrConflict, "Save does not retry")

	tok, err := repo.RequestDelete(ctx, id)
	require.NoError(t, err)
	require.NoError(t, repo.ConfirmDelete(ctx, id, tok))
	ok, err := repo.Exists(ctx, id)
	require.NoError(t, err)
	assert.False(t, ok)

	_, err = repo.Create(ctx, id, create)
	require.NoError(t, err)
	tok, err = repo.RequestDeleteAll(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, repo.ConfirmDelete(ctx, id, tok), transport.ErrBadDeleteToken)
	require.NoError(t, repo.ConfirmDeleteAll(ctx, tok))
	ok, err = repo.Exists(ctx, id)
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestTenantsAreSeparate(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t, memory.New())
	a, b := repo.ForTenant(uuid.NewString()), repo.ForTenant(uuid.NewString())
	id := uuid.NewString()
	_, err := a.Create(ctx, id, create)
	require.NoError(t, err)
	ok, err := b.Exists(ctx, id)
	require.NoError(t, err)
	assert.False(t, ok)
	_, err = b.Create(ctx, id, create)
	require.NoError(t, err, "the same id is free in another tenant")
}

// Writers racing on one aggregate publish in version order: the subscriber
// sees 2, 3, 4, ... with no gap and no inversion.
func TestPublishOrderUnderContention(t *testing.T) {
	ctx := context.Background()
	bus := eventbus.New()
	var mu sync.Mutex
	var versions []int64
	_, err := eventbus.Subscribe(bus, func(_ context.Context, e eventbus.Envelope, _ Incremented) error {
		mu.Lock()
		versions = append(versions, e.Version)
		mu.Unlock()
		return nil
	}, eventbus.Async())
	require.NoError(t, err)
	repo := newRepo(t, memory.New(), repository.WithPublisher(bus), zeroWait(100_000))
	id := uuid.NewString()
	_, err = repo.Create(ctx, id, create)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				_, err := repo.Update(ctx, id, increment)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, bus.Close(ctx))
	require.Len(t, versions, 200)
	for i, v := range versions {
		require.Equal(t, int64(i+2), v, "delivery %d", i)
	}
}
