package memory

import (
	"encoding/binary"
	"iter"
	"math"
	"math/bits"
	"unsafe"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// The layout below is chosen for a store of millions of aggregates: the
// garbage collector's work grows with the pointers and objects the store
// holds, so what the store keeps for an aggregate of one batch holds no Go
// pointer at all, and the collector skips it (issue 20: with a string, a
// slice and a time.Time per stream, a full collection at a million
// aggregates chased about five million pointers).
//
//   - Bytes (ids and encoded batches) live in numbered blocks of a
//     blockTable, one per transport: small buffers share 8 KB blocks
//     (see arena), a large batch has a block of its own. A stream names
//     its bytes by number (bref), not by a string or slice; strings and
//     slices are made from a block when an id or a page is read.
//   - A stream lives by value in a chunk of streamChunk streams; its first
//     batch is in it, its later batches in its scope's side table (one
//     slice per aggregate that has them), named by number too. Store times
//     are Unix nanoseconds, not time.Time (whose Location is a pointer).
//   - The id index (idTable), the sorted ids for List (sortedIDs, stream
//     positions) and the feed (slots, sequence numbers) hold numbers only.
//
// So the pointers a collection follows are one per block of bytes (tens
// of small aggregates), per chunk of streams, positions or feed entries
// (hundreds to thousands), per aggregate of more than one batch and per
// aggregate whose id is not a lowercase UUID (scopeState.odd).

// streamChunk is how many streams one chunk of a scope holds.
const streamChunk = 1024

// bref names n bytes at off in the block numbered block of a blockTable.
// Block 0 is never used: a zero bref names nothing.
type bref struct{ block, off, n uint32 }

// blockTable holds the transport's byte blocks by number. A block is kept
// while a stored buffer is in it (refs counts them, plus one while an
// arena is filling it); then its number is released for reuse and the
// table lets go of it. Strings and slices handed out from a block stay
// valid after that (the collector keeps the array alive for them), and a
// block's bytes are never written after they were handed out: a new
// block under a reused number is a new array.
type blockTable struct {
	bufs [][]byte // by number; nil when released
	refs []int32
	free []uint32 // released numbers
}

// newBlock adds a block of size bytes with one reference, the caller's.
func (bt *blockTable) newBlock(size int) uint32 {
	buf := make([]byte, size)
	if n := len(bt.free); n > 0 {
		b := bt.free[n-1]
		bt.free = bt.free[:n-1]
		bt.bufs[b], bt.refs[b] = buf, 1
		return b
	}
	if len(bt.bufs) == 0 {
		bt.bufs, bt.refs = append(bt.bufs, nil), append(bt.refs, 0) // number 0: none
	}
	bt.bufs, bt.refs = append(bt.bufs, buf), append(bt.refs, 1)
	return uint32(len(bt.bufs) - 1)
}

// unref drops one reference to block b (none for 0), releasing it at the
// last.
func (bt *blockTable) unref(b uint32) {
	if b == 0 {
		return
	}
	bt.refs[b]--
	if bt.refs[b] == 0 {
		bt.bufs[b] = nil
		bt.free = append(bt.free, b)
	}
}

// bytes returns the bytes r names, with no room past them.
func (bt *blockTable) bytes(r bref) []byte {
	return bt.bufs[r.block][r.off : r.off+r.n : r.off+r.n]
}

// str returns the bytes r names as a string sharing them.
func (bt *blockTable) str(r bref) string { return str(bt.bytes(r), int(r.n)) }

// batch is one stored batch: its events encoded in one buffer (see
// encodeBatch), its feed sequence number and when it was stored (Unix
// nanoseconds).
type batch struct {
	buf    bref
	events int32 // how many events buf holds
	seq    int64
	stored int64
	bytes  int64 // what the events count towards MaxPageBytes
}

// stream is one aggregate's history; id.block is 0 for a free position,
// and first.seq is 0 until its first batch is stored.
type stream struct {
	id     bref
	more   uint32 // its later batches: scopeState.more[more]; 0 for none
	first  batch
	events int64 // events in all batches
}

// scopeState is one tenant's aggregates of one type.
type scopeState struct {
	typ    string
	fid    uint32 // its number in its tenant's feed (feedLog.scopes)
	blocks *blockTable
	index  idTable
	odd    map[string]uint32 // ids that are not lowercase UUIDs
	chunks [][]stream
	used   uint32   // positions handed out
	free   []uint32 // positions of deleted streams, for reuse
	live   int      // streams
	ids    sortedIDs
	// more holds the batches 2 to version of each stream that has them
	// (index 0 unused); moreFree lists emptied indexes for reuse.
	more     [][]batch
	moreFree []uint32
}

func newScope(typ string, blocks *blockTable) *scopeState {
	return &scopeState{typ: typ, blocks: blocks, index: newIDTable()}
}

func (sc *scopeState) at(pos uint32) *stream {
	return &sc.chunks[pos/streamChunk][pos%streamChunk]
}

// id returns the stream's id, sharing the store's bytes.
func (sc *scopeState) id(s *stream) string { return sc.blocks.str(s.id) }

// idAt returns the id of the stream at pos (for sortedIDs).
func (sc *scopeState) idAt(pos uint32) string { return sc.id(sc.at(pos)) }

func (sc *scopeState) version(s *stream) int64 {
	switch {
	case s.first.seq == 0:
		return 0
	case s.more == 0:
		return 1
	}
	return 1 + int64(len(sc.more[s.more]))
}

// batch returns the stream's batch of version v (1 to version).
func (sc *scopeState) batch(s *stream, v int64) *batch {
	if v == 1 {
		return &s.first
	}
	return &sc.more[s.more][v-2]
}

// updated returns when the stream's last batch was stored.
func (sc *scopeState) updated(s *stream) int64 { return sc.batch(s, sc.version(s)).stored }

// push adds b as the stream's next batch.
func (sc *scopeState) push(s *stream, b batch) {
	if s.first.seq == 0 {
		s.first = b
		return
	}
	if s.more == 0 {
		if n := len(sc.moreFree); n > 0 {
			s.more, sc.moreFree = sc.moreFree[n-1], sc.moreFree[:n-1]
		} else {
			if len(sc.more) == 0 {
				sc.more = append(sc.more, nil) // index 0: none
			}
			sc.more = append(sc.more, nil)
			s.more = uint32(len(sc.more) - 1)
		}
	}
	sc.more[s.more] = append(sc.more[s.more], b)
}

// seqs returns the feed sequence numbers of the stream's batches.
func (sc *scopeState) seqs(s *stream) iter.Seq[int64] {
	return func(yield func(int64) bool) {
		for v := int64(1); v <= sc.version(s); v++ {
			if !yield(sc.batch(s, v).seq) {
				return
			}
		}
	}
}

// release drops the stream's references to its blocks and its side-table
// entry; the stream must not be read afterwards.
func (sc *scopeState) release(s *stream) {
	bt := sc.blocks
	bt.unref(s.id.block)
	bt.unref(s.first.buf.block)
	if s.more != 0 {
		for _, b := range sc.more[s.more] {
			bt.unref(b.buf.block)
		}
		sc.more[s.more] = nil
		sc.moreFree = append(sc.moreFree, s.more)
	}
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
	var id bref
	id, key.id = a.copy(key.id)
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
	s.id = id
	sc.live++
	sc.ids.insert(pos)
	return s, pos
}

// remove drops the stream of key at pos and releases its bytes.
func (sc *scopeState) remove(key streamKey, pos uint32) {
	sc.ids.remove(sc, pos) // while its id is still there to find it by
	if key.canon {
		sc.index.remove(key.k)
	} else {
		delete(sc.odd, key.id)
	}
	s := sc.at(pos)
	sc.release(s)
	*s = stream{}
	sc.free = append(sc.free, pos)
	sc.live--
}

// releaseAll releases the bytes of every stream, for a scope dropped
// whole.
func (sc *scopeState) releaseAll() {
	sc.each(sc.release)
}

// each calls f with every stream.
func (sc *scopeState) each(f func(*stream)) {
	for pos := uint32(0); pos < sc.used; pos++ {
		if s := sc.at(pos); s.id.block != 0 {
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
	size := encodedSize(events)
	ref, buf := a.alloc(size)
	b := batch{buf: ref, events: int32(len(events))}
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
	if len(buf) != size {
		panic("memory: a batch's encoding is not the size computed for it")
	}
	return b
}

// encodedSize is the size of the stored form of events (see encodeBatch).
func encodedSize(events []transport.Event) int {
	size := 0
	for i := range events {
		e := &events[i]
		size += 36 + uvarintLen(uint64(len(e.EventType))) + len(e.EventType) +
			uvarintLen(uint64(len(e.Data))<<1|1) + len(e.Data) +
			uvarintLen(uint64(len(e.EncryptedData))) + len(e.EncryptedData)
	}
	return size
}

// maxBatchBytes is the largest stored form of a batch: a bref measures
// bytes in uint32.
const maxBatchBytes = math.MaxUint32

// checkSize refuses a batch whose stored form (see encodedSize) has size
// bytes if that is too large to store (ErrInvalid).
func checkSize(op string, ref transport.Ref, size int64) error {
	if size > maxBatchBytes {
		e := transport.NewError(op, ref, transport.ErrInvalid)
		e.Messages = []string{"the batch is too large for the memory transport (4 GiB at most)"}
		return e
	}
	return nil
}

func uvarintLen(n uint64) int { return (bits.Len64(n|1) + 6) / 7 }

// Small buffers share blocks of arenaBlock bytes instead of having an
// allocation each: the collector has one object to mark per block, not one
// per batch. The price: a block is freed only when none of its buffers is
// stored any more, so a deleted small aggregate's bytes (unreachable, never
// read again) can stay in memory beside neighbours still stored: each
// stored small buffer keeps at most one block alive.
const (
	arenaBlock = 8 << 10
	arenaMax   = 512 // larger batches get a block of their own
)

// arena hands out the buffers of ids and small batches from blocks of its
// transport's blockTable. A transport has two: one for ids and first
// batches, one for later batches (see appendLocked). In one, an aggregate
// that lives on while its neighbours come and go would keep a block alive
// per batch it receives (its batches spread over every block that the
// churn of its neighbours fills); apart, its later batches fill blocks of
// their own.
type arena struct {
	blocks *blockTable
	cur    uint32 // the block being filled (the arena holds a reference); 0 before the first
	used   uint32 // its bytes handed out
}

// alloc returns room for exactly n bytes, which no other buffer shares:
// the buffer to fill (empty, capacity n) and the reference that names it.
// The block counts the reference; release it with blockTable.unref.
func (a *arena) alloc(n int) (bref, []byte) {
	bt := a.blocks
	if n > arenaMax {
		b := bt.newBlock(n)
		return bref{block: b, n: uint32(n)}, bt.bufs[b][:0:n]
	}
	if a.cur == 0 || arenaBlock-int(a.used) < n {
		bt.unref(a.cur) // the arena's own reference: done filling it
		a.cur, a.used = bt.newBlock(arenaBlock), 0
	}
	r := bref{block: a.cur, off: a.used, n: uint32(n)}
	a.used += r.n
	bt.refs[a.cur]++
	return r, bt.bufs[a.cur][r.off : r.off : r.off+r.n]
}

// copy returns a copy of s in the arena: its reference and the copy as a
// string.
func (a *arena) copy(s string) (bref, string) {
	r, b := a.alloc(len(s))
	b = append(b, s...)
	return r, str(b, len(b))
}

// decode appends the batch's events to dst. Their strings and Data point
// into the batch's block, whose bytes are never written again.
func (b *batch) decode(bt *blockTable, dst []transport.Event) []transport.Event {
	buf := bt.bytes(b.buf)
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
