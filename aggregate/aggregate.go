package aggregate

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/internal/naming"
)

// Errors for errors.Is.
var (
	// ErrDefinition: the aggregate definition is malformed.
	ErrDefinition = errors.New("bad aggregate definition")
	// ErrUnregisteredEvent: a command recorded an event type the
	// aggregate has no handler for.
	ErrUnregisteredEvent = errors.New("unregistered event type")
	// ErrUnknownEvent: a stored event's type has no handler.
	ErrUnknownEvent = errors.New("unknown stored event type")
	// ErrDecode: a stored event's data does not decode into its Go type.
	ErrDecode = errors.New("cannot decode stored event")
)

// Recorded is an event recorded by a command and not yet stored.
type Recorded struct {
	// EventID is a UUID made when the event was recorded.
	EventID string
	// EventType is the registered name of the event.
	EventType string
	// Data is the event encoded as JSON, once.
	Data []byte
	// EncryptedData is passed to the store untouched.
	EncryptedData string
	// Value is the Go value that was recorded.
	Value any
}

// handler applies one event type to a state.
type handler[S any] struct {
	name   string
	goType reflect.Type
	// replay decodes data into the event's Go type with the codec and
	// applies it.
	replay func(s *S, data []byte, c Codec) error
	// apply applies an already typed event value.
	apply func(s *S, v any)
}

// Option configures a Definition. Build options with On, OnNamed,
// IgnoreUnknown, DefaultHandler and Initial.
type Option[S any] func(*Definition[S]) error

// Definition describes one aggregate type: its name, initial state and event
// handlers. It is immutable once built and safe for concurrent use.
type Definition[S any] struct {
	typ           string
	byName        map[string]*handler[S]
	byType        map[reflect.Type]*handler[S]
	names         []string
	initial       func() S
	ignoreUnknown bool
	fallback      func(s *S, eventType string, data []byte) error
	codec         Codec
	upcasters     map[string]Upcaster
}

// New defines an aggregate type. It fails with ErrDefinition for a bad
// aggregate type name (it must match ^[a-z0-9]+[a-z0-9\-_]+[a-z0-9]+$), a
// bad or duplicate event name, a nil handler, or an event type registered
// twice.
func New[S any](aggregateType string, opts ...Option[S]) (*Definition[S], error) {
	if !naming.ValidAggregateType(aggregateType) {
		return nil, fmt.Errorf("%w: aggregate type %s must match %s (at most %d characters)", ErrDefinition, naming.Quote(aggregateType), naming.AggregateTypePattern, naming.MaxLength)
	}
	d := &Definition[S]{
		typ:    aggregateType,
		byName: make(map[string]*handler[S]),
		byType: make(map[reflect.Type]*handler[S]),
		codec:  JSON{},
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: %s: nil option", ErrDefinition, aggregateType)
		}
		if err := o(d); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrDefinition, aggregateType, err)
		}
	}
	return d, nil
}

// MustNew is New for package-level definitions: it panics on error.
func MustNew[S any](aggregateType string, opts ...Option[S]) *Definition[S] {
	d, err := New(aggregateType, opts...)
	if err != nil {
		panic(err)
	}
	return d
}

// On registers h as the handler of events of type E, named after E's Go
// type (OrderPlaced for a struct type OrderPlaced).
func On[S, E any](h func(*S, E)) Option[S] {
	return OnNamed(eventName[E](), h)
}

// OnNamed registers h as the handler of events of type E stored under name.
func OnNamed[S, E any](name string, h func(*S, E)) Option[S] {
	return func(d *Definition[S]) error {
		if h == nil {
			return fmt.Errorf("nil handler for event %q", name)
		}
		if !naming.ValidEventType(name) {
			return fmt.Errorf("event type %s must match %s (at most %d characters)", naming.Quote(name), naming.EventTypePattern, naming.MaxLength)
		}
		if _, dup := d.byName[name]; dup {
			return fmt.Errorf("event type %q registered twice", name)
		}
		goType := reflect.TypeFor[E]()
		if prev, dup := d.byType[goType]; dup {
			return fmt.Errorf("the Go type %s is registered twice (as %q and %q)", goType, prev.name, name)
		}
		hd := &handler[S]{
			name:   name,
			goType: goType,
			replay: func(s *S, data []byte, c Codec) error {
				var e E
				if len(data) > 0 {
					if err := c.Unmarshal(data, &e); err != nil {
						return err
					}
				}
				h(s, e)
				return nil
			},
			apply: func(s *S, v any) { h(s, v.(E)) },
		}
		d.byName[name] = hd
		d.byType[goType] = hd
		d.names = append(d.names, name)
		return nil
	}
}

// IgnoreUnknown makes hydration skip stored events whose type has no
// handler, instead of failing.
func IgnoreUnknown[S any]() Option[S] {
	return func(d *Definition[S]) error { d.ignoreUnknown = true; return nil }
}

// DefaultHandler handles stored events whose type has no handler of its
// own; its error fails the load.
func DefaultHandler[S any](h func(s *S, eventType string, data []byte) error) Option[S] {
	return func(d *Definition[S]) error {
		if h == nil {
			return errors.New("nil default handler")
		}
		d.fallback = h
		return nil
	}
}

// Initial sets the state a new aggregate starts from (default: S's zero
// value).
func Initial[S any](initial func() S) Option[S] {
	return func(d *Definition[S]) error {
		if initial == nil {
			return errors.New("nil initial state function")
		}
		d.initial = initial
		return nil
	}
}

// Type returns the aggregate type name.
func (d *Definition[S]) Type() string { return d.typ }

// EventTypes returns the registered event type names in registration order.
func (d *Definition[S]) EventTypes() []string { return append([]string(nil), d.names...) }

