package bolt

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
)

// Group commit (issue 22). Concurrent Store and StoreBulk calls share one
// bbolt transaction, and so one fsync, without a fixed delay: the first
// caller to find no commit under way becomes the leader and commits at
// once; callers arriving meanwhile queue, and when the leader's commit is
// done, the first of them becomes the next leader and commits every write
// queued by then (up to maxGroupWrites writes and maxGroupBytes bytes),
// in the order they queued. A lone writer commits exactly as before, in its
// own transaction, without waiting for anybody.
//
// Each caller gets its own answer. Within the transaction each write is
// first checked (its aggregates' records and expected versions, nothing
// written), and a write that fails its check is answered with its error
// and leaves nothing behind. A write that fails after it began writing
// (damage met halfway, a bbolt panic on a damaged page) cannot be undone
// alone, so the whole transaction is rolled back, and the group runs
// again without that write, which gets its error. A transaction that
// fails as a whole (its commit, its fsync, bbolt on a damaged page that
// only the commit touches) blames no write: its writes then run one by
// one, each getting the answer it would have had alone.
//
// A caller whose context ends while its write is queued takes the write
// out and gets the context's error: nothing of it is stored. Once a leader
// took the write into a transaction, the caller waits for that
// transaction's answer, whatever its context says: stored and
// acknowledged, or not stored and an error, never in between.

const (
	// maxGroupWrites and maxGroupBytes bound one group: a long queue is
	// committed in several transactions of a bounded size rather than one
	// giant one. A single write larger than that goes alone.
	maxGroupWrites = 256
	maxGroupBytes  = 4 << 20
	// maxGroupYields bounds how often a leader yields to let writers
	// queue.
	maxGroupYields = 8
)

// write is one caller's Store or StoreBulk on its way to the file.
type write struct {
	ctx     context.Context
	op      string
	ref     transport.Ref // the aggregate of a Store, the scope of a StoreBulk
	batches []pendingBatch
	size    int
	done    chan answer // the leader's answer, or leadership handed over

	queued bool // in committer.queue; guarded by committer.mu

	// The leader's bookkeeping for one group.
	err     error
	refused bool // failed its check: answered, nothing written
	out     bool // failed after writing: left out of the next attempt
}

// pendingBatch is one encoded batch of a write.
type pendingBatch struct {
	id       string
	data     []byte
	events   int
	expected transport.ExpectedVersion
}

// answer is what a queued caller receives: its write's result, or lead
// set when it became the leader (its write not yet committed).
type answer struct {
	err  error
	lead bool
}

// committer is the queue of writes and who leads.
type committer struct {
	mu      sync.Mutex
	queue   []*write
	leading bool
	last    int // the size of the last group taken

	// maxWrites and maxBytes override maxGroupWrites and maxGroupBytes
	// (tests).
	maxWrites, maxBytes int
	hooks               groupHooks
}

// groupHooks let this package's tests see and hold the group commit.
type groupHooks struct {
	queued   func(w *write)              // w queued behind a leader
	canceled func(w *write, queued bool) // w's context ended while it waited; queued: it was still in the queue
	apply    func(w *write)              // w about to be applied in a group's transaction
	commit   func(tx *bbolt.Tx, n int)   // a group's transaction, n writes applied, about to commit
}

// errRetryGroup rolls a group's transaction back to run it again without a
// write that failed after writing.
var errRetryGroup = errors.New("a write of the group failed halfway")

// errAllRefused rolls back a group's transaction in which every write was
// refused: there is nothing to commit, and an empty commit would still
// write pages and fsync.
var errAllRefused = errors.New("every write of the group was refused")

// submit commits w with whatever else is queued and returns w's answer.
func (t *Transport) submit(w *write) error {
	g := &t.group
	g.mu.Lock()
	if !g.leading {
		g.leading = true
		g.mu.Unlock()
		return t.lead(w)
	}
	w.done = make(chan answer, 1)
	w.queued = true
	g.queue = append(g.queue, w)
	g.mu.Unlock()
	if g.hooks.queued != nil {
		g.hooks.queued(w)
	}
	var a answer
	select {
	case a = <-w.done:
	case <-w.ctx.Done():
		g.mu.Lock()
		queued := w.queued
		if queued {
			g.remove(w)
		}
		g.mu.Unlock()
		if g.hooks.canceled != nil {
			g.hooks.canceled(w, queued)
		}
		if queued {
			return canceled(w.ctx, w.op, w.ref)
		}
		a = <-w.done // taken into a transaction: its answer is the truth
	}
	if a.lead {
		return t.lead(w)
	}
	return a.err
}

