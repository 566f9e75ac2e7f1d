package postgres

import (
	"encoding/binary"
	"encoding/json"
	"errors"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// payloadFormat is the first byte of a batch's payload: a JSON array (the
// events column of batches stored before migration 3) starts with '['.
const payloadFormat = 1

// errPayload: a stored payload does not decode.
var errPayload = errors.New("stored batch does not decode")

// encodePayload frames events byte for byte: the format byte, then per
// event its EventID, EventType, Data and EncryptedData, each as a length
// (uvarint) and its bytes. Nothing is escaped or re-encoded, so whatever
// bytes Store was given come back (EncryptedData need not be UTF-8). An
// empty EventID is given a new UUID.
func encodePayload(events []transport.Event) []byte {
	n := 1
	for i := range events {
		n += 4*binary.MaxVarintLen32 + 36 + transport.EventBytes(&events[i])
	}
	buf := make([]byte, 1, n)
	buf[0] = payloadFormat
	put := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	for i := range events {
		e := &events[i]
		if e.EventID == "" {
			put(uuid.NewString())
		} else {
			put(e.EventID)
		}
		put(e.EventType)
		buf = binary.AppendUvarint(buf, uint64(len(e.Data)))
		buf = append(buf, e.Data...)
		put(e.EncryptedData)
	}
	return buf
}

// decodePayload appends the events of a stored batch to out: from payload
// when the batch has one, else from the JSON of an older one. Data slices
// share payload's memory (capped, so an append never spills into the next
// field); the caller's payload must not be reused.
func decodePayload(out []transport.Event, payload, legacy []byte) ([]transport.Event, error) {
	if payload == nil {
		var batch []transport.Event
		if err := json.Unmarshal(legacy, &batch); err != nil {
			return out, errors.Join(errPayload, err)
		}
		return append(out, batch...), nil
	}
	if len(payload) == 0 || payload[0] != payloadFormat {
		return out, errPayload
	}
	b := payload[1:]
	field := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, false
		}
		f := b[k : k+int(n) : k+int(n)]
		b = b[k+int(n):]
		return f, true
	}
	for len(b) > 0 {
		id, ok1 := field()
		typ, ok2 := field()
		data, ok3 := field()
		enc, ok4 := field()
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return out, errPayload
		}
		e := transport.Event{EventID: string(id), EventType: string(typ), EncryptedData: string(enc)}
		if len(data) > 0 {
			e.Data = data
		}
		out = append(out, e)
	}
	return out, nil
}
