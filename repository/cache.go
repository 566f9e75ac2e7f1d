package repository

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
)

// WithCache keeps up to n recently updated roots in memory (n > 0). Update
// checks a cached root out, so no two calls share it, reads only the
// batches stored after its version, runs the command, stores, and puts it
// back. A conflict, a failed command or any error drops it, and a root
// whose history changed under it (another process deleted the aggregate and
// created it again) is noticed and dropped: a cache can only cost a reload,
// never give a wrong state. It works on every transport and with other
// processes writing the same aggregates.
//
// The cache holds n roots whatever their size; n times the size of your
// largest state is what it may cost.
func WithCache(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.cacheSize = n
		}
	}
}

// WithSnapshots keeps snapshots of roots in store: after a write that
// brings an aggregate's version to a multiple of every, its state (as
// JSON) is kept with schema. Loads start from the latest snapshot whose
// schema is schema and replay only the later batches. Bump schema when the
// state type changes: snapshots of another schema are ignored. A snapshot
// that does not decode, or whose batch is no longer the one stored, is
// ignored too, and the state is rebuilt from the events. A state that does
// not survive a JSON round trip unchanged (unexported fields, say) is never
// snapshotted; that is logged. A failed snapshot write never fails the
// command; it is logged.
func WithSnapshots(store snapshot.Store, schema, every int) Option {
	return func(c *config) {
		if store != nil && every > 0 {
			c.snapshots, c.snapshotSchema, c.snapshotEvery = store, schema, every
		}
	}
}

type cacheKey struct{ tenant, id string }

type cached[S any] struct {
	key  cacheKey
	root *aggregate.Root[S]
	// marker is the id of the last event of the batch at root's version.
	marker string
}

// rootCache is a bounded LRU of roots; take removes, so a root is only
// ever in one caller's hands.
type rootCache[S any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently put
	items map[cacheKey]*list.Element
}

func newRootCache[S any](n int) *rootCache[S] {
	if n <= 0 {
		return nil
	}
	return &rootCache[S]{max: n, order: list.New(), items: map[cacheKey]*list.Element{}}
}

func (c *rootCache[S]) take(k cacheKey) (cached[S], bool) {
	if c == nil {
		return cached[S]{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return cached[S]{}, false
	}
	c.order.Remove(el)
	delete(c.items, k)
	return el.Value.(cached[S]), true
}

func (c *rootCache[S]) put(e cached[S]) {
	if c == nil || e.root == nil || e.marker == "" || len(e.root.Uncommitted()) > 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.order.Remove(el)
	}
	c.items[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(cached[S]).key)
	}
}

func (c *rootCache[S]) drop(k cacheKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.order.Remove(el)
		delete(c.items, k)
	}
}

func (c *rootCache[S]) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.items)
}

// errStale: a cached root or a snapshot no longer matches the stored
// history.
var errStale = errors.New("stale")

// hydrate returns ref's root with the marker of its last batch: from a
// snapshot when one is usable, otherwise from the start of the history.
func (r *Repository[S]) hydrate(ctx context.Context, ref transport.Ref) (*aggregate.Root[S], string, error) {
	if r.cfg.snapshots != nil {
		root, marker, err := r.fromSnapshot(ctx, ref)
		if err == nil {
			return root, marker, nil
		}
		if !errors.Is(err, errStale) {
			return nil, "", err
		}
	}
	return r.loadFrom(ctx, ref, r.def.New(ref.ID), "")
}

// fromSnapshot restores the latest usable snapshot and replays the tail;
// errStale when there is none to use.
func (r *Repository[S]) fromSnapshot(ctx context.Context, ref transport.Ref) (*aggregate.Root[S], string, error) {
	s, ok, err := r.cfg.snapshots.Get(ctx, ref)
	if err != nil {
		r.cfg.log.Warn("snapshot read failed; loading from the events", r.fields(ref, zap.Error(err))...)
		return nil, "", errStale
	}
	if !ok || s.Schema != r.cfg.snapshotSchema || s.Marker == "" {
		return nil, "", errStale
	}
	var state S
	if err := json.Unmarshal(s.State, &state); err != nil {
		r.cfg.log.Warn("snapshot does not decode; loading from the events", r.fields(ref, zap.Int64("version", s.Version), zap.Error(err))...)
		return nil, "", errStale
	}
	return r.loadFrom(ctx, ref, r.def.Restore(ref.ID, s.Version, state), s.Marker)
}

