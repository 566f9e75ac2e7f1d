package subscription_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// txModel is a read model that applies a slice all or nothing, as a
// transaction would: the page handler of these tests.
type txModel struct {
	mu      sync.Mutex
	applied map[int64]int // sequence number -> times applied
	calls   [][]int64     // the sequence numbers of each call
	fail    func(e transport.FeedEntry) error
	types   []string
}

func newTxModel(fail func(transport.FeedEntry) error) *txModel {
	return &txModel{applied: map[int64]int{}, fail: fail}
}

func (m *txModel) page(_ context.Context, entries []transport.FeedEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var seqs []int64
	for _, e := range entries {
		seqs = append(seqs, e.Sequence)
	}
	m.calls = append(m.calls, seqs)
	for _, e := range entries { // all or nothing: check first, then apply
		if m.fail != nil {
			if err := m.fail(e); err != nil {
				return err
			}
		}
	}
	for _, e := range entries {
		m.applied[e.Sequence]++
		for _, ev := range e.Events {
			m.types = append(m.types, ev.EventType)
		}
	}
	return nil
}

func (m *txModel) snapshot() (map[int64]int, [][]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	applied := map[int64]int{}
	for k, v := range m.applied {
		applied[k] = v
	}
	return applied, append([][]int64(nil), m.calls...)
}

// countingCheckpoints counts the saves (Save and SaveCheckpoint) that reach
// a MemoryCheckpoints.
type countingCheckpoints struct {
	*subscription.MemoryCheckpoints
	mu    sync.Mutex
	saves []int64
}

func (c *countingCheckpoints) Save(ctx context.Context, name string, seq int64) error {
	c.mu.Lock()
	c.saves = append(c.saves, seq)
	c.mu.Unlock()
	return c.MemoryCheckpoints.Save(ctx, name, seq)
}

func (c *countingCheckpoints) SaveCheckpoint(ctx context.Context, name string, cp subscription.Checkpoint) error {
	c.mu.Lock()
	c.saves = append(c.saves, cp.Sequence)
	c.mu.Unlock()
	return c.MemoryCheckpoints.SaveCheckpoint(ctx, name, cp)
}

func (c *countingCheckpoints) saved() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.saves...)
}

func storeN(t *testing.T, tr *memory.Transport, n int) {
	t.Helper()
	for i := range n {
		put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPlaced", OrderPlaced{Total: i})
	}
}

var errBad = errors.New("bad entry")

// The page handler gets each read whole, and the checkpoint is saved
// after each page.
func TestPageHandlerGetsWholePages(t *testing.T) {
	tr := memory.New()
	storeN(t, tr, 5)
	cps := &countingCheckpoints{MemoryCheckpoints: subscription.NewMemoryCheckpoints()}
	sub, err := subscription.New(tr, "pages", cps, subscription.PageSize(2), subscription.Wait(time.Second))
	require.NoError(t, err)
	m := newTxModel(nil)
	sub.OnPage(m.page)
	start(t, sub)
	require.NoError(t, sub.Await(context.Background(), 5))
	require.NoError(t, sub.Close(context.Background()))
	applied, calls := m.snapshot()
	assert.Equal(t, [][]int64{{1, 2}, {3, 4}, {5}}, calls)
	assert.Equal(t, map[int64]int{1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, applied)
	assert.Equal(t, []int64{2, 4, 5}, cps.saved(), "one checkpoint per page")
	page, err := tr.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: 4})
	require.NoError(t, err)
	cp, _, err := cps.LoadCheckpoint(context.Background(), "pages")
	require.NoError(t, err)
	assert.Equal(t, subscription.CheckpointOf(page.Entries[0]), cp, "the checkpoint stands on the page's last entry, with its event id")
}

// A failing entry in a page: the page call applies nothing, the entries
// go one at a time, the good ones are applied once each, the bad one is
// retried and parked (or stops Run, with the checkpoint before it).
func TestPageFailureFallsBackToOneEntryAtATime(t *testing.T) {
	bad := func(e transport.FeedEntry) error {
		if e.Sequence == 3 {
			return errBad
		}
		return nil
	}
	t.Run("park", func(t *testing.T) {
		tr := memory.New()
		storeN(t, tr, 5)
		cps := subscription.NewMemoryCheckpoints()
		parked := &parkRecorder{}
		sub, err := subscription.New(tr, "pages", cps, subscription.Wait(time.Second), subscription.Retry(noRetry),
			subscription.OnFailure(subscription.Park(parked)))
		require.NoError(t, err)
		m := newTxModel(bad)
		sub.OnPage(m.page)
		start(t, sub)
		require.NoError(t, sub.Await(context.Background(), 5))
		require.NoError(t, sub.Close(context.Background()))
		applied, calls := m.snapshot()
		assert.Equal(t, map[int64]int{1: 1, 2: 1, 4: 1, 5: 1}, applied, "the good entries once each, the bad one never")
		assert.Equal(t, [][]int64{{1, 2, 3, 4, 5}, {1}, {2}, {3}, {3}, {3}, {4}, {5}}, calls, "the page, then one at a time with retries")
		assert.Equal(t, []int64{3}, parked.got)
		pos, _, _ := cps.Load(context.Background(), "pages")
		assert.Equal(t, int64(5), pos)
	})
	t.Run("stop", func(t *testing.T) {
		tr := memory.New()
		storeN(t, tr, 5)
		cps := subscription.NewMemoryCheckpoints()
		sub, err := subscription.New(tr, "pages", cps, subscription.Wait(time.Second), subscription.Retry(noRetry))
		require.NoError(t, err)
		m := newTxModel(bad)
		sub.OnPage(m.page)
		err = sub.Run(context.Background())
		var herr *eventbus.HandlerError
		require.ErrorAs(t, err, &herr)
		assert.ErrorIs(t, err, errBad)
		assert.Equal(t, int64(3), herr.Event.Sequence)
		applied, _ := m.snapshot()
		assert.Equal(t, map[int64]int{1: 1, 2: 1}, applied)
		pos, _, _ := cps.Load(context.Background(), "pages")
		assert.Equal(t, int64(2), pos, "the checkpoint stays before the failing entry: nothing skipped")
	})
}

