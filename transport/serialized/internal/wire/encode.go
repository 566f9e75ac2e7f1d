package wire

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/sourced-go/sourced/transport"
)

// errDataNotJSON is the encoders' error for event data that is not one
// valid JSON value (every transport refuses such data before it gets here).
var errDataNotJSON = errors.New("event data is not valid JSON")

// EncodeStoreRequest encodes a store request. Event data goes out byte for
// byte as given (valid JSON is written as it is: not compacted, not
// re-escaped, white space around it kept), so a server that keeps bytes
// gives them back unchanged; strings are written as json.Marshal writes
// them. Data that is not valid JSON is an error.
func EncodeStoreRequest(r StoreRequest) ([]byte, error) {
	b := make([]byte, 0, 64+eventsSize(r.Events))
	b = append(b, `{"events":`...)
	b, err := appendEvents(b, r.Events)
	if err != nil {
		return nil, err
	}
	if r.ExpectedVersion != nil {
		b = append(b, `,"expectedVersion":`...)
		b = strconv.AppendInt(b, int64(*r.ExpectedVersion), 10)
	}
	return append(b, '}'), nil
}

// EncodeBulkRequest encodes a bulk store request; see EncodeStoreRequest.
func EncodeBulkRequest(r BulkRequest) ([]byte, error) {
	n := 32
	for i := range r.Batches {
		n += 96 + eventsSize(r.Batches[i].Events)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"batches":`...)
	if r.Batches == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Batches {
			bb := &r.Batches[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"aggregateId":`...)
			b = appendQuoted(b, bb.AggregateID)
			b = append(b, `,"events":`...)
			var err error
			if b, err = appendEvents(b, bb.Events); err != nil {
				return nil, err
			}
			if bb.ExpectedVersion != nil {
				b = append(b, `,"expectedVersion":`...)
				b = strconv.AppendInt(b, int64(*bb.ExpectedVersion), 10)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// EncodeLoadResponse encodes a load response; see EncodeStoreRequest.
func EncodeLoadResponse(r LoadResponse) ([]byte, error) {
	b := make([]byte, 0, 128+eventsSize(r.Events))
	b = append(b, `{"aggregateId":`...)
	b = appendQuoted(b, r.AggregateID)
	b = append(b, `,"aggregateType":`...)
	b = appendQuoted(b, r.AggregateType)
	b = append(b, `,"aggregateVersion":`...)
	b = strconv.AppendInt(b, r.AggregateVersion, 10)
	b = append(b, `,"events":`...)
	b, err := appendEvents(b, r.Events)
	if err != nil {
		return nil, err
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

// appendEvents writes events: data byte for byte, strings as json.Marshal
// writes them.
func appendEvents(b []byte, events []transport.Event) ([]byte, error) {
	if events == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i := range events {
		e := &events[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if e.EventID != "" {
			b = append(b, `"eventId":`...)
			b = appendQuoted(b, e.EventID)
			b = append(b, ',')
		}
		b = append(b, `"eventType":`...)
		b = appendQuoted(b, e.EventType)
		if len(e.Data) > 0 {
			if !plainCompact(e.Data) && !json.Valid(e.Data) {
				return b, errDataNotJSON
			}
			b = append(b, `,"data":`...)
			b = append(b, e.Data...)
		}
		if e.EncryptedData != "" {
			b = append(b, `,"encryptedData":`...)
			b = appendQuoted(b, e.EncryptedData)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendQuoted writes s as json.Marshal writes it.
func appendQuoted(b []byte, s string) []byte {
	if out, ok := appendString(b, s); ok {
		return out
	}
	raw, _ := json.Marshal(s) // a string always encodes
	return append(b, raw...)
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