// loadFrom replays onto root the batches after its version. With a marker
// (the id of the last event of root's batch), it reads from the batch
// before and checks that batch is still the one stored, returning errStale
// when it is not. It returns the root and the new marker.
func (r *Repository[S]) loadFrom(ctx context.Context, ref transport.Ref, root *aggregate.Root[S], marker string) (*aggregate.Root[S], string, error) {
	since := root.Version()
	checking := marker != ""
	if checking {
		since--
	}
	for {
		page, err := r.t.Load(ctx, ref, since, r.cfg.pageSize)
		if err != nil {
			return nil, "", transport.Wrap(err, "load", ref, transport.ErrUnavailable)
		}
		events := page.Events
		if checking {
			i := 0
			for i < len(events) && events[i].EventID != marker {
				i++
			}
			if i == len(events) {
				return nil, "", errStale
			}
			events, checking = events[i+1:], false
		}
		for i := range events {
			e := &events[i]
			if err := root.Replay(e.EventType, e.Data); err != nil {
				return nil, "", &transport.Error{Op: "load", Tenant: ref.Tenant, AggregateType: ref.Type, AggregateID: ref.ID, Err: err}
			}
		}
		if len(events) > 0 {
			marker = events[len(events)-1].EventID
		}
		if !page.HasMore || page.Version <= since {
			root.Commit(page.Version)
			return root, marker, nil
		}
		since = page.Version
	}
}

// checkout returns ref's root for an Update: the cached one brought up to
// date when there is one, otherwise a hydrated one.
func (r *Repository[S]) checkout(ctx context.Context, ref transport.Ref) (*aggregate.Root[S], string, error) {
	if c, ok := r.cache.take(cacheKey{ref.Tenant, ref.ID}); ok {
		root, marker, err := r.loadFrom(ctx, ref, c.root, c.marker)
		if err == nil {
			return root, marker, nil
		}
		if !errors.Is(err, errStale) {
			return nil, "", err
		}
		r.cfg.log.Info("cached root no longer matches the stored history; reloading", r.fields(ref)...)
	}
	return r.hydrate(ctx, ref)
}

// afterWrite keeps the root in the cache and takes a snapshot when it is
// due. root is at the version just stored; marker is the id of the last
// event of its last batch.
func (r *Repository[S]) afterWrite(ctx context.Context, ref transport.Ref, root *aggregate.Root[S], marker string, stored int, cache bool) {
	if root == nil || marker == "" {
		return
	}
	if cache {
		// Into the cache last: from then on another Update may hold it.
		defer r.cache.put(cached[S]{key: cacheKey{ref.Tenant, ref.ID}, root: root, marker: marker})
	}
	if r.cfg.snapshots == nil || stored == 0 || root.Version()%int64(r.cfg.snapshotEvery) != 0 {
		return
	}
	if reason := jsonUnsafe(reflect.TypeFor[S](), map[reflect.Type]bool{}); reason != "" {
		r.cfg.log.Warn("no snapshot taken: the state would not survive JSON", r.fields(ref, zap.String("reason", reason))...)
		return
	}
	state, err := json.Marshal(root.State())
	if err != nil {
		r.cfg.log.Warn("no snapshot taken", r.fields(ref, zap.Int64("version", root.Version()), zap.Error(err))...)
		return
	}
	s := snapshot.Snapshot{Version: root.Version(), Schema: r.cfg.snapshotSchema, Marker: marker, State: state}
	if err := r.cfg.snapshots.Put(ctx, ref, s); err != nil {
		r.cfg.log.Warn("snapshot write failed", r.fields(ref, zap.Int64("version", root.Version()), zap.Error(err))...)
	}
}

func (r *Repository[S]) fields(ref transport.Ref, extra ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.String("aggregate_type", ref.Type), zap.String("aggregate_id", ref.ID), zap.String("tenant", ref.Tenant)}, extra...)
}

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
)

// jsonUnsafe says why a state type would not come back whole from JSON
// (an unexported field, an interface, a func or chan), or "" when it would.
func jsonUnsafe(t reflect.Type, seen map[reflect.Type]bool) string {
	if seen[t] {
		return ""
	}
	seen[t] = true
	if t.Implements(jsonMarshaler) && reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return ""
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return jsonUnsafe(t.Elem(), seen)
	case reflect.Map:
		return jsonUnsafe(t.Elem(), seen)
	case reflect.Interface, reflect.Func, reflect.Chan, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return t.String() + " does not decode from JSON"
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Tag.Get("json") == "-" {
				return t.String() + "." + f.Name + " is left out of JSON"
			}
			if !f.IsExported() && !f.Anonymous {
				return t.String() + "." + f.Name + " is unexported"
			}
			if why := jsonUnsafe(f.Type, seen); why != "" {
				return why
			}
		}
	}
	return ""
}
