package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/transport"
)

// groupHarness holds the group commit where a test wants it: commits
// listed in gates wait for their gate inside the transaction, after the
// writes and before the commit; every commit and every queued write is
// reported.
type groupHarness struct {
	t       *testing.T
	tr      *Transport
	mu      sync.Mutex
	commits []int                 // writes applied per committed transaction
	gates   map[int]chan struct{} // commit number -> closed to let it commit
	entered chan int              // commit numbers as they reach the hook
	queued  chan *write
}

func newGroupHarness(t *testing.T) *groupHarness {
	return groupHarnessAt(t, filepath.Join(t.TempDir(), "events.db"))
}

// groupHarnessAt is newGroupHarness on the file at path.
func groupHarnessAt(t *testing.T, path string) *groupHarness {
	tr, err := Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	h := &groupHarness{t: t, tr: tr, gates: map[int]chan struct{}{}, entered: make(chan int, 1000), queued: make(chan *write, 1000)}
	tr.group.hooks.commit = func(_ *bbolt.Tx, n int) {
		h.mu.Lock()
		i := len(h.commits)
		h.commits = append(h.commits, n)
		gate := h.gates[i]
		h.mu.Unlock()
		h.entered <- i
		if gate != nil {
			<-gate
		}
	}
	tr.group.hooks.queued = func(w *write) { h.queued <- w }
	return h
}

// hold makes commit i wait until the returned func is called.
func (h *groupHarness) hold(i int) func() {
	gate := make(chan struct{})
	h.mu.Lock()
	h.gates[i] = gate
	h.mu.Unlock()
	return func() { close(gate) }
}

// waitCommit waits until commit i reached the hook.
func (h *groupHarness) waitCommit(i int) {
	h.t.Helper()
	for n := range h.entered {
		if n == i {
			return
		}
	}
}

// waitQueued waits until n writes queued, and returns them in queue order.
func (h *groupHarness) waitQueued(n int) []*write {
	for range n {
		<-h.queued
	}
	// The queue itself: the hook runs once a write is queued, so hooks of
	// writes queued together can run in another order than the queue's.
	g := &h.tr.group
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*write(nil), g.queue...)
}

func (h *groupHarness) commitSizes() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.commits...)
}

// txID is the id of the file's last committed transaction.
func (h *groupHarness) txID() int {
	var id int
	require.NoError(h.t, h.tr.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }))
	return id
}

var groupEvent = []transport.Event{{EventType: "Noted", Data: []byte(`{"n":1}`)}}

func (h *groupHarness) store(ctx context.Context, ref transport.Ref, expected transport.ExpectedVersion) <-chan error {
	out := make(chan error, 1)
	go func() { out <- h.tr.Store(ctx, ref, groupEvent, expected) }()
	return out
}

func (h *groupHarness) bulk(ctx context.Context, scope transport.Scope, batches ...transport.Batch) <-chan error {
	out := make(chan error, 1)
	go func() { out <- h.tr.StoreBulk(ctx, scope, batches) }()
	return out
}

func newRef() transport.Ref { return transport.Ref{Type: "order", ID: uuid.NewString()} }

func batchOf(id string, expected transport.ExpectedVersion) transport.Batch {
	return transport.Batch{AggregateID: id, Events: groupEvent, Expected: expected}
}

// feedIDs lists the aggregate ids of the default tenant's feed after since,
// in sequence order, and checks the numbers follow each other.
func feedIDs(t *testing.T, tr *Transport, since int64) []string {
	t.Helper()
	var ids []string
	for {
		p, err := tr.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since})
		require.NoError(t, err)
		for _, e := range p.Entries {
			require.Equal(t, since+1, e.Sequence, "feed numbers follow each other")
			since = e.Sequence
			ids = append(ids, e.AggregateID)
		}
		if !p.HasMore {
			return ids
		}
	}
}

