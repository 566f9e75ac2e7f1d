package memory

import (
	"encoding/binary"
	"math/bits"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// The layout below is chosen for a store of millions of aggregates: the
// garbage collector's work grows with the pointers and objects the store
// holds, so a small aggregate has no allocation of its own (its id and its
// batches' bytes go into shared blocks, see arena), its stream lives by
// value in a large chunk, and the id index and the feed hold no pointers
// at all.

// streamChunk is how many streams one chunk of a scope holds.
const streamChunk = 1024

// batch is one stored batch: its events encoded in one buffer (see
// encodeBatch), its feed sequence number and when it was stored.
type batch struct {
	buf    []byte
	seq    int64
	stored time.Time
	events int32 // how many events buf holds
	bytes  int64 // what they count towards MaxPageBytes
}

// stream is one aggregate's history; id is empty for a free position, and
// first.seq is 0 until its first batch is stored.
type stream struct {
	id     string
	first  batch
	more   []batch // batches 2 to version
	events int64   // events in all batches
}

func (s *stream) version() int64 {
	if s.first.seq == 0 {
		return 0
	}
	return 1 + int64(len(s.more))
}

// batch returns the batch of version v (1 to version()).
func (s *stream) batch(v int64) *batch {
	if v == 1 {
		return &s.first
	}
	return &s.more[v-2]
}

func (s *stream) updated() time.Time { return s.batch(s.version()).stored }

// seqs returns the feed sequence numbers of the stream's batches.
func (s *stream) seqs(yield func(int64) bool) {
	for v := int64(1); v <= s.version(); v++ {
		if !yield(s.batch(v).seq) {
			return
		}
	}
}

// scopeState is one tenant's aggregates of one type.
type scopeState struct {
	typ    string
	fid    uint32 // its number in its tenant's feed (feedLog.scopes)
	index  idTable
	odd    map[string]uint32 // ids that are not lowercase UUIDs
	chunks [][]stream
	used   uint32   // positions handed out
	free   []uint32 // positions of deleted streams, for reuse
	live   int      // streams
	ids    sortedIDs
}

func newScope(typ string) *scopeState {
	return &scopeState{typ: typ, index: newIDTable()}
}

func (sc *scopeState) at(pos uint32) *stream {
	return &sc.chunks[pos/streamChunk][pos%streamChunk]
}

// streamKey is an aggregate id as the scope looks it up: its 16 bytes
// when it is a lowercase UUID (canon), else the id itself.
type streamKey struct {
	id    string
	k     idKey
	canon bool
}

func keyOf(id string) streamKey {
	k, canon := parseID(id)
	return streamKey{id: id, k: k, canon: canon}
}

// find returns the stream of key and its position, or nil.
func (sc *scopeState) find(key streamKey) (*stream, uint32) {
	var pos uint32
	var ok bool
	if key.canon {
		pos, ok = sc.index.get(key.k)
	} else {
		pos, ok = sc.odd[key.id]
	}
	if !ok {
		return nil, 0
	}
	return sc.at(pos), pos
}

// add makes an empty stream for key, which must not have one. The id is
// copied into a, so the store does not keep the caller's string (an object
// per aggregate for the collector).
func (sc *scopeState) add(key streamKey, a *arena) (*stream, uint32) {
	key.id = a.copy(key.id)
	var pos uint32
	if n := len(sc.free); n > 0 {
		pos, sc.free = sc.free[n-1], sc.free[:n-1]
	} else {
		pos = sc.used
		sc.used++
		if int(pos/streamChunk) == len(sc.chunks) {
			sc.chunks = append(sc.chunks, make([]stream, streamChunk))
		}
	}
	if key.canon {
		sc.index.put(key.k, pos)
	} else {
		if sc.odd == nil {
			sc.odd = make(map[string]uint32)
		}
		sc.odd[key.id] = pos
	}
	s := sc.at(pos)
	s.id = key.id
	sc.live++
	sc.ids.insert(key.id)
	return s, pos
}

// remove drops the stream of key at pos.
func (sc *scopeState) remove(key streamKey, pos uint32) {
	if key.canon {
		sc.index.remove(key.k)
	} else {
		delete(sc.odd, key.id)
	}
	*sc.at(pos) = stream{}
	sc.free = append(sc.free, pos)
	sc.live--
	sc.ids.remove(key.id)
}

// each calls f with every stream.
func (sc *scopeState) each(f func(*stream)) {
	for pos := uint32(0); pos < sc.used; pos++ {
		if s := sc.at(pos); s.id != "" {
			f(s)
		}
	}
}

// encodeBatch makes the stored form of a batch, one buffer: per event its
// id (assigned when missing; always 36 bytes, a UUID), then its type, data
// and encrypted data, each after its length as a uvarint (data's length
// doubled, plus one when it is not nil, so nil and empty come back as
// they went in). The caller keeps its slices.
func encodeBatch(events []transport.Event, a *arena) batch {
	size := 0
	for i := range events {
		e := &events[i]
		size += 36 + uvarintLen(uint64(len(e.EventType))) + len(e.EventType) +
			uvarintLen(uint64(len(e.Data))<<1|1) + len(e.Data) +
			uvarintLen(uint64(len(e.EncryptedData))) + len(e.EncryptedData)
	}
	buf := a.alloc(size)
	b := batch{events: int32(len(events))}
	for i := range events {
		e := &events[i]
		if e.EventID == "" {
			buf = append(buf, uuid.NewString()...)
		} else {
			buf = append(buf, e.EventID...)
		}
		buf = binary.AppendUvarint(buf, uint64(len(e.EventType)))
		buf = append(buf, e.EventType...)
		n := uint64(len(e.Data)) << 1
		if e.Data != nil {
			n |= 1
		}
		buf = binary.AppendUvarint(buf, n)
		buf = append(buf, e.Data...)
		buf = binary.AppendUvarint(buf, uint64(len(e.EncryptedData)))
		buf = append(buf, e.EncryptedData...)
		b.bytes += int64(transport.EventBytes(e))
	}
	b.buf = buf
	return b
}

func uvarintLen(n uint64) int { return (bits.Len64(n|1) + 6) / 7 }

// Small batches share blocks of arenaBlock bytes instead of having an
// allocation each: the collector has one object to mark per block, not one
// per batch. The price: a block is freed only when none of its batches is
// stored any more, so a deleted small aggregate's bytes (unreachable, never
// read again) can stay in memory beside neighbours still stored: each
// stored small buffer keeps at most one block alive.
const (
	arenaBlock = 8 << 10
	arenaMax   = 512 // larger batches get an allocation of their own
)

// arena hands out the buffers of small batches. A transport has two: one
// for ids and first batches, one for later batches (see appendLocked). In
// one, an aggregate that lives on while its neighbours come and go would
// keep a block alive per batch it receives (its batches spread over every
// block that the churn of its neighbours fills); apart, its later batches
// fill blocks of their own.
type arena struct{ block []byte }

// alloc returns an empty buffer with room for exactly n bytes, which no
// other buffer shares.
func (a *arena) alloc(n int) []byte {
	if n > arenaMax {
		return make([]byte, 0, n)
	}
	if cap(a.block)-len(a.block) < n {
		a.block = make([]byte, 0, arenaBlock)
	}
	start := len(a.block)
	a.block = a.block[:start+n]
	return a.block[start : start : start+n]
}

// copy returns a copy of s in the arena.
func (a *arena) copy(s string) string {
	b := append(a.alloc(len(s)), s...)
	return str(b, len(b))
}

// decode appends the batch's events to dst. Their strings and Data point
// into the batch's buffer, which is never written again.
func (b *batch) decode(dst []transport.Event) []transport.Event {
	buf := b.buf
	for range b.events {
		var e transport.Event
		e.EventID, buf = str(buf, 36), buf[36:]
		n, k := binary.Uvarint(buf)
		buf = buf[k:]
		e.EventType, buf = str(buf, int(n)), buf[n:]
		n, k = binary.Uvarint(buf)
		buf = buf[k:]
		if n&1 != 0 {
			l := n >> 1
			e.Data, buf = buf[:l:l], buf[l:]
		}
		n, k = binary.Uvarint(buf)
		buf = buf[k:]
		e.EncryptedData, buf = str(buf, int(n)), buf[n:]
		dst = append(dst, e)
	}
	return dst
}

// str is the string of buf's first n bytes, sharing them: buf is never
// written after encodeBatch.
func str(buf []byte, n int) string {
	if n == 0 {
		return ""
	}
	return unsafe.String(&buf[0], n)
}