// A page handler that panics has failed: the page goes one entry at a
// time, and the entry that panics is parked.
func TestPagePanicIsAFailure(t *testing.T) {
	tr := memory.New()
	storeN(t, tr, 3)
	parked := &parkRecorder{}
	sub, err := subscription.New(tr, "pages", subscription.NewMemoryCheckpoints(), subscription.Wait(time.Second),
		subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(parked)))
	require.NoError(t, err)
	m := newTxModel(func(e transport.FeedEntry) error {
		if e.Sequence == 2 {
			panic("boom")
		}
		return nil
	})
	sub.OnPage(m.page) // its lock is released by a deferred Unlock
	start(t, sub)
	require.NoError(t, sub.Await(context.Background(), 3))
	applied, _ := m.snapshot()
	assert.Equal(t, map[int64]int{1: 1, 3: 1}, applied)
	assert.Equal(t, []int64{2}, parked.got)
}

// Entries reach the page handler upcast; an entry whose upcast fails is
// parked and the others of its page are applied.
func TestPageUpcast(t *testing.T) {
	tr, up := withUpcast(t)
	require.NoError(t, tr.Store(context.Background(), transport.Ref{Type: "order", ID: uuid.NewString()},
		[]transport.Event{{EventType: "OrderSettled", Data: []byte(`{"amt":-1}`)}}, transport.Any))
	put(t, tr, transport.Ref{Type: "order", ID: uuid.NewString()}, "OrderPaid", OrderPaid{Amount: 9})
	parked := &parkRecorder{}
	sub, err := subscription.New(tr, "pages", subscription.NewMemoryCheckpoints(), subscription.Wait(time.Second),
		subscription.Upcast(up), subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(parked)))
	require.NoError(t, err)
	m := newTxModel(nil)
	sub.OnPage(m.page)
	start(t, sub)
	require.NoError(t, sub.Await(context.Background(), 5))
	applied, _ := m.snapshot()
	assert.Equal(t, map[int64]int{1: 1, 2: 1, 3: 1, 5: 1}, applied)
	assert.Equal(t, []int64{4}, parked.got)
	m.mu.Lock()
	defer m.mu.Unlock()
	assert.Equal(t, []string{"OrderPaid", "OrderPaid", "OrderSettled", "OrderPaid"}, m.types, "upcast for the order only")
}

// A page handler must be the only handler.
func TestPageHandlerAlone(t *testing.T) {
	tr := memory.New()
	storeN(t, tr, 1)
	for name, add := range map[string]func(*subscription.Subscription){
		"typed": func(s *subscription.Subscription) { typed(newSeen(), s) },
		"entry": func(s *subscription.Subscription) {
			s.OnEntry(func(context.Context, transport.FeedEntry) error { return nil })
		},
		"all": func(s *subscription.Subscription) {
			s.OnAll(func(context.Context, eventbus.Envelope) error { return nil })
		},
		"other page": func(s *subscription.Subscription) { s.OnPage(newTxModel(nil).page) },
	} {
		t.Run(name, func(t *testing.T) {
			sub, err := subscription.New(tr, "pages", subscription.NewMemoryCheckpoints())
			require.NoError(t, err)
			m := newTxModel(nil)
			sub.OnPage(m.page)
			add(sub)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // ends Run if the set-up were taken
			defer cancel()
			assert.ErrorIs(t, sub.Run(ctx), subscription.ErrSetup)
			_, calls := m.snapshot()
			assert.Empty(t, calls, "nothing applied")
		})
	}
}

// WritesCheckpoint: Run saves no checkpoint after a page the handler
// wrote it for, but saves past a parked entry the handler never applied.
func TestPageWritesCheckpoint(t *testing.T) {
	tr := memory.New()
	storeN(t, tr, 4)
	cps := &countingCheckpoints{MemoryCheckpoints: subscription.NewMemoryCheckpoints()}
	parked := &parkRecorder{}
	sub, err := subscription.New(tr, "pages", cps, subscription.PageSize(2), subscription.Wait(time.Second),
		subscription.Retry(noRetry), subscription.OnFailure(subscription.Park(parked)))
	require.NoError(t, err)
	m := newTxModel(func(e transport.FeedEntry) error {
		if e.Sequence == 4 {
			return errBad
		}
		return nil
	})
	sub.OnPage(func(ctx context.Context, entries []transport.FeedEntry) error {
		if err := m.page(ctx, entries); err != nil {
			return err
		}
		// The handler's own checkpoint, as in its transaction.
		return cps.MemoryCheckpoints.Save(ctx, "pages", entries[len(entries)-1].Sequence)
	}, subscription.WritesCheckpoint())
	start(t, sub)
	require.NoError(t, sub.Await(context.Background(), 4))
	require.NoError(t, sub.Close(context.Background()))
	assert.Equal(t, []int64{4}, cps.saved(), "only the save past the parked entry; the handler wrote the others")
	assert.Equal(t, []int64{4}, parked.got)
	pos, _, _ := cps.Load(context.Background(), "pages")
	assert.Equal(t, int64(4), pos)
}