// Writers arriving while a commit is under way are committed together, in
// one transaction (one fsync), in the order they queued, each answered.
func TestConcurrentStoresShareOneTransaction(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	release := h.hold(0)
	first := newRef()
	firstDone := h.store(ctx, first, transport.MustNotExist)
	h.waitCommit(0)
	before := h.txID()

	const stores, bulks = 15, 5
	refs := map[*write][]string{}
	var results []<-chan error
	for i := range stores + bulks {
		if i%4 == 3 {
			a, b := uuid.NewString(), uuid.NewString()
			results = append(results, h.bulk(ctx, transport.Scope{Type: "order"}, batchOf(a, transport.MustNotExist), batchOf(b, transport.MustNotExist)))
		} else {
			results = append(results, h.store(ctx, newRef(), transport.MustNotExist))
		}
	}
	order := h.waitQueued(stores + bulks)
	for _, w := range order {
		for _, b := range w.batches {
			refs[w] = append(refs[w], b.id)
		}
	}
	release()
	require.NoError(t, <-firstDone)
	for _, r := range results {
		require.NoError(t, <-r)
	}
	assert.Equal(t, []int{1, stores + bulks}, h.commitSizes(), "the first commit alone, then every queued write in one")
	assert.Equal(t, 2, h.txID()-before, "two transactions, two fsyncs")

	want := []string{first.ID}
	for _, w := range order {
		want = append(want, refs[w]...)
	}
	assert.Equal(t, want, feedIDs(t, h.tr, 0), "feed numbers in commit order, the group's in queue order")
}

// In one group: a conflict, a bulk store with one conflicting batch, a
// write that meets damage halfway, and one that panics fail alone; the
// others are stored, in one transaction, and the failures leave nothing.
func TestFailingWritesLeaveTheGroupAlone(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	old := newRef()
	require.NoError(t, h.tr.Store(ctx, old, groupEvent, transport.MustNotExist))
	tenant := uuid.NewString()
	broken := transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}
	require.NoError(t, h.tr.Store(ctx, broken, groupEvent, transport.MustNotExist))
	require.NoError(t, h.tr.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketFeeds).Bucket([]byte("t:" + tenant)).DeleteBucket(bucketEntries)
	}))
	seen := len(h.commitSizes())
	panicky := uuid.NewString()
	h.tr.group.hooks.apply = func(w *write) {
		if w.batches[0].id == panicky {
			panic("a page fault, say")
		}
	}

	release := h.hold(seen)
	lead := newRef()
	leadDone := h.store(ctx, lead, transport.MustNotExist)
	h.waitCommit(seen)
	before := h.txID()

	a, c1, c2, d1, e := newRef(), uuid.NewString(), uuid.NewString(), uuid.NewString(), newRef()
	f := transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}
	g := transport.Ref{Type: "order", ID: panicky}
	scope := transport.Scope{Type: "order"}
	type call struct {
		name string
		done <-chan error
	}
	var calls []call
	add := func(name string, done <-chan error) {
		calls = append(calls, call{name, done})
		h.waitQueued(1) // one at a time: the queue order is the calls' order
	}
	add("a", h.store(ctx, a, transport.MustNotExist))
	add("conflict", h.store(ctx, old, transport.Exactly(0)))
	add("c", h.bulk(ctx, scope, batchOf(c1, transport.MustNotExist), batchOf(c2, transport.MustNotExist)))
	add("d", h.bulk(ctx, scope, batchOf(d1, transport.MustNotExist), batchOf(old.ID, transport.Exactly(0))))
	add("damaged feed", h.store(ctx, f, transport.MustNotExist))
	add("panic", h.store(ctx, g, transport.MustNotExist))
	add("e", h.store(ctx, e, transport.MustNotExist))
	add("old", h.store(ctx, old, transport.Exactly(1)))
	release()
	require.NoError(t, <-leadDone)

	errs := map[string]error{}
	for _, c := range calls {
		errs[c.name] = <-c.done
	}
	for _, ok := range []string{"a", "c", "e", "old"} {
		assert.NoError(t, errs[ok], ok)
	}
	assert.ErrorIs(t, errs["conflict"], transport.ErrConflict)
	assert.ErrorIs(t, errs["d"], transport.ErrConflict)
	assert.ErrorIs(t, errs["damaged feed"], ErrDamaged)
	assert.ErrorIs(t, errs["panic"], ErrDamaged)
	assert.Contains(t, errs["panic"].Error(), "a page fault, say")

	exists := func(ref transport.Ref) bool {
		ok, err := h.tr.Exists(ctx, ref)
		require.NoError(t, err)
		return ok
	}
	for _, ref := range []transport.Ref{a, {Type: "order", ID: c1}, {Type: "order", ID: c2}, e} {
		assert.True(t, exists(ref), ref.ID)
	}
	for _, ref := range []transport.Ref{{Type: "order", ID: d1}, f, g} {
		assert.False(t, exists(ref), "a failed write leaves nothing: %s", ref.ID)
	}
	p, err := h.tr.Load(ctx, old, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(2), p.Version)

	assert.Equal(t, []int{1, 4}, h.commitSizes()[seen:], "the leader's commit, then the group's four good writes")
	assert.Equal(t, 2, h.txID()-before, "the failed attempts were rolled back, not committed")
	assert.Equal(t, []string{old.ID, lead.ID, a.ID, c1, c2, e.ID, old.ID}, feedIDs(t, h.tr, 0),
		"no feed numbers lost to the rolled-back attempts")
}

