package repository

import (
	"container/list"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
// ignored too, and the state is rebuilt from the events. Before a snapshot
// is kept, the state is encoded and decoded again as a load would, and
// compared field by field with the state in hand (a time.Time by its
// encoding; values of other types with their own MarshalJSON must also
// encode the same, since a MarshalJSON may leave part out): a state that does
// not come back the same (an unexported or json:"-" field that is set,
// two embedded fields of one name, an interface holding a struct, ...) is
// not snapshotted at that version; that is logged with the first field
// that differs. A failed snapshot write never fails the command; it is
// logged.
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
//
// The events were applied to root as recorded Go values, while a load
// applies them decoded from what was stored: when one of them does not
// come back from storage the same (a field tagged json:"-", say), the root
// is neither cached nor snapshotted, so that neither can differ from a
// load.
func (r *Repository[S]) afterWrite(ctx context.Context, ref transport.Ref, root *aggregate.Root[S], marker string, stored []aggregate.Recorded, cache bool) {
	if root == nil || marker == "" {
		return
	}
	if (cache && r.cache != nil) || r.cfg.snapshots != nil {
		if why := r.replaysAsRecorded(stored); why != "" {
			r.cfg.log.Debug("root neither cached nor snapshotted: an event does not come back from storage as recorded",
				r.fields(ref, zap.Int64("version", root.Version()), zap.String("reason", why))...)
			return
		}
	}
	if cache {
		// Into the cache last: from then on another Update may hold it.
		defer r.cache.put(cached[S]{key: cacheKey{ref.Tenant, ref.ID}, root: root, marker: marker})
	}
	if r.cfg.snapshots == nil || len(stored) == 0 || root.Version()%int64(r.cfg.snapshotEvery) != 0 {
		return
	}
	state, reason, err := roundTrip(root.State())
	if err != nil {
		r.cfg.log.Warn("no snapshot taken", r.fields(ref, zap.Int64("version", root.Version()), zap.Error(err))...)
		return
	}
	if reason != "" {
		r.cfg.log.Warn("no snapshot taken: the state would not survive JSON", r.fields(ref, zap.Int64("version", root.Version()), zap.String("reason", reason))...)
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
	timeType        = reflect.TypeFor[time.Time]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// plainEvent says whether values of an event Go type come back from
// encoding/json exactly, provided their strings are valid UTF-8 (which
// encoding/json would replace), and where those strings are.
type plainEvent struct {
	plain   bool
	strings [][]int // index paths of the string fields
}

// plainAsRecorded is the fast, allocation-free answer for most events: the
// default codec, no upcaster for the event's own name, a plain type and
// valid UTF-8 mean the load decodes exactly the recorded value. False means
// "decode and compare", not "differs".
func (r *Repository[S]) plainAsRecorded(e aggregate.Recorded) bool {
	if _, ok := r.def.Codec().(aggregate.JSON); !ok {
		return false
	}
	typ, data, err := r.def.Upcast(e.EventType, e.Data)
	if err != nil || typ != e.EventType || len(data) != len(e.Data) || (len(data) > 0 && &data[0] != &e.Data[0]) {
		return false
	}
	t := reflect.TypeOf(e.Value)
	var pe *plainEvent
	if v, ok := r.plain.Load(t); ok {
		pe = v.(*plainEvent)
	} else {
		pe = &plainEvent{}
		pe.plain = plainStruct(t, nil, &pe.strings, 0)
		r.plain.Store(t, pe)
	}
	if !pe.plain {
		return false
	}
	v := reflect.ValueOf(e.Value)
	for _, path := range pe.strings {
		if !utf8.ValidString(v.FieldByIndex(path).String()) {
			return false
		}
	}
	return true
}

// customJSON reports whether t (or *t) encodes or decodes itself.
func customJSON(t reflect.Type) bool {
	for _, i := range []reflect.Type{jsonMarshaler, jsonUnmarshaler, textMarshaler, textUnmarshaler} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

// plainStruct reports whether t is a struct that encoding/json carries
// whole: exported, not embedded fields with distinct names (tags with no
// option but omitempty), of booleans, numbers, strings and such structs,
// none with its own (un)marshalling. Anything else is left to the round
// trip.
func plainStruct(t reflect.Type, path []int, strs *[][]int, depth int) bool {
	if t.Kind() != reflect.Struct || depth > 4 || customJSON(t) {
		return false
	}
	names := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Anonymous {
			return false
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if (name == "-" && opts == "") || (opts != "" && opts != "omitempty") {
			return false
		}
		if name == "" {
			name = f.Name
		}
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				return false // encoding/json's own rules for odd names are not ours to repeat
			}
		}
		key := strings.ToLower(name)
		if names[key] {
			return false
		}
		names[key] = true
		p := append(append([]int(nil), path...), i)
		ft := f.Type
		if customJSON(ft) {
			return false
		}
		switch ft.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64:
		case reflect.String:
			*strs = append(*strs, p)
		case reflect.Struct:
			if !plainStruct(ft, p, strs, depth+1) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// replaysAsRecorded says why one of events, decoded as a load decodes it,
// differs from the value recorded ("" when none does).
func (r *Repository[S]) replaysAsRecorded(events []aggregate.Recorded) string {
	for _, e := range events {
		if e.Value == nil || r.plainAsRecorded(e) {
			continue
		}
		v, err := r.def.Decode(e.EventType, e.Data)
		if err != nil {
			return err.Error()
		}
		a, b := reflect.ValueOf(e.Value), reflect.ValueOf(v)
		if a.Type() != b.Type() {
			return e.EventType + " comes back as " + b.Type().String()
		}
		if why := jsonDiff(a, b, e.EventType); why != "" {
			return why
		}
	}
	return ""
}

// roundTrip encodes state as a snapshot keeps it and decodes it as a load
// from that snapshot would; it returns the encoding, and why the decoded
// state differs from state ("" when it does not). The test is the round
// trip itself, not a list of types JSON is known to lose: a field left out
// or unexported, two embedded fields of one name (which encoding/json
// drops both), an interface that comes back as a map, a nil slice against
// an empty one.
func roundTrip[S any](state *S) ([]byte, string, error) {
	data, err := json.Marshal(state)
	if err != nil {
		return nil, "", err
	}
	var back S
	if err := json.Unmarshal(data, &back); err != nil {
		return nil, "", err
	}
	return data, jsonDiff(reflect.ValueOf(state).Elem(), reflect.ValueOf(&back).Elem(), reflect.TypeFor[S]().String()), nil
}

// jsonDiff compares a state with its JSON round trip and returns the path
// of the first difference, or "". A time.Time is compared by its encoding
// (it keeps its instant and zone through JSON, not its monotonic reading).
// Values of other types with their own MarshalJSON must encode the same
// and also come back the same field by field: a MarshalJSON can leave part
// of a value out and still encode the same after the round trip.
func jsonDiff(a, b reflect.Value, path string) string {
	t := a.Type()
	if a.CanInterface() && (t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler)) {
		ea, erra := json.Marshal(addressable(a).Interface())
		eb, errb := json.Marshal(addressable(b).Interface())
		if erra != nil || errb != nil || string(ea) != string(eb) {
			return path + " encodes differently after a JSON round trip"
		}
		if t == timeType {
			return ""
		}
	}
	differs := path + " is not the same after a JSON round trip"
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return differs
			}
			return ""
		}
		if t.Kind() == reflect.Interface && a.Elem().Type() != b.Elem().Type() {
			return path + " holds a " + a.Elem().Type().String() + " that comes back from JSON as a " + b.Elem().Type().String()
		}
		return jsonDiff(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range t.NumField() {
			if why := jsonDiff(a.Field(i), b.Field(i), path+"."+t.Field(i).Name); why != "" {
				return why
			}
		}
		return ""
	case reflect.Slice, reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return differs
		}
		if t.Kind() == reflect.Map {
			iter := a.MapRange()
			for iter.Next() {
				bv := b.MapIndex(iter.Key())
				if !bv.IsValid() {
					return differs
				}
				if why := jsonDiff(iter.Value(), bv, path+"[key]"); why != "" {
					return why
				}
			}
			return ""
		}
		fallthrough
	case reflect.Array:
		for i := range a.Len() {
			if why := jsonDiff(a.Index(i), b.Index(i), path+"["+strconv.Itoa(i)+"]"); why != "" {
				return why
			}
		}
		return ""
	case reflect.Bool:
		if a.Bool() != b.Bool() {
			return differs
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if a.Int() != b.Int() {
			return differs
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if a.Uint() != b.Uint() {
			return differs
		}
	case reflect.Float32, reflect.Float64:
		if a.Float() != b.Float() {
			return differs
		}
	case reflect.String:
		if a.String() != b.String() {
			return differs
		}
	default: // complex, chan, func, unsafe pointer: JSON cannot carry them
		return path + " (" + t.String() + ") does not survive JSON"
	}
	return ""
}

// addressable returns v, or an addressable copy of it, so that a
// pointer-receiver MarshalJSON is used.
func addressable(v reflect.Value) reflect.Value {
	if v.CanAddr() {
		return v.Addr()
	}
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	return p
}
