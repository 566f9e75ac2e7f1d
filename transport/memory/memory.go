// Package memory is the embedded in-process transport, the default store of
// sourced: safe for concurrent use, fast, and gone when the process ends.
//
// It follows the Serialized Aggregates API to the letter, so code that runs
// on it runs unchanged on the HTTP transport: the version rises by one per
// stored batch, Load pages by batches with an exclusive since and a default
// and maximum limit of 1000, delete tokens expire after ten minutes and are
// single-use, and StoreBulk is atomic across aggregates. It validates what
// it stores with the transport package's Check functions, like every
// transport, so what it accepts the others accept.
//
// Storage is append-only per aggregate and the feed grows in fixed-size
// blocks, so a store never copies what is already stored, and the cost of a
// Create stays the same as the store grows to millions of aggregates: no
// index is rebuilt at once, and what the store keeps for an aggregate of one
// batch holds no Go pointer (its bytes are in shared 8 KB blocks named by
// number, its indexes hold numbers), so a garbage collection follows a
// pointer per block of tens of aggregates, not several per aggregate (see
// streams.go). Store times keep nanoseconds but not the clock's time zone or
// monotonic reading: they come back as time.Unix gives them. Pages that Load
// and ReadFeed return are the caller's (their Event and FeedEntry values are
// copies); the Data of returned events is shared with the store and must be
// treated as read-only.
package memory

import (
	"context"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/deletetoken"
)

// Option configures a Transport.
type Option func(*Transport)

// WithClock sets the clock that dates batches and expires delete tokens.
func WithClock(now func() time.Time) Option {
	return func(t *Transport) {
		if now != nil {
			t.now = now
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(t *Transport) {
		if l != nil {
			t.log = l
		}
	}
}

// Transport keeps events in memory. The zero value is not usable; call New.
type Transport struct {
	now func() time.Time
	log *zap.Logger

	mu      sync.RWMutex
	scopes  map[transport.Scope]*scopeState
	tokens  *deletetoken.Registry
	feeds   map[string]*feedLog // by tenant
	signal  commitsignal.Signal // notified after every commit
	blocks  blockTable          // the bytes of ids and batches
	arena   arena               // ids and small first batches
	appends arena               // small later batches
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Lister    = (*Transport)(nil)
	_ transport.Feeder    = (*Transport)(nil)
)

// New returns an empty in-memory transport.
func New(opts ...Option) *Transport {
	t := &Transport{
		now:    time.Now,
		log:    zap.NewNop(),
		scopes: make(map[transport.Scope]*scopeState),
		feeds:  make(map[string]*feedLog),
	}
	t.arena.blocks, t.appends.blocks = &t.blocks, &t.blocks
	for _, o := range opts {
		o(t)
	}
	t.tokens = deletetoken.New(t.now)
	return t
}

func canceled(ctx context.Context, op string, ref transport.Ref) error {
	if err := ctx.Err(); err != nil {
		return transport.Wrap(err, op, ref, transport.ErrUnavailable)
	}
	return nil
}

// stream returns the stream of ref and its scope, or nil.
func (t *Transport) stream(ref transport.Ref) (*scopeState, *stream) {
	if sc := t.scopes[ref.Scope()]; sc != nil {
		if s, _ := sc.find(keyOf(ref.ID)); s != nil {
			return sc, s
		}
	}
	return nil, nil
}

// Load implements transport.Transport. A page stops before its events pass
// transport.MaxPageBytes (a first batch larger than that comes alone).
func (t *Transport) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	const op = "load"
	if err := transport.CheckLoad(ref, since, limit); err != nil {
		return transport.Page{}, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return transport.Page{}, err
	}
	limit = transport.PageLimit(limit)
	t.mu.RLock()
	defer t.mu.RUnlock()
	sc, s := t.stream(ref)
	if s == nil {
		return transport.Page{}, transport.NewError(op, ref, transport.ErrNotFound)
	}
	v := sc.version(s)
	if since >= v {
		return transport.Page{Events: []transport.Event{}, Version: since}, nil
	}
	to := min(since+int64(limit), v)
	// Cut the page where its bytes would pass MaxPageBytes.
	last, size, n := since, int64(0), 0
	for last < to {
		b := sc.batch(s, last+1)
		if last > since && size+b.bytes > transport.MaxPageBytes {
			break
		}
		size += b.bytes
		n += int(b.events)
		last++
	}
	// A copy: the caller may change the page without changing the store.
	events := make([]transport.Event, 0, n)
	for ver := since + 1; ver <= last; ver++ {
		events = sc.batch(s, ver).decode(&t.blocks, events)
	}
	return transport.Page{Events: events, Version: last, HasMore: last < v}, nil
}

// Store implements transport.Transport.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	if err := checkSize(op, ref, int64(encodedSize(events))); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	if err := t.store(op, ref, events, expected); err != nil {
		return err
	}
	t.signal.Notify(ref.Tenant, ref.Type)
	return nil
}

