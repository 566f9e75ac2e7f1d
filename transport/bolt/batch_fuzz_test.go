package bolt

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// FuzzDecodeBatch feeds the batch decoder arbitrary records, sealed with a
// valid checksum so that the parser behind it is reached: it must never
// panic, and the events of a record it accepts encode and decode back to
// themselves.
func FuzzDecodeBatch(f *testing.F) {
	seed := encodeBatch([]transport.Event{
		{EventID: "0b8f6a52-3c1e-4d7a-9f2b-6e5d4c3b2a19", EventType: "A", Data: []byte(`{"a": 1}`), EncryptedData: "x"},
		{EventID: "1b8f6a52-3c1e-4d7a-9f2b-6e5d4c3b2a19", EventType: "B"},
	})
	putHeader(seed, 7, fromUnixNano(12345))
	f.Add(seed)
	f.Add([]byte{batchTag})
	f.Add(append(append([]byte{}, seed[:batchHeader]...), 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Fuzz(func(t *testing.T, v []byte) {
		if len(v) >= batchHeader {
			v[0] = batchTag
			binary.BigEndian.PutUint32(v[crcAt:batchHeader], checksum(v))
		}
		var d batchDecoder
		events, size, err := d.decode(nil, v)
		if err != nil {
			return
		}
		require.NotEmpty(t, events)
		require.LessOrEqual(t, size, len(v))
		for _, e := range events {
			if e.EventID == "" {
				return // encodeBatch would give it an id
			}
		}
		again := encodeBatch(events)
		seq, stored, ok := batchSeq(v)
		require.True(t, ok)
		putHeader(again, seq, stored)
		var d2 batchDecoder
		back, size2, err := d2.decode(nil, again)
		require.NoError(t, err)
		require.Equal(t, events, back)
		require.Equal(t, size, size2)
	})
}
