package aggregate

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sourced-go/sourced/internal/naming"
)

// Codec encodes the events a command records and decodes stored events
// into their Go types. Implementations must be safe for concurrent use
// and read and write JSON: what is stored must stay readable by every
// client of the store.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json.
type JSON struct{}

// Marshal calls json.Marshal.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal calls json.Unmarshal.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// WithCodec sets the codec of the definition's events (default JSON{}).
// Package aggregate/gojson offers a faster one.
func WithCodec[S any](c Codec) Option[S] {
	return func(d *Definition[S]) error {
		if c == nil {
			return errors.New("nil codec")
		}
		d.codec = c
		return nil
	}
}

// Upcaster turns a stored event of an old name or shape into a newer one:
// it returns the event type and data to use instead. It must be a pure
// function of its input; stored events are never rewritten.
type Upcaster func(data []byte) (eventType string, newData []byte, err error)

// maxUpcasts bounds a chain of upcasters, so a loop fails instead of
// spinning.
const maxUpcasts = 16

// Upcast registers how stored events named from become newer ones. The
// result may be upcast again (v1 to v2 to v3); it is applied on every load,
// in snapshots' tails, and by subscriptions that use Definition.Upcast.
// To change the shape of an event while keeping its name, register an
// upcaster for that name that recognizes the old shape and returns the
// new one, and the data unchanged otherwise.
func Upcast[S any](from string, up Upcaster) Option[S] {
	return func(d *Definition[S]) error {
		if up == nil {
			return fmt.Errorf("nil upcaster for %q", from)
		}
		if !naming.ValidEventType(from) {
			return fmt.Errorf("upcast from: event type %s must match %s", naming.Quote(from), naming.EventTypePattern)
		}
		if d.upcasters == nil {
			d.upcasters = map[string]Upcaster{}
		}
		if _, dup := d.upcasters[from]; dup {
			return fmt.Errorf("event type %q upcast twice", from)
		}
		d.upcasters[from] = up
		return nil
	}
}

// Rename is an Upcaster for an event type that was renamed and kept its
// shape.
func Rename(to string) Upcaster {
	return func(data []byte) (string, []byte, error) { return to, data, nil }
}

// Upcast returns the current form of a stored event: its registered
// upcasters applied, in a chain, until none applies (or one returns its
// input's name unchanged). Events without an upcaster come back as they are.
func (d *Definition[S]) Upcast(eventType string, data []byte) (string, []byte, error) {
	for i := 0; ; i++ {
		up, ok := d.upcasters[eventType]
		if !ok {
			return eventType, data, nil
		}
		if i == maxUpcasts {
			return "", nil, fmt.Errorf("event type %s: more than %d upcasts in a row (a loop?)", naming.Quote(eventType), maxUpcasts)
		}
		next, nextData, err := up(data)
		if err != nil {
			return "", nil, fmt.Errorf("upcast event type %s: %w: %w", naming.Quote(eventType), ErrDecode, err)
		}
		if next == eventType {
			return next, nextData, nil
		}
		eventType, data = next, nextData
	}
}