// A caller whose context ends while its write is queued gets the
// context's error, and nothing of the write is stored.
func TestCanceledWhileQueuedStoresNothing(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	release := h.hold(0)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(0)

	gone, cancel := context.WithCancel(ctx)
	ref := newRef()
	done := h.store(gone, ref, transport.MustNotExist)
	stays := newRef()
	staysDone := h.store(ctx, stays, transport.MustNotExist)
	h.waitQueued(2)
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	release()
	require.NoError(t, <-leadDone)
	require.NoError(t, <-staysDone)
	ok, err := h.tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok, "the canceled write was not stored")
	ok, err = h.tr.Exists(ctx, stays)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, []int{1, 1}, h.commitSizes())
}

// A caller whose context ends while the transaction holding its write
// commits gets that transaction's answer: stored and acknowledged.
func TestCanceledWhileCommittingGetsItsAnswer(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	release := h.hold(0)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(0)

	next := h.store(ctx, newRef(), transport.MustNotExist) // leads the next group
	h.waitQueued(1)
	gone, cancel := context.WithCancel(ctx)
	ref := newRef()
	done := h.store(gone, ref, transport.MustNotExist)
	var queued *write
	h.waitQueued(1)

	noticed := make(chan bool, 1)
	h.tr.group.hooks.canceled = func(w *write, stillQueued bool) {
		queued = w
		noticed <- stillQueued
	}
	release2 := h.hold(1)
	release()
	require.NoError(t, <-leadDone)
	h.waitCommit(1) // the second group, both writes in it, about to commit
	cancel()
	require.False(t, <-noticed, "the caller saw its context end after its write was taken")
	release2()
	require.NoError(t, <-next)
	require.NoError(t, <-done, "its transaction committed: it is told so")
	assert.Equal(t, ref.ID, queued.ref.ID)
	p, err := h.tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Version)
	assert.Equal(t, []int{1, 2}, h.commitSizes())
}

// A long queue is committed in groups of bounded size.
func TestGroupsAreBounded(t *testing.T) {
	h := newGroupHarness(t)
	h.tr.group.maxWrites = 3
	ctx := context.Background()
	release := h.hold(0)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(0)
	var results []<-chan error
	for range 7 {
		results = append(results, h.store(ctx, newRef(), transport.MustNotExist))
	}
	h.waitQueued(7)
	release()
	require.NoError(t, <-leadDone)
	for _, r := range results {
		require.NoError(t, <-r)
	}
	assert.Equal(t, []int{1, 3, 3, 1}, h.commitSizes())
}

// A group stops before its writes pass the byte bound; a write larger
// than the bound goes alone.
func TestGroupsAreBoundedInBytes(t *testing.T) {
	h := newGroupHarness(t)
	one := len(encodeBatch(groupEvent))
	h.tr.group.maxBytes = 3 * one
	ctx := context.Background()
	release := h.hold(0)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(0)
	var results []<-chan error
	for range 4 {
		results = append(results, h.store(ctx, newRef(), transport.MustNotExist))
		h.waitQueued(1)
	}
	big := make([]transport.Batch, 4)
	for i := range big {
		big[i] = batchOf(uuid.NewString(), transport.MustNotExist)
	}
	results = append(results, h.bulk(ctx, transport.Scope{Type: "order"}, big...))
	h.waitQueued(1)
	results = append(results, h.store(ctx, newRef(), transport.MustNotExist))
	h.waitQueued(1)
	release()
	require.NoError(t, <-leadDone)
	for _, r := range results {
		require.NoError(t, <-r)
	}
	assert.Equal(t, []int{1, 3, 1, 1, 1}, h.commitSizes(), "3 stores, 1 store (the bulk would pass the bound), the bulk alone, 1 store")
}