func (t *Transport) store(op string, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := t.scopes[ref.Scope()]
	var s *stream
	var pos uint32
	key := keyOf(ref.ID)
	if sc != nil {
		s, pos = sc.find(key)
	}
	current := int64(0)
	if s != nil {
		current = sc.version(s)
	}
	if !expected.Check(current) {
		e := transport.NewError(op, ref, transport.ErrConflict)
		e.Expected = expected
		return e
	}
	if sc == nil {
		sc = t.newScopeLocked(ref.Scope())
	}
	if s == nil {
		s, pos = sc.add(key, &t.arena)
	}
	t.appendLocked(ref.Tenant, sc, s, pos, events, t.now())
	return nil
}

func (t *Transport) newScopeLocked(scope transport.Scope) *scopeState {
	sc := newScope(scope.Type, &t.blocks)
	t.feedLocked(scope.Tenant).addScope(sc)
	t.scopes[scope] = sc
	return sc
}

// appendLocked stores a batch; its time never goes back for an aggregate,
// even if the clock does.
func (t *Transport) appendLocked(tenant string, sc *scopeState, s *stream, pos uint32, events []transport.Event, now time.Time) {
	v := sc.version(s) + 1
	a := &t.arena
	if v > 1 {
		a = &t.appends // apart from first batches (see arena)
	}
	b := encodeBatch(events, a)
	b.stored = now.UnixNano()
	if v > 1 {
		b.stored = max(b.stored, sc.updated(s))
	}
	b.seq = t.recordLocked(tenant, sc, pos, v)
	sc.push(s, b)
	s.events += int64(b.events)
}

// StoreBulk implements transport.Transport.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	for _, b := range batches {
		if err := checkSize(op, transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}, int64(encodedSize(b.Events))); err != nil {
			return err
		}
	}
	if err := canceled(ctx, op, sref); err != nil {
		return err
	}
	if err := t.storeBulk(op, scope, batches); err != nil {
		return err
	}
	t.signal.Notify(scope.Tenant, scope.Type)
	return nil
}

func (t *Transport) storeBulk(op string, scope transport.Scope, batches []transport.Batch) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := t.scopes[scope]
	for _, b := range batches {
		current := int64(0)
		if sc != nil {
			if s, _ := sc.find(keyOf(b.AggregateID)); s != nil {
				current = sc.version(s)
			}
		}
		if !b.Expected.Check(current) {
			e := transport.NewError(op, transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}, transport.ErrConflict)
			e.Expected = b.Expected
			return e
		}
	}
	if sc == nil {
		sc = t.newScopeLocked(scope)
	}
	now := t.now()
	for _, b := range batches {
		key := keyOf(b.AggregateID)
		s, pos := sc.find(key)
		if s == nil {
			s, pos = sc.add(key, &t.arena)
		}
		t.appendLocked(scope.Tenant, sc, s, pos, b.Events, now)
	}
	return nil
}

// Exists implements transport.Transport.
func (t *Transport) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	const op = "exists"
	if err := transport.CheckExists(ref); err != nil {
		return false, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return false, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, s := t.stream(ref)
	return s != nil, nil
}

// RequestDelete implements transport.Transport. Like the API, it answers
// with a token even when nothing matches the target yet.
func (t *Transport) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	const op = "request delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return "", err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return "", err
	}
	return t.tokens.Issue(target), nil
}

