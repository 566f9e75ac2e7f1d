package bolt

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// batchTag opens every batch record of format 3. A JSON batch of the older
// formats opens with '[', so the two never mix up.
const batchTag = 0xB3

// batchHeader is the tag, the batch's feed sequence number, its store
// time and the record's checksum; the events follow.
const batchHeader = 1 + 8 + 8 + 4

// crcAt is where the checksum sits in the header: CRC-32C of every byte of
// the record but its own four.
const crcAt = 1 + 8 + 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errBatchDamaged  = errors.New("batch record does not decode")
	errBatchChecksum = errors.New("batch record fails its checksum (a byte changed on disk)")
)

// encodeBatch assigns missing event ids and encodes the events of a batch
// after room for its header, which putHeader fills inside the transaction:
//
//	1 byte tag 0xB3, 8 bytes feed sequence, 8 bytes stored (Unix ns, 0 unknown),
//	4 bytes CRC-32C of the rest of the record, uvarint event count, then per event four length-prefixed (uvarint)
//	fields: event id, event type, data, encrypted data, byte for byte.
func encodeBatch(events []transport.Event) []byte {
	size := batchHeader + binary.MaxVarintLen64
	for i := range events {
		e := &events[i]
		id := len(e.EventID)
		if id == 0 {
			id = 36
		}
		size += 4*binary.MaxVarintLen32 + id + len(e.EventType) + len(e.Data) + len(e.EncryptedData)
	}
	b := make([]byte, batchHeader, size)
	b[0] = batchTag
	b = binary.AppendUvarint(b, uint64(len(events)))
	for i := range events {
		e := &events[i]
		if e.EventID == "" {
			b = appendString(b, uuid.NewString())
		} else {
			b = appendString(b, e.EventID)
		}
		b = appendString(b, e.EventType)
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
		b = appendString(b, e.EncryptedData)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// putHeader writes the batch's sequence number and store time, then seals
// the record with its checksum: a byte changed on disk afterwards is found
// by decode, never read as an event that was not stored.
func putHeader(b []byte, seq int64, stored time.Time) {
	binary.BigEndian.PutUint64(b[1:9], uint64(seq))
	binary.BigEndian.PutUint64(b[9:17], uint64(unixNano(stored)))
	binary.BigEndian.PutUint32(b[crcAt:batchHeader], checksum(b))
}

// checksum is the CRC-32C of record v without its checksum field.
func checksum(v []byte) uint32 {
	c := crc32.Update(0, castagnoli, v[:crcAt])
	return crc32.Update(c, castagnoli, v[batchHeader:])
}

// sealed says whether v is a batch record whose checksum holds.
func sealed(v []byte) bool {
	return len(v) >= batchHeader && v[0] == batchTag && binary.BigEndian.Uint32(v[crcAt:batchHeader]) == checksum(v)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// batchSeq returns the feed sequence number and store time in a batch
// record's header; false when the record is damaged.
func batchSeq(v []byte) (int64, time.Time, bool) {
	if !sealed(v) {
		return 0, time.Time{}, false
	}
	return int64(binary.BigEndian.Uint64(v[1:9])), fromUnixNano(int64(binary.BigEndian.Uint64(v[9:17]))), true
}

// batchDecoder turns batch records into events. It copies out of the memory
// map: one buffer per batch for the payloads, strings for ids and types
// (the last event type is reused, pages often repeat it).
type batchDecoder struct {
	lastType string
}

// decode appends the events of record v to dst and returns them with the
// batch's size as transport.EventBytes counts it.
func (d *batchDecoder) decode(dst []transport.Event, v []byte) ([]transport.Event, int, error) {
	if len(v) < batchHeader || v[0] != batchTag {
		return dst, 0, errBatchDamaged
	}
	if !sealed(v) {
		return dst, 0, errBatchChecksum
	}
	r := v[batchHeader:]
	n, k := binary.Uvarint(r)
	if k <= 0 || n == 0 || n > transport.MaxBatchEvents {
		return dst, 0, errBatchDamaged
	}
	r = r[k:]
	// One copy of the rest holds every payload of the batch.
	buf := make([]byte, len(r))
	copy(buf, r)
	r = buf
	size := 0
	start := len(dst)
	for range n {
		var id, typ, data, enc []byte
		var ok bool
		if id, r, ok = field(r); !ok {
			return dst[:start], 0, errBatchDamaged
		}
		if typ, r, ok = field(r); !ok {
			return dst[:start], 0, errBatchDamaged
		}
		if data, r, ok = field(r); !ok {
			return dst[:start], 0, errBatchDamaged
		}
		if enc, r, ok = field(r); !ok {
			return dst[:start], 0, errBatchDamaged
		}
		e := transport.Event{EventID: string(id)}
		if string(typ) == d.lastType {
			e.EventType = d.lastType
		} else {
			e.EventType = string(typ)
			d.lastType = e.EventType
		}
		if len(data) > 0 {
			e.Data = data
		}
		if len(enc) > 0 {
			e.EncryptedData = string(enc)
		}
		size += len(e.EventType) + len(data) + len(enc)
		dst = append(dst, e)
	}
	if len(r) != 0 {
		return dst[:start], 0, errBatchDamaged
	}
	return dst, size, nil
}

// field cuts one length-prefixed field off r; the field is capped so that
// appending to it never writes into the next one.
func field(r []byte) ([]byte, []byte, bool) {
	n, k := binary.Uvarint(r)
	if k <= 0 || n > uint64(len(r)-k) {
		return nil, r, false
	}
	end := k + int(n)
	return r[k:end:end], r[end:], true
}
