package wire

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/sourced-go/sourced/transport"
)

// DecodeLoadPage decodes a load response into p, exactly as json.Unmarshal
// would. The bodies this API sends take a fast path that reads them without
// reflection; anything out of the ordinary (escaped strings, non-ASCII,
// nulls, unusual numbers, keys that differ only in case) is handed to
// json.Unmarshal, so the result, and the error, never differ.
func DecodeLoadPage(data []byte, p *LoadPage) error {
	if json.Valid(data) {
		var fast LoadPage
		if d := (decoder{data: data}); d.loadPage(&fast) {
			*p = fast
			return nil
		}
	}
	return json.Unmarshal(data, p)
}

// DecodeStoreRequest decodes a store request body into r, exactly as
// json.Unmarshal would; see DecodeLoadPage.
func DecodeStoreRequest(data []byte, r *StoreRequest) error {
	if json.Valid(data) {
		var fast StoreRequest
		if d := (decoder{data: data}); d.storeRequest(&fast) {
			*r = fast
			return nil
		}
	}
	return json.Unmarshal(data, r)
}

// decoder reads JSON that json.Valid has accepted. Each method reports
// false for anything it does not handle exactly as encoding/json does,
// and the caller then falls back to encoding/json.
type decoder struct {
	data []byte
	i    int
}

func (d *decoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips white space and reports whether the next byte is c,
// consuming it if so.
func (d *decoder) next(c byte) bool {
	d.space()
	if d.i < len(d.data) && d.data[d.i] == c {
		d.i++
		return true
	}
	return false
}

// plainString reads a string of printable ASCII without escapes: those
// decode to themselves, and only those.
func (d *decoder) plainString() ([]byte, bool) {
	if !d.next('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			s := d.data[start:d.i]
			d.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
		d.i++
	}
	return nil, false
}

// object reads the members of an object, calling member for each key with
// the decoder at the member's value; member consumes the value.
func (d *decoder) object(member func(key []byte) bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	for {
		key, ok := d.plainString()
		if !ok || !d.next(':') {
			return false
		}
		d.space()
		if !member(key) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// unknown skips the value of a key no field is named after. encoding/json
// also matches keys without regard to case, so a key that matches one of
// names that way is left to it. Keys here are ASCII (plainString), so ASCII
// folding is all there is to compare.
func (d *decoder) unknown(key []byte, names ...string) bool {
	for _, n := range names {
		if equalFoldASCII(key, n) {
			return false
		}
	}
	_, ok := d.value()
	return ok
}

func equalFoldASCII(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range key {
		a, b := key[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// value returns the raw bytes of the next value, which json.Valid has
// checked already.
func (d *decoder) value() ([]byte, bool) {
	d.space()
	start := d.i
	if d.i >= len(d.data) {
		return nil, false
	}
	switch d.data[d.i] {
	case '"':
		d.skipString()
	case '{', '[':
		depth := 0
	nested:
		for d.i < len(d.data) {
			switch d.data[d.i] {
			case '"':
				d.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			d.i++
			if depth == 0 {
				break nested
			}
		}
	default: // a number, true, false or null
	literal:
		for d.i < len(d.data) {
			switch d.data[d.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				break literal
			}
			d.i++
		}
	}
	return d.data[start:d.i], d.i > start && d.i <= len(d.data)
}

// skipString moves past a string, escapes and all.
func (d *decoder) skipString() {
	d.i++ // the opening quote
	for d.i < len(d.data) && d.data[d.i] != '"' {
		if d.data[d.i] == '\\' {
			d.i++
		}
		d.i++
	}
	d.i++ // the closing quote
}

// integer reads a JSON number that is an int64.
func (d *decoder) integer() (int64, bool) {
	raw, ok := d.value()
	if !ok || raw[0] == '"' || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}

func (d *decoder) boolean() (bool, bool) {
	raw, ok := d.value()
	switch {
	case ok && string(raw) == "true":
		return true, true
	case ok && string(raw) == "false":
		return false, true
	}
	return false, false
}

func (d *decoder) events() ([]transport.Event, bool) {
	if !d.next('[') {
		return nil, false
	}
	events := []transport.Event{}
	if d.next(']') {
		return events, true
	}
	for {
		var e transport.Event
		if !d.event(&e) {
			return nil, false
		}
		events = append(events, e)
		if d.next(']') {
			return events, true
		}
		if !d.next(',') {
			return nil, false
		}
	}
}

func (d *decoder) event(e *transport.Event) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "eventId":
			s, ok := d.plainString()
			e.EventID = string(s)
			return ok
		case "eventType":
			s, ok := d.plainString()
			e.EventType = string(s)
			return ok
		case "encryptedData":
			s, ok := d.plainString()
			e.EncryptedData = string(s)
			return ok
		case "data":
			raw, ok := d.value()
			if !ok || bytes.Equal(raw, []byte("null")) {
				return false
			}
			e.Data = append(json.RawMessage(nil), raw...)
			return true
		}
		return d.unknown(key, "eventId", "eventType", "encryptedData", "data")
	})
}

func (d *decoder) loadPage(p *LoadPage) bool {
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "aggregateVersion":
			p.AggregateVersion, ok = d.integer()
		case "events":
			p.Events, ok = d.events()
		case "hasMore":
			p.HasMore, ok = d.boolean()
		default:
			ok = d.unknown(key, "aggregateVersion", "events", "hasMore")
		}
		return ok
	}) && d.end()
}

func (d *decoder) storeRequest(r *StoreRequest) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "events":
			var ok bool
			r.Events, ok = d.events()
			return ok
		case "expectedVersion":
			n, ok := d.integer()
			v := Version(n)
			r.ExpectedVersion = &v
			return ok
		}
		return d.unknown(key, "events", "expectedVersion")
	}) && d.end()
}

// end reports whether only white space is left.
func (d *decoder) end() bool {
	d.space()
	return d.i == len(d.data)
}