// ConfirmDelete implements transport.Transport. The token is redeemed only
// when the delete goes ahead: a confirm that fails before (an ended
// context, an invalid target) leaves it usable.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.tokens.Redeem(target, token) {
		return transport.NewError(op, ref, transport.ErrBadDeleteToken)
	}
	scope := transport.Scope{Tenant: target.Tenant, Type: target.Type}
	sc := t.scopes[scope]
	f := t.feeds[target.Tenant]
	switch {
	case sc == nil:
	case target.AllOfType:
		sc.each(func(s *stream) { f.forgetLocked(sc.seqs(s)) })
		sc.releaseAll()
		f.forgetScope(sc)
		delete(t.scopes, scope)
	default:
		key := keyOf(target.ID)
		if s, pos := sc.find(key); s != nil {
			f.forgetLocked(sc.seqs(s))
			sc.remove(key, pos)
			if sc.live == 0 {
				// Its type's last aggregate: drop the scope as a delete of
				// the whole type does, or its positions, id table and feed
				// index would keep the size of the most it ever held.
				f.forgetScope(sc)
				delete(t.scopes, scope)
			}
		}
	}
	t.log.Info("deleted", zap.String("target", target.String()), zap.String("tenant", target.Tenant))
	return nil
}

// List implements transport.Lister: aggregates ordered by id, from an index
// kept sorted as aggregates come and go.
func (t *Transport) List(ctx context.Context, scope transport.Scope, skip, limit int) (transport.ListPage, error) {
	const op = "list"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckList(scope, skip, limit); err != nil {
		return transport.ListPage{}, err
	}
	if err := canceled(ctx, op, sref); err != nil {
		return transport.ListPage{}, err
	}
	limit = transport.PageLimit(limit)
	t.mu.RLock()
	sc := t.scopes[scope]
	if sc != nil && !sc.ids.ready() {
		// New ids since the last List: merge them in, once, under the
		// write lock.
		t.mu.RUnlock()
		t.mu.Lock()
		if sc = t.scopes[scope]; sc != nil {
			sc.ids.merge(sc)
		}
		t.mu.Unlock()
		t.mu.RLock()
		sc = t.scopes[scope]
	}
	defer t.mu.RUnlock()
	page := transport.ListPage{Aggregates: []transport.AggregateInfo{}}
	if sc == nil {
		return page, nil
	}
	var positions []uint32
	var more bool
	if sc.ids.ready() {
		positions, more = sc.ids.page(skip, limit)
	} else {
		// More arrived between the merge and the read lock: page from a
		// sorted copy of all the ids.
		positions, more = sc.ids.snapshotPage(sc, skip, limit)
	}
	page.Aggregates = make([]transport.AggregateInfo, 0, len(positions))
	for _, pos := range positions {
		s := sc.at(pos)
		page.Aggregates = append(page.Aggregates, transport.AggregateInfo{
			AggregateID: sc.id(s), AggregateType: scope.Type, AggregateVersion: sc.version(s), LastUpdatedAt: storedTime(sc.updated(s)),
		})
	}
	page.HasMore = more
	return page, nil
}

// FeedOverview implements transport.Feeder.
func (t *Transport) FeedOverview(ctx context.Context, tenant string) ([]transport.FeedInfo, error) {
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return nil, err
	}
	if err := canceled(ctx, "feed overview", transport.Ref{Tenant: tenant}); err != nil {
		return nil, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	infos := []transport.FeedInfo{}
	for scope, sc := range t.scopes {
		if scope.Tenant != tenant || sc.live == 0 {
			continue
		}
		info := transport.FeedInfo{AggregateType: scope.Type, Aggregates: int64(sc.live)}
		sc.each(func(s *stream) {
			info.Batches += sc.version(s)
			info.Events += s.events
		})
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].AggregateType < infos[j].AggregateType })
	return infos, nil
}

// storedTime is a store time as kept (Unix nanoseconds) as a time.Time, in
// the local time zone as time.Now gives it.
func storedTime(n int64) time.Time { return time.Unix(0, n) }
