// Package gojson is a faster event codec for aggregate definitions, on
// github.com/goccy/go-json: a drop-in for encoding/json that decodes our
// event shapes about eight times faster with one allocation instead of
// seven (see docs/performance.md). It is a package of its own so that only
// programs that ask for it depend on it.
//
//	var orders = aggregate.MustNew[Order]("order",
//		aggregate.WithCodec[Order](gojson.Codec{}),
//		aggregate.On(...),
//	)
//
// Differential tests and a fuzzer hold it to encoding/json: the same
// values for valid input, an error for invalid input.
//
// Experimental: this package is outside the compatibility promise (see
// README, "Compatibility"); its API may change in any minor version.
package gojson

import (
	gojson "github.com/goccy/go-json"

	"github.com/sourced-go/sourced/aggregate"
)

// Codec encodes and decodes events with github.com/goccy/go-json.
type Codec struct{}

var _ aggregate.Codec = Codec{}

// Marshal encodes v as JSON, as encoding/json would.
func (Codec) Marshal(v any) ([]byte, error) { return gojson.Marshal(v) }

// Unmarshal decodes JSON data into v, as encoding/json would.
func (Codec) Unmarshal(data []byte, v any) error { return gojson.Unmarshal(data, v) }
