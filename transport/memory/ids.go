package memory

import (
	"cmp"
	"slices"
	"sort"
	"strings"
)

const (
	// idChunk is the most ids one chunk of a sortedIDs holds; a full chunk
	// splits in two, so an insert moves at most this many ids.
	idChunk = 512
	// idBlock is how many new ids one block of the pending list holds.
	idBlock = 4096
)

// idSource gives the id of the stream at a position (its scope).
type idSource interface {
	idAt(pos uint32) string
}

// sortedIDs keeps a scope's aggregate ids in order for List without making
// Create pay for it. It holds the streams' positions, not their ids (no
// pointer per aggregate for the collector to follow), each sorted one with
// its id's first 8 bytes, which decide most comparisons; the rest read the
// id through the scope (idSource). A position is in the list exactly while
// its stream is stored, so it is taken out (remove) before its stream is
// dropped and its position reused.
//
// A new position goes to a pending list (fixed-size blocks, so adding
// never copies what is there). The first List after new ids sorts them
// into the sorted chunks (at most idChunk each, so an insert moves one
// chunk's worth, never the whole set); a page is found by walking the
// chunks' lengths.
type sortedIDs struct {
	chunks  [][]idRef
	n       int // positions in chunks
	pending [][]uint32
	p       int // positions pending
}

// idRef is a sorted position with its id's prefix (see prefixOf).
type idRef struct {
	prefix uint64
	pos    uint32
}

// prefixOf is an id's first 8 bytes as a big-endian number, zero-padded:
// ids whose prefixes differ are in the order of their prefixes.
func prefixOf(id string) uint64 {
	var k uint64
	for i := range 8 {
		k <<= 8
		if i < len(id) {
			k |= uint64(id[i])
		}
	}
	return k
}

// compare orders the id of r against id, whose prefix is k.
func compare(src idSource, r idRef, id string, k uint64) int {
	if r.prefix != k {
		return cmp.Compare(r.prefix, k)
	}
	return strings.Compare(src.idAt(r.pos), id)
}

// keyed is a position with its id, to sort by.
type keyed struct {
	prefix uint64
	id     string
	pos    uint32
}

func byID(a, b keyed) int {
	if a.prefix != b.prefix {
		return cmp.Compare(a.prefix, b.prefix)
	}
	return strings.Compare(a.id, b.id)
}

func (k keyed) ref() idRef { return idRef{prefix: k.prefix, pos: k.pos} }

// sortedKeys returns the positions in lists with their ids, sorted.
func sortedKeys(src idSource, n int, chunks [][]idRef, lists ...[][]uint32) []keyed {
	all := make([]keyed, 0, n)
	add := func(pos uint32) {
		id := src.idAt(pos)
		all = append(all, keyed{prefixOf(id), id, pos})
	}
	for _, c := range chunks {
		for _, r := range c {
			add(r.pos)
		}
	}
	for _, list := range lists {
		for _, b := range list {
			for _, pos := range b {
				add(pos)
			}
		}
	}
	slices.SortFunc(all, byID)
	return all
}

// insert adds the position of a new stream.
func (s *sortedIDs) insert(pos uint32) {
	if len(s.pending) == 0 || len(s.pending[len(s.pending)-1]) == idBlock {
		s.pending = append(s.pending, make([]uint32, 0, idBlock))
	}
	b := &s.pending[len(s.pending)-1]
	*b = append(*b, pos)
	s.p++
}

// ready reports whether page can answer without a merge first.
func (s *sortedIDs) ready() bool { return s.p == 0 }

// merge sorts the pending positions into the chunks.
func (s *sortedIDs) merge(src idSource) {
	if s.p == 0 {
		return
	}
	if s.p < s.n/8 {
		// Few new ids: insert them one by one (in any order: no copy to
		// sort).
		for _, b := range s.pending {
			for _, pos := range b {
				id := src.idAt(pos)
				s.put(src, id, idRef{prefix: prefixOf(id), pos: pos})
			}
		}
		s.clearPending()
		return
	}
	add := sortedKeys(src, s.p, nil, s.pending)
	s.clearPending()
	// Many new ids: merge the two sorted lists and cut them into chunks
	// anew, half full so that later inserts find room.
	all := make([]idRef, 0, s.n+len(add))
	i := 0
	for _, c := range s.chunks {
		for _, r := range c {
			for i < len(add) && compare(src, r, add[i].id, add[i].prefix) > 0 {
				all = append(all, add[i].ref())
				i++
			}
			all = append(all, r)
		}
	}
	for _, k := range add[i:] {
		all = append(all, k.ref())
	}
	s.chunks = s.chunks[:0]
	for len(all) > 0 {
		k := min(len(all), idChunk/2)
		c := make([]idRef, k, idChunk)
		copy(c, all[:k])
		s.chunks = append(s.chunks, c)
		all = all[k:]
	}
	s.n += len(add)
}

