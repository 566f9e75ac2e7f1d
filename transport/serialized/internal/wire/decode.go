package wire

import (
	"encoding/json"
	"strconv"

	"github.com/sourced-go/sourced/transport"
)

// DecodeLoadPage decodes a load response into p as json.Unmarshal would,
// but for one thing: an event's data is every byte between the colon after
// "data" and the comma or brace after its value, white space included, so
// data that went out padded (see EncodeStoreRequest) comes back byte for
// byte. The bodies this API sends take a fast path that checks and reads
// them in one pass, without reflection; anything out of the ordinary
// (invalid JSON, nulls, unusual numbers, keys that differ only in case,
// deep nesting) is handed to json.Unmarshal, so the error never differs,
// and only the white space around data may.
func DecodeLoadPage(data []byte, p *LoadPage) error {
	var fast LoadPage
	if d := (decoder{data: data}); d.loadPage(&fast) {
		*p = fast
		return nil
	}
	return json.Unmarshal(data, p)
}

// DecodeStoreRequest decodes a store request body into r; see
// DecodeLoadPage.
func DecodeStoreRequest(data []byte, r *StoreRequest) error {
	var fast StoreRequest
	if d := (decoder{data: data}); d.storeRequest(&fast) {
		*r = fast
		return nil
	}
	return json.Unmarshal(data, r)
}

// DecodeFeedResponse decodes a feed page into r; see DecodeLoadPage.
func DecodeFeedResponse(data []byte, r *FeedResponse) error {
	var fast FeedResponse
	if d := (decoder{data: data}); d.feedResponse(&fast) {
		*r = fast
		return nil
	}
	return json.Unmarshal(data, r)
}

// maxDepth bounds the nesting the fast path follows; deeper values are left
// to encoding/json.
const maxDepth = 64

// decoder reads JSON and checks it as it goes: everything it accepts is
// valid JSON. Each method reports false for anything invalid or anything it
// does not handle exactly as encoding/json does, and the caller then falls
// back to encoding/json.
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
	return d.list('{', '}', func() bool {
		key, ok := d.plainString()
		if !ok || !d.next(':') {
			return false
		}
		// member starts right after the colon: each reader skips the white
		// space before its value, except data's, which keeps it.
		return member(key)
	})
}

// list reads open, then items separated by commas, then end; item reads
// one item, starting at its first byte.
func (d *decoder) list(open, end byte, item func() bool) bool {
	if !d.next(open) {
		return false
	}
	if d.next(end) {
		return true
	}
	for {
		d.space()
		if !item() {
			return false
		}
		if d.next(end) {
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

// value returns the raw bytes of the next value, checked to be valid JSON.
func (d *decoder) value() ([]byte, bool) {
	d.space()
	start := d.i
	if !d.skipValue(0) {
		return nil, false
	}
	return d.data[start:d.i], true
}

// skipValue moves past one valid value at nesting depth depth.
func (d *decoder) skipValue(depth int) bool {
	if d.i >= len(d.data) {
		return false
	}
	switch d.data[d.i] {
	case '"':
		return d.skipString()
	case '[':
		return depth < maxDepth && d.list('[', ']', func() bool { return d.skipValue(depth + 1) })
	case '{':
		return depth < maxDepth && d.list('{', '}', func() bool {
			if !d.skipString() || !d.next(':') {
				return false
			}
			d.space()
			return d.skipValue(depth + 1)
		})
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return d.skipNumber()
}

func (d *decoder) literal(word string) bool {
	if len(d.data)-d.i < len(word) || string(d.data[d.i:d.i+len(word)]) != word {
		return false
	}
	d.i += len(word)
	return true
}

// skipString moves past a valid string: no control characters, and only
// the escapes JSON defines. Other bytes pass as they are, as they do in
// encoding/json.
func (d *decoder) skipString() bool {
	if d.i >= len(d.data) || d.data[d.i] != '"' {
		return false
	}
	d.i++
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			d.i++
			if d.i >= len(d.data) {
				return false
			}
			switch d.data[d.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(d.data)-d.i < 5 {
					return false
				}
				for _, h := range d.data[d.i+1 : d.i+5] {
					if !isHex(h) {
						return false
					}
				}
				d.i += 4
			default:
				return false
			}
		}
		d.i++
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipNumber moves past a valid number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) skipNumber() bool {
	if d.i < len(d.data) && d.data[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.data) && d.data[d.i] == '0':
		d.i++
	case d.digits() == 0:
		return false
	}
	if d.i < len(d.data) && d.data[d.i] == '.' {
		d.i++
		if d.digits() == 0 {
			return false
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		if d.digits() == 0 {
			return false
		}
	}
	return true
}

func (d *decoder) digits() int {
	start := d.i
	for d.i < len(d.data) && '0' <= d.data[d.i] && d.data[d.i] <= '9' {
		d.i++
	}
	return d.i - start
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
	events := []transport.Event{}
	ok := d.list('[', ']', func() bool {
		var e transport.Event
		if !d.event(&e) {
			return false
		}
		events = append(events, e)
		return true
	})
	return events, ok
}

func (d *decoder) event(e *transport.Event) bool {
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "eventId":
			e.EventID, ok = d.text()
		case "eventType":
			e.EventType, ok = d.text()
		case "encryptedData":
			e.EncryptedData, ok = d.text()
		case "data":
			// null too: json.RawMessage keeps it as the four bytes.
			start := d.i
			_, ok = d.value()
			d.space()
			e.Data = append(json.RawMessage(nil), d.data[start:d.i]...)
		default:
			ok = d.unknown(key, "eventId", "eventType", "encryptedData", "data")
		}
		return ok
	})
}

