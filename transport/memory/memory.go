// Package memory is the embedded in-process transport, the default store of
// sourced: safe for concurrent use, fast, and gone when the process ends.
//
// It follows the Serialized Aggregates API to the letter, so code that runs
// on it runs unchanged on the HTTP transport: the version rises by one per
// stored batch, Load pages by batches with an exclusive since and a default
// and maximum limit of 1000, delete tokens expire after ten minutes and are
// single-use, and StoreBulk is atomic across aggregates.
//
// Storage is append-only per aggregate: Load returns slices of the stored
// events without copying them, so hydration allocates almost nothing here.
// The Data of returned events must be treated as read-only.
package memory

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
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
	scopes  map[transport.Scope]map[string]*stream
	tokens  *deletetoken.Registry
	counter uint64
	feeds   map[string]*feedLog // by tenant
	signal  commitsignal.Signal // broadcast after every commit
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Lister    = (*Transport)(nil)
	_ transport.Feeder    = (*Transport)(nil)
)

// stream is one aggregate's history. events only grows (until a delete
// replaces the whole stream), so slices handed out by Load stay valid.
type stream struct {
	events  []transport.Event
	ends    []int // ends[v-1] is the end offset in events of the batch of version v
	updated time.Time
}

func (s *stream) version() int64 { return int64(len(s.ends)) }

// New returns an empty in-memory transport.
func New(opts ...Option) *Transport {
	t := &Transport{
		now:    time.Now,
		log:    zap.NewNop(),
		scopes: make(map[transport.Scope]map[string]*stream),
		feeds:  make(map[string]*feedLog),
	}
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

// Load implements transport.Transport.
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
	s := t.scopes[ref.Scope()][ref.ID]
	if s == nil {
		return transport.Page{}, transport.NewError(op, ref, transport.ErrNotFound)
	}
	v := s.version()
	if since >= v {
		return transport.Page{Events: []transport.Event{}, Version: since}, nil
	}
	to := since + int64(limit)
	if to > v {
		to = v
	}
	from := 0
	if since > 0 {
		from = s.ends[since-1]
	}
	end := s.ends[to-1]
	// A capped slice: appending to it can never write into the store.
	return transport.Page{Events: s.events[from:end:end], Version: to, HasMore: to < v}, nil
}

// copyEvents makes the stored form of a batch: the caller keeps its slices,
// missing ids are assigned.
func copyEvents(dst []transport.Event, src []transport.Event) []transport.Event {
	size := 0
	for i := range src {
		size += len(src[i].Data)
	}
	buf := make([]byte, 0, size)
	for _, e := range src {
		if e.EventID == "" {
			e.EventID = uuid.NewString()
		}
		if e.Data != nil {
			start := len(buf)
			buf = append(buf, e.Data...)
			e.Data = buf[start:len(buf):len(buf)]
		}
		dst = append(dst, e)
	}
	return dst
}

// Store implements transport.Transport.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.signal.Broadcast()
	defer t.mu.Unlock()
	streams := t.scopes[ref.Scope()]
	s := streams[ref.ID]
	current := int64(0)
	if s != nil {
		current = s.version()
	}
	if !expected.Check(current) {
		e := transport.NewError(op, ref, transport.ErrConflict)
		e.Expected = expected
		return e
	}
	if streams == nil {
		streams = make(map[string]*stream)
		t.scopes[ref.Scope()] = streams
	}
	if s == nil {
		s = &stream{}
		streams[ref.ID] = s
	}
	t.appendLocked(ref, s, events)
	return nil
}

func (t *Transport) appendLocked(ref transport.Ref, s *stream, events []transport.Event) {
	s.events = copyEvents(s.events, events)
	s.ends = append(s.ends, len(s.events))
	s.updated = t.now()
	t.recordLocked(ref, s)
}

// StoreBulk implements transport.Transport.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	sref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	if err := canceled(ctx, op, sref); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.signal.Broadcast()
	defer t.mu.Unlock()
	streams := t.scopes[scope]
	for _, b := range batches {
		current := int64(0)
		if s := streams[b.AggregateID]; s != nil {
			current = s.version()
		}
		if !b.Expected.Check(current) {
			e := transport.NewError(op, transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}, transport.ErrConflict)
			e.Expected = b.Expected
			return e
		}
	}
	if streams == nil {
		streams = make(map[string]*stream)
		t.scopes[scope] = streams
	}
	for _, b := range batches {
		s := streams[b.AggregateID]
		if s == nil {
			s = &stream{}
			streams[b.AggregateID] = s
		}
		t.appendLocked(transport.Ref{Tenant: scope.Tenant, Type: scope.Type, ID: b.AggregateID}, s, b.Events)
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
	return t.scopes[ref.Scope()][ref.ID] != nil, nil
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

// ConfirmDelete implements transport.Transport.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = "confirm delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	if !t.tokens.Redeem(target, token) {
		return transport.NewError(op, ref, transport.ErrBadDeleteToken)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	scope := transport.Scope{Tenant: target.Tenant, Type: target.Type}
	if target.AllOfType {
		delete(t.scopes, scope)
	} else {
		delete(t.scopes[scope], target.ID)
	}
	t.forgetLocked(target)
	t.log.Info("deleted", zap.String("target", target.String()), zap.String("tenant", target.Tenant))
	return nil
}

// List implements transport.Lister: aggregates ordered by id.
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
	streams := t.scopes[scope]
	ids := make([]string, 0, len(streams))
	for id := range streams {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	page := transport.ListPage{Aggregates: []transport.AggregateInfo{}}
	if skip < len(ids) {
		end := min(skip+limit, len(ids))
		for _, id := range ids[skip:end] {
			s := streams[id]
			page.Aggregates = append(page.Aggregates, transport.AggregateInfo{
				AggregateID: id, AggregateType: scope.Type, AggregateVersion: s.version(), LastUpdatedAt: s.updated,
			})
		}
		page.HasMore = end < len(ids)
	}
	t.mu.RUnlock()
	return page, nil
}
