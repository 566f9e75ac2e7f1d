package wire

import (
	"encoding/json"
	"strconv"

	"github.com/sourced-go/sourced/transport"
)

// EncodeStoreRequest returns json.Marshal(r), byte for byte. Bodies of
// printable ASCII and compact data, which is what the repository records,
// are written without reflection; anything else is left to json.Marshal.
func EncodeStoreRequest(r StoreRequest) ([]byte, error) {
	b := make([]byte, 0, 64+eventsSize(r.Events))
	b = append(b, `{"events":`...)
	b, ok := appendEvents(b, r.Events)
	if !ok {
		return json.Marshal(r)
	}
	if r.ExpectedVersion != nil {
		b = append(b, `,"expectedVersion":`...)
		b = strconv.AppendInt(b, int64(*r.ExpectedVersion), 10)
	}
	return append(b, '}'), nil
}

// EncodeLoadResponse returns json.Marshal(r), byte for byte; see
// EncodeStoreRequest.
func EncodeLoadResponse(r LoadResponse) ([]byte, error) {
	b := make([]byte, 0, 128+eventsSize(r.Events))
	b = append(b, `{"aggregateId":`...)
	b, ok := appendString(b, r.AggregateID)
	if ok {
		b = append(b, `,"aggregateType":`...)
		b, ok = appendString(b, r.AggregateType)
	}
	if ok {
		b = append(b, `,"aggregateVersion":`...)
		b = strconv.AppendInt(b, r.AggregateVersion, 10)
		b = append(b, `,"events":`...)
		b, ok = appendEvents(b, r.Events)
	}
	if !ok {
		return json.Marshal(r)
	}
	b = append(b, `,"hasMore":`...)
	b = strconv.AppendBool(b, r.HasMore)
	return append(b, '}'), nil
}

func eventsSize(events []transport.Event) int {
	n := 2
	for i := range events {
		e := &events[i]
		n += 64 + len(e.EventID) + len(e.EventType) + len(e.Data) + len(e.EncryptedData)
	}
	return n
}

// appendEvents writes events as json.Marshal does, or reports false.
func appendEvents(b []byte, events []transport.Event) ([]byte, bool) {
	if events == nil {
		return append(b, "null"...), true
	}
	b = append(b, '[')
	for i := range events {
		e := &events[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		ok := true
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
		if !ok {
			return b, false
		}
		b = append(b, '}')
	}
	return append(b, ']'), true
}

// appendString writes s quoted when json.Marshal would write it unchanged
// between quotes: printable ASCII without '"', '\\' or the characters it
// escapes for HTML.
func appendString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if !plainByte(s[i]) {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

func plainByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// plainCompact reports whether json.Marshal would copy raw as it is: valid
// JSON without white space outside strings, and inside strings only plain
// bytes and escapes.
func plainCompact(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString && c == '\\':
			i++ // the escaped byte; json.Valid below checks the escape
			if i < len(raw) && !plainByte(raw[i]) && raw[i] != '"' && raw[i] != '\\' {
				return false
			}
		case c == '"':
			inString = !inString
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if !inString {
				return false
			}
		case !plainByte(c):
			return false
		}
	}
	d := decoder{data: raw}
	return d.skipValue(0) && d.end()
}