// remove takes w out of the queue; the caller holds g.mu.
func (g *committer) remove(w *write) {
	if i := slices.Index(g.queue, w); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
	w.queued = false
}

// lead commits own and the writes queued behind it, hands the lead to the
// next queued write, if any, and answers the group.
func (t *Transport) lead(own *write) error {
	g := &t.group
	// When the last group had company, its callers, just answered, are
	// likely about to write again: let them queue before taking the group,
	// yielding to the scheduler while the queue grows (a yield, not a
	// timed wait: a lone writer never gets here).
	for n, i := g.queued(), 0; n >= 0 && n < maxGroupWrites && i < maxGroupYields; i++ {
		runtime.Gosched()
		m := g.queued()
		if m == n {
			break
		}
		n = m
	}
	group := g.take(own)
	answered := false
	defer func() {
		// Even if something below panics, the next writer leads and every
		// write of this group is answered: nobody waits forever.
		g.handOver()
		for _, w := range group[1:] {
			if !answered {
				w.err = fmt.Errorf("%w: the group commit's leader failed", ErrDamaged)
			}
			w.done <- answer{err: w.err}
		}
	}()
	// A write whose caller is gone by now is not stored: its caller gets
	// the context's error.
	live := group
	for i, w := range group {
		if w.ctx.Err() != nil {
			if len(live) == len(group) {
				live = append([]*write(nil), group[:i]...)
			}
			w.err = canceled(w.ctx, w.op, w.ref)
			continue
		}
		if len(live) < len(group) {
			live = append(live, w)
		}
	}
	if len(live) > 0 {
		t.commit(live)
	}
	answered = true
	return own.err
}

// queued returns how many writes are queued, or -1 when the last group
// was a lone write.
func (g *committer) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last <= 1 {
		return -1
	}
	return len(g.queue)
}

// take returns own and the writes at the head of the queue, within the
// group's bounds.
func (g *committer) take(own *write) []*write {
	limit, bytes := maxGroupWrites, maxGroupBytes
	if g.maxWrites > 0 {
		limit = g.maxWrites
	}
	if g.maxBytes > 0 {
		bytes = g.maxBytes
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n, size := 0, own.size
	for n < len(g.queue) && n+1 < limit && size+g.queue[n].size <= bytes {
		size += g.queue[n].size
		n++
	}
	g.last = n + 1
	group := make([]*write, 0, n+1)
	group = append(group, own)
	for _, w := range g.queue[:n] {
		w.queued = false
		group = append(group, w)
	}
	rest := copy(g.queue, g.queue[n:])
	clear(g.queue[rest:])
	g.queue = g.queue[:rest]
	return group
}

// handOver makes the first queued write's caller the leader, or ends the
// lead when nothing is queued.
func (g *committer) handOver() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.leading = false
		return
	}
	next := g.queue[0]
	g.remove(next)
	next.done <- answer{lead: true}
}

// commit writes the group in one transaction and sets each write's err.
// A write that fails its check is refused alone; one that fails halfway
// sends the group round again without it. When the transaction itself
// fails (its commit, or bbolt on a damaged page only the commit touches),
// no write is to blame and a refusal may rest on a write that was never
// stored: each write of it then runs alone, in order, and gets the answer
// it would have had without the group.
func (t *Transport) commit(ws []*write) {
	if t.commitGroup(ws) == nil {
		return
	}
	left := ws[:0:0]
	for _, w := range ws {
		if !w.out {
			left = append(left, w)
		}
	}
	if len(left) < 2 {
		return
	}
	for _, w := range left {
		t.commitGroup([]*write{w})
	}
}