// clearPending empties the pending list, keeping its first block for the
// next ids.
func (s *sortedIDs) clearPending() {
	first := s.pending[0]
	clear(s.pending[1:])
	s.pending, s.p = append(s.pending[:0], first[:0]), 0
}

// find returns the chunk that holds id (whose prefix is k) or would.
func (s *sortedIDs) find(src idSource, id string, k uint64) int {
	i := sort.Search(len(s.chunks), func(i int) bool {
		c := s.chunks[i]
		return compare(src, c[len(c)-1], id, k) >= 0
	})
	return min(i, len(s.chunks)-1)
}

// search returns where id (whose prefix is k) is or would be in chunk c,
// and whether it is.
func search(src idSource, c []idRef, id string, k uint64) (int, bool) {
	return slices.BinarySearchFunc(c, id, func(r idRef, id string) int {
		return compare(src, r, id, k)
	})
}

// put inserts r, the position of id, into the chunks.
func (s *sortedIDs) put(src idSource, id string, r idRef) {
	s.n++
	if len(s.chunks) == 0 {
		c := make([]idRef, 1, idChunk)
		c[0] = r
		s.chunks = append(s.chunks, c)
		return
	}
	ci := s.find(src, id, r.prefix)
	c := s.chunks[ci]
	j, _ := search(src, c, id, r.prefix)
	if len(c) < idChunk {
		s.chunks[ci] = slices.Insert(c, j, r)
		return
	}
	lo := make([]idRef, idChunk/2, idChunk)
	hi := make([]idRef, idChunk-idChunk/2, idChunk)
	copy(lo, c[:idChunk/2])
	copy(hi, c[idChunk/2:])
	if j <= len(lo) {
		lo = slices.Insert(lo, j, r)
	} else {
		hi = slices.Insert(hi, j-len(lo), r)
	}
	s.chunks[ci] = lo
	s.chunks = slices.Insert(s.chunks, ci+1, hi)
}

// remove takes out the position of a stream about to be dropped: its id
// must still be readable through src.
func (s *sortedIDs) remove(src idSource, pos uint32) {
	s.merge(src)
	if len(s.chunks) == 0 {
		return
	}
	id := src.idAt(pos)
	k := prefixOf(id)
	ci := s.find(src, id, k)
	c := s.chunks[ci]
	j, ok := search(src, c, id, k)
	if !ok || c[j].pos != pos {
		return
	}
	s.n--
	c = slices.Delete(c, j, j+1)
	if len(c) == 0 {
		s.chunks = slices.Delete(s.chunks, ci, ci+1)
		return
	}
	s.chunks[ci] = c
}

// page returns the positions of up to limit ids after skipping skip, and
// whether more follow; pending ids must be merged first (see ready).
func (s *sortedIDs) page(skip, limit int) ([]uint32, bool) {
	if skip >= s.n {
		return nil, false
	}
	out := make([]uint32, 0, min(limit, s.n-skip))
	for _, c := range s.chunks {
		if skip >= len(c) {
			skip -= len(c)
			continue
		}
		for _, r := range c[skip:] {
			if len(out) == limit {
				return out, true
			}
			out = append(out, r.pos)
		}
		skip = 0
	}
	return out, false
}

// snapshotPage is page for a reader that cannot merge (it holds only the
// read lock): it sorts a copy of everything. Rare: it runs only when ids
// arrive between List's merge and its read.
func (s *sortedIDs) snapshotPage(src idSource, skip, limit int) ([]uint32, bool) {
	all := sortedKeys(src, s.n+s.p, s.chunks, s.pending)
	if skip >= len(all) {
		return nil, false
	}
	end := min(skip+limit, len(all))
	out := make([]uint32, 0, end-skip)
	for _, k := range all[skip:end] {
		out = append(out, k.pos)
	}
	return out, end < len(all)
}
