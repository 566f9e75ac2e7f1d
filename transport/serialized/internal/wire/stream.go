package wire

import (
	"encoding/json"
	"errors"

	"github.com/sourced-go/sourced/transport"
)

// errInvalidData is AppendEvent's error for data that is not JSON.
var errInvalidData = errors.New("event data is not valid JSON")

// AppendEvent appends one event as JSON, for a server that streams a body
// piece by piece. Its data goes out byte for byte as stored (valid JSON, as
// every transport requires, is written as it is: not compacted, not
// re-escaped); its strings are written as json.Marshal writes them.
func AppendEvent(b []byte, e *transport.Event) ([]byte, error) {
	if len(e.Data) > 0 && !plainCompact(e.Data) && !json.Valid(e.Data) {
		return b, errInvalidData
	}
	b = append(b, '{')
	if e.EventID != "" {
		b = append(b, `"eventId":`...)
		b = AppendString(b, e.EventID)
		b = append(b, ',')
	}
	b = append(b, `"eventType":`...)
	b = AppendString(b, e.EventType)
	if len(e.Data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, e.Data...)
	}
	if e.EncryptedData != "" {
		b = append(b, `,"encryptedData":`...)
		b = AppendString(b, e.EncryptedData)
	}
	return append(b, '}'), nil
}

// AppendString appends s as json.Marshal writes it.
func AppendString(b []byte, s string) []byte {
	if out, ok := appendString(b, s); ok {
		return out
	}
	raw, _ := json.Marshal(s) // a string always encodes
	return append(b, raw...)
}
