package wire

import (
	"encoding/json"

	"github.com/sourced-go/sourced/transport"
)

// AppendEvent appends one event as json.Marshal writes it, for a server
// that streams a body piece by piece. The common events take the fast path
// of EncodeLoadResponse; anything else is left to json.Marshal.
func AppendEvent(b []byte, e *transport.Event) ([]byte, error) {
	n := len(b)
	ok := true
	b = append(b, '{')
	if e.EventID != "" {
		b = append(b, `"eventId":`...)
		b, ok = appendString(b, e.EventID)
		b = append(b, ',')
	}
	if ok {
		b = append(b, `"eventType":`...)
		b, ok = appendString(b, e.EventType)
	}
	if ok && len(e.Data) > 0 {
		if ok = plainCompact(e.Data); ok {
			b = append(b, `,"data":`...)
			b = append(b, e.Data...)
		}
	}
	if ok && e.EncryptedData != "" {
		b = append(b, `,"encryptedData":`...)
		b, ok = appendString(b, e.EncryptedData)
	}
	if ok {
		return append(b, '}'), nil
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return b[:n], err
	}
	return append(b[:n], raw...), nil
}

// AppendString appends s as json.Marshal writes it.
func AppendString(b []byte, s string) []byte {
	if out, ok := appendString(b, s); ok {
		return out
	}
	raw, _ := json.Marshal(s) // a string always encodes
	return append(b, raw...)
}