// Close while writes are queued: each gets its answer or ErrClosed, none
// hangs, and exactly the acknowledged ones are in the file.
func TestCloseWithWritesQueued(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newGroupHarness(t)
	ctx := context.Background()
	release := h.hold(0)
	lead := newRef()
	leadDone := h.store(ctx, lead, transport.MustNotExist)
	h.waitCommit(0)
	refs := make([]transport.Ref, 10)
	results := make([]<-chan error, len(refs))
	for i := range refs {
		refs[i] = newRef()
		results[i] = h.store(ctx, refs[i], transport.MustNotExist)
	}
	h.waitQueued(len(refs))
	closed := make(chan error, 1)
	go func() { closed <- h.tr.Close() }()
	release()
	require.NoError(t, <-leadDone, "the transaction under way commits")
	require.NoError(t, <-closed)
	stored := map[string]bool{lead.ID: true}
	for i, r := range results {
		err := <-r
		if err != nil {
			require.ErrorIs(t, err, ErrClosed)
			continue
		}
		stored[refs[i].ID] = true
	}
	tr, err := Open(h.tr.Path())
	require.NoError(t, err)
	defer tr.Close()
	for _, ref := range append(refs, lead) {
		ok, err := tr.Exists(ctx, ref)
		require.NoError(t, err)
		assert.Equal(t, stored[ref.ID], ok, "stored exactly when acknowledged: %s", ref.ID)
	}
	t.Logf("%d of %d queued writes committed before the close", len(stored)-1, len(refs))
}

// Store and StoreBulk answer with the error shapes they always had.
func TestGroupErrorsNameTheirAggregate(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	ref := newRef()
	require.NoError(t, h.tr.Store(ctx, ref, groupEvent, transport.MustNotExist))
	err := h.tr.Store(ctx, ref, groupEvent, transport.Exactly(0))
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "store", te.Op)
	assert.Equal(t, ref.ID, te.AggregateID)
	assert.Equal(t, transport.Exactly(0), te.Expected)
	err = h.tr.StoreBulk(ctx, transport.Scope{Type: "order"}, []transport.Batch{batchOf(uuid.NewString(), transport.MustNotExist), batchOf(ref.ID, transport.Exactly(5))})
	require.ErrorAs(t, err, &te)
	assert.Equal(t, ref.ID, te.AggregateID, fmt.Sprint(err))
	assert.ErrorIs(t, err, transport.ErrConflict)
}

// A conflict is found before its write touches the transaction, so it
// costs the group no second attempt: each write is applied once.
func TestConflictCostsTheGroupNoSecondAttempt(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	old := newRef()
	require.NoError(t, h.tr.Store(ctx, old, groupEvent, transport.MustNotExist))
	release := h.hold(1)
	leadDone := h.store(ctx, newRef(), transport.MustNotExist)
	h.waitCommit(1)
	var mu sync.Mutex
	applied := 0
	h.tr.group.hooks.apply = func(*write) { mu.Lock(); applied++; mu.Unlock() }
	good1 := h.store(ctx, newRef(), transport.MustNotExist)
	conflict := h.store(ctx, old, transport.MustNotExist)
	good2 := h.bulk(ctx, transport.Scope{Type: "order"}, batchOf(uuid.NewString(), transport.MustNotExist))
	h.waitQueued(3)
	release()
	require.NoError(t, <-leadDone)
	require.NoError(t, <-good1)
	require.ErrorIs(t, <-conflict, transport.ErrConflict)
	require.NoError(t, <-good2)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 3, applied, "one attempt: the conflict was refused, not rolled back")
	assert.Equal(t, []int{1, 1, 2}, h.commitSizes())
}

// A read model's write transaction through DB() holds the file: writers
// queue behind it and then commit together, in at most two transactions
// (the leader may have taken its group before the others queued).
func TestWritersQueueBehindAUserTransaction(t *testing.T) {
	h := newGroupHarness(t)
	ctx := context.Background()
	inside, leave := make(chan struct{}), make(chan struct{})
	user := make(chan error, 1)
	go func() {
		user <- h.tr.DB().Update(func(tx *bbolt.Tx) error {
			close(inside)
			<-leave
			_, err := tx.CreateBucketIfNotExists([]byte("readmodel"))
			return err
		})
	}()
	<-inside
	const n = 12
	results := make([]<-chan error, n)
	for i := range results {
		results[i] = h.store(ctx, newRef(), transport.MustNotExist)
	}
	h.waitQueued(n - 1) // one leads, waiting for the file; the others queue
	close(leave)
	require.NoError(t, <-user)
	for _, r := range results {
		require.NoError(t, <-r)
	}
	sizes := h.commitSizes()
	assert.LessOrEqual(t, len(sizes), 2, "%v", sizes)
	sum := 0
	for _, s := range sizes {
		sum += s
	}
	assert.Equal(t, n, sum)
}