// text reads a string into a Go string: a plain one directly, one with
// escapes or bytes outside printable ASCII through json.Unmarshal (which
// alone decides how an escape or invalid UTF-8 decodes).
func (d *decoder) text() (string, bool) {
	start := d.i
	if s, ok := d.plainString(); ok {
		return string(s), true
	}
	d.i = start
	d.space()
	from := d.i
	if !d.skipString() {
		return "", false
	}
	var s string
	if json.Unmarshal(d.data[from:d.i], &s) != nil {
		return "", false
	}
	return s, true
}

// loadPage and storeRequest leave a second "events" key to encoding/json,
// which decodes it into the elements the first one made instead of
// replacing them.
func (d *decoder) loadPage(p *LoadPage) bool {
	seenEvents := false
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "aggregateVersion":
			p.AggregateVersion, ok = d.integer()
		case "events":
			if seenEvents {
				return false
			}
			seenEvents = true
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
	seenEvents := false
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "events":
			if seenEvents {
				return false
			}
			seenEvents = true
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

// feedResponse leaves a second "entries" key, or a second "events" key in
// an entry, to encoding/json, as loadPage does.
func (d *decoder) feedResponse(r *FeedResponse) bool {
	seenEntries := false
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "entries":
			if seenEntries {
				return false
			}
			seenEntries = true
			r.Entries = []FeedEntry{}
			ok = d.list('[', ']', func() bool {
				var e FeedEntry
				if !d.feedEntry(&e) {
					return false
				}
				r.Entries = append(r.Entries, e)
				return true
			})
		case "hasMore":
			r.HasMore, ok = d.boolean()
		case "currentSequenceNumber":
			r.CurrentSequenceNumber, ok = d.integer()
		default:
			ok = d.unknown(key, "entries", "hasMore", "currentSequenceNumber")
		}
		return ok
	}) && d.end()
}

func (d *decoder) feedEntry(e *FeedEntry) bool {
	seenEvents := false
	return d.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "sequenceNumber":
			e.SequenceNumber, ok = d.integer()
		case "aggregateId":
			e.AggregateID, ok = d.text()
		case "timestamp":
			e.Timestamp, ok = d.integer()
		case "feedName":
			e.FeedName, ok = d.text()
		case "aggregateType":
			e.AggregateType, ok = d.text()
		case "aggregateVersion":
			e.AggregateVersion, ok = d.integer()
		case "events":
			if seenEvents {
				return false
			}
			seenEvents = true
			e.Events, ok = d.events()
		default:
			ok = d.unknown(key, "sequenceNumber", "aggregateId", "timestamp", "feedName", "aggregateType",
				"aggregateVersion", "events")
		}
		return ok
	})
}

// end reports whether only white space is left.
func (d *decoder) end() bool {
	d.space()
	return d.i == len(d.data)
}