// EventType returns the registered name of an event value and whether it is
// registered.
func (d *Definition[S]) EventType(event any) (string, bool) {
	h, ok := d.byType[reflect.TypeOf(event)]
	if !ok {
		return "", false
	}
	return h.name, true
}

// New returns a Root for id at version 0 with the initial state.
func (d *Definition[S]) New(id string) *Root[S] {
	r := &Root[S]{def: d, id: id}
	if d.initial != nil {
		r.state = d.initial()
	}
	return r
}

// Root is one aggregate instance: its identity, the version it was loaded
// at, its state and the events recorded since. A Root is not safe for
// concurrent use.
type Root[S any] struct {
	def     *Definition[S]
	id      string
	version int64
	state   S
	pending []Recorded
}

// Type returns the aggregate type name.
func (r *Root[S]) Type() string { return r.def.typ }

// ID returns the aggregate id.
func (r *Root[S]) ID() string { return r.id }

// Version returns the version the root was loaded at or last stored at;
// recorded events do not change it until they are stored.
func (r *Root[S]) Version() int64 { return r.version }

// State returns the current state, recorded events included. Read it;
// change it only by recording events.
func (r *Root[S]) State() *S { return &r.state }

// Uncommitted returns the events recorded and not yet stored.
func (r *Root[S]) Uncommitted() []Recorded { return r.pending }

// Record applies event to the state and keeps it for storing. It fails with
// ErrUnregisteredEvent if the aggregate has no handler for event's type.
func (r *Root[S]) Record(event any) error { return r.RecordEncrypted(event, "") }

// RecordEncrypted is Record with an encryptedData value that is stored
// untouched beside the event.
func (r *Root[S]) RecordEncrypted(event any, encryptedData string) error {
	h, ok := r.def.byType[reflect.TypeOf(event)]
	if !ok {
		return fmt.Errorf("%s %s: record %T: %w (register it with aggregate.On)", r.def.typ, r.id, event, ErrUnregisteredEvent)
	}
	data, err := r.def.codec.Marshal(event)
	if err != nil {
		return fmt.Errorf("%s %s: encode %s: %w", r.def.typ, r.id, h.name, err)
	}
	h.apply(&r.state, event)
	r.pending = append(r.pending, Recorded{
		EventID: uuid.NewString(), EventType: h.name, Data: data, EncryptedData: encryptedData, Value: event,
	})
	return nil
}

// Replay applies one stored event during hydration: it decodes data once
// into the registered Go type and runs its handler. An unknown type fails
// with ErrUnknownEvent unless the definition ignores unknown types or has a
// default handler; bad data fails with ErrDecode.
func (r *Root[S]) Replay(eventType string, data []byte) error {
	if r.def.upcasters != nil {
		var err error
		if eventType, data, err = r.def.Upcast(eventType, data); err != nil {
			return fmt.Errorf("%s %s: %w", r.def.typ, naming.Quote(r.id), err)
		}
	}
	h, ok := r.def.byName[eventType]
	if !ok {
		switch {
		case r.def.fallback != nil:
			if err := r.def.fallback(&r.state, eventType, data); err != nil {
				return fmt.Errorf("%s %s: default handler for event type %s: %w", r.def.typ, naming.Quote(r.id), naming.Quote(eventType), err)
			}
			return nil
		case r.def.ignoreUnknown:
			return nil
		}
		return fmt.Errorf("%s %s: event type %s: %w", r.def.typ, naming.Quote(r.id), naming.Quote(eventType), ErrUnknownEvent)
	}
	if err := h.replay(&r.state, data, r.def.codec); err != nil {
		return fmt.Errorf("%s %s: event type %s: %w: %w", r.def.typ, naming.Quote(r.id), naming.Quote(eventType), ErrDecode, err)
	}
	return nil
}

// Commit marks the recorded events as stored at version: they leave the
// uncommitted list and the root's version becomes version. The repository
// calls it after a successful store, and after hydration with the version
// reached.
func (r *Root[S]) Commit(version int64) {
	r.version = version
	r.pending = nil
}

func eventName[E any]() string {
	t := reflect.TypeFor[E]()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// Restore returns a Root for id at version with state, as a snapshot kept
// them: the repository uses it to start from a snapshot and replay only
// the events after it.
func (d *Definition[S]) Restore(id string, version int64, state S) *Root[S] {
	return &Root[S]{def: d, id: id, version: version, state: state}
}

// Decode returns a stored event as the Go value a load applies to the
// state: upcast, then decoded with the codec into its registered type. It
// fails with ErrUnknownEvent for a type with no handler of its own, and
// ErrDecode for bad data. The repository uses it to check that a recorded
// event comes back from storage as it was recorded, before it keeps a
// state built from recorded values.
func (d *Definition[S]) Decode(eventType string, data []byte) (any, error) {
	if d.upcasters != nil {
		var err error
		if eventType, data, err = d.Upcast(eventType, data); err != nil {
			return nil, err
		}
	}
	h, ok := d.byName[eventType]
	if !ok {
		return nil, fmt.Errorf("%s: event type %s: %w", d.typ, naming.Quote(eventType), ErrUnknownEvent)
	}
	v := reflect.New(h.goType)
	if len(data) > 0 {
		if err := d.codec.Unmarshal(data, v.Interface()); err != nil {
			return nil, fmt.Errorf("%s: event type %s: %w: %w", d.typ, naming.Quote(eventType), ErrDecode, err)
		}
	}
	return v.Elem().Interface(), nil
}

// Codec returns the codec of the definition's events.
func (d *Definition[S]) Codec() Codec { return d.codec }