// commitGroup is one round of commit: the group in one transaction, again
// without each write that fails halfway. It returns the transaction's
// error, nil when it committed or nothing was left to commit.
func (t *Transport) commitGroup(ws []*write) error {
	for {
		left := 0
		for _, w := range ws {
			if !w.out {
				w.err, w.refused = nil, false
				left++
			}
		}
		if left == 0 {
			return nil // every write failed halfway: nothing to commit
		}
		err := guard(func() error {
			return t.db.Update(func(tx *bbolt.Tx) error {
				n := 0
				for _, w := range ws {
					if w.out {
						continue
					}
					if err := t.apply(tx, w); err != nil {
						w.err = err
						if !w.refused {
							w.out = true
							return errRetryGroup
						}
						continue
					}
					n++
				}
				if n == 0 {
					return errAllRefused
				}
				if h := t.group.hooks.commit; h != nil {
					h(tx, n)
				}
				return nil
			})
		})
		if errors.Is(err, errRetryGroup) {
			continue
		}
		if errors.Is(err, errAllRefused) {
			return nil // each write has its refusal
		}
		for _, w := range ws {
			if !w.out && !w.refused {
				w.err = err // the commit's answer: nil, or nothing stored
			}
		}
		return err
	}
}

// apply checks w, then writes it. A write that fails its check returns its
// error with w.refused set, nothing written; one that fails later, or
// panics (bbolt on a damaged page), returns its error with the transaction
// to be rolled back.
func (t *Transport) apply(tx *bbolt.Tx, w *write) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.refused = false
			err = fmt.Errorf("%w: bbolt failed on a page of the file: %v", ErrDamaged, r)
		}
	}()
	if h := t.group.hooks.apply; h != nil {
		h(w)
	}
	var one [1]aggMeta // a Store's, without an allocation
	metas := one[:0]
	for _, b := range w.batches {
		ref := transport.Ref{Tenant: w.ref.Tenant, Type: w.ref.Type, ID: b.id}
		m, err := checkBatch(tx, w.op, ref, b.expected)
		if err != nil {
			w.refused = true
			return err
		}
		metas = append(metas, m)
	}
	now := t.now() // one store time for every batch of a StoreBulk
	for i, b := range w.batches {
		ref := transport.Ref{Tenant: w.ref.Tenant, Type: w.ref.Type, ID: b.id}
		if err := writeBatch(tx, ref, metas[i], b.data, b.events, now); err != nil {
			return err
		}
	}
	return nil
}

// checkBatch reads the record of the aggregate a batch goes to and checks
// the expected version, writing nothing: the aggregate's meta (version 0
// for a new one).
func checkBatch(tx *bbolt.Tx, op string, ref transport.Ref, expected transport.ExpectedVersion) (aggMeta, error) {
	b, err := aggregateBucket(tx, ref)
	if err != nil {
		return aggMeta{}, err
	}
	var m aggMeta
	if b != nil {
		if m, err = readMeta(b, ref.Type, []byte(ref.ID)); err != nil {
			return aggMeta{}, err
		}
		if err := checkVersion(b, ref.Type, []byte(ref.ID), m); err != nil {
			return aggMeta{}, err
		}
	}
	if !expected.Check(m.version) {
		e := transport.NewError(op, ref, transport.ErrConflict)
		e.Expected = expected
		return aggMeta{}, e
	}
	return m, nil
}

// writeBatch writes a checked batch after version m.version: the record
// under the next version, its feed entry and the aggregate's record. The
// store time never goes back for an aggregate, even if the clock does.
func writeBatch(tx *bbolt.Tx, ref transport.Ref, m aggMeta, data []byte, events int, now time.Time) error {
	scopes, err := rootBucket(tx, bucketScopes)
	if err != nil {
		return err
	}
	scope, err := scopes.CreateBucketIfNotExists(scopeKey(ref.Scope()))
	if err != nil {
		return err
	}
	b, err := scope.CreateBucketIfNotExists([]byte(ref.ID))
	if err != nil {
		return err
	}
	if now.Before(m.updated) {
		now = m.updated
	}
	seq, err := recordFeed(tx, ref, m.version+1, now)
	if err != nil {
		return err
	}
	putHeader(data, seq, now)
	if err := b.Put(versionKey(m.version+1), data); err != nil {
		return err
	}
	if err := addEvents(b, events); err != nil {
		return err
	}
	return writeMeta(b, aggMeta{version: m.version + 1, updated: now})
}
