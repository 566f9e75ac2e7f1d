package memory

import (
	"slices"
	"sort"
)

const (
	// idChunk is the most ids one chunk of a sortedIDs holds; a full chunk
	// splits in two, so an insert moves at most this many ids.
	idChunk = 512
	// idBlock is how many new ids one block of the pending list holds.
	idBlock = 4096
)

// sortedIDs keeps a scope's aggregate ids in order for List without making
// Create pay for it. A new id goes to a pending list (fixed-size blocks, so
// adding never copies what is there). The first List after new ids sorts
// them into the sorted chunks (at most idChunk ids each, so an insert moves
// one chunk's worth, never the whole set); a page is found by walking the
// chunks' lengths.
type sortedIDs struct {
	chunks  [][]string
	n       int // ids in chunks
	pending [][]string
	p       int // ids pending
}

func (s *sortedIDs) insert(id string) {
	if len(s.pending) == 0 || len(s.pending[len(s.pending)-1]) == idBlock {
		s.pending = append(s.pending, make([]string, 0, idBlock))
	}
	b := &s.pending[len(s.pending)-1]
	*b = append(*b, id)
	s.p++
}

// ready reports whether page can answer without a merge first.
func (s *sortedIDs) ready() bool { return s.p == 0 }

// merge sorts the pending ids into the chunks.
func (s *sortedIDs) merge() {
	if s.p == 0 {
		return
	}
	add := make([]string, 0, s.p)
	for _, b := range s.pending {
		add = append(add, b...)
	}
	slices.Sort(add)
	// Keep the first block for the next ids.
	first := s.pending[0]
	clear(first)
	clear(s.pending[1:])
	s.pending, s.p = append(s.pending[:0], first[:0]), 0
	if len(add) < s.n/8 {
		for _, id := range add {
			s.put(id)
		}
		return
	}
	// Many new ids: merge the two sorted lists and cut them into chunks
	// anew, half full so that later inserts find room.
	all := make([]string, 0, s.n+len(add))
	i := 0
	for _, c := range s.chunks {
		for _, id := range c {
			for i < len(add) && add[i] < id {
				all = append(all, add[i])
				i++
			}
			all = append(all, id)
		}
	}
	all = append(all, add[i:]...)
	s.chunks = s.chunks[:0]
	for len(all) > 0 {
		k := min(len(all), idChunk/2)
		c := make([]string, k, idChunk)
		copy(c, all[:k])
		s.chunks = append(s.chunks, c)
		all = all[k:]
	}
	s.n += len(add)
}

// find returns the chunk that holds id or would.
func (s *sortedIDs) find(id string) int {
	i := sort.Search(len(s.chunks), func(i int) bool {
		c := s.chunks[i]
		return c[len(c)-1] >= id
	})
	return min(i, len(s.chunks)-1)
}

// put inserts one id into the chunks.
func (s *sortedIDs) put(id string) {
	s.n++
	if len(s.chunks) == 0 {
		c := make([]string, 1, idChunk)
		c[0] = id
		s.chunks = append(s.chunks, c)
		return
	}
	ci := s.find(id)
	c := s.chunks[ci]
	j, _ := slices.BinarySearch(c, id)
	if len(c) < idChunk {
		s.chunks[ci] = slices.Insert(c, j, id)
		return
	}
	lo := make([]string, idChunk/2, idChunk)
	hi := make([]string, idChunk-idChunk/2, idChunk)
	copy(lo, c[:idChunk/2])
	copy(hi, c[idChunk/2:])
	if j <= len(lo) {
		lo = slices.Insert(lo, j, id)
	} else {
		hi = slices.Insert(hi, j-len(lo), id)
	}
	s.chunks[ci] = lo
	s.chunks = slices.Insert(s.chunks, ci+1, hi)
}

func (s *sortedIDs) remove(id string) {
	s.merge()
	if len(s.chunks) == 0 {
		return
	}
	ci := s.find(id)
	c := s.chunks[ci]
	j, ok := slices.BinarySearch(c, id)
	if !ok {
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

// page returns up to limit ids after skipping skip, and whether more
// follow; pending ids must be merged first (see ready).
func (s *sortedIDs) page(skip, limit int) ([]string, bool) {
	if skip >= s.n {
		return nil, false
	}
	out := make([]string, 0, min(limit, s.n-skip))
	for _, c := range s.chunks {
		if skip >= len(c) {
			skip -= len(c)
			continue
		}
		for _, id := range c[skip:] {
			if len(out) == limit {
				return out, true
			}
			out = append(out, id)
		}
		skip = 0
	}
	return out, false
}

// snapshotPage is page for a reader that cannot merge (it holds only the
// read lock): it sorts a copy of everything. Rare: it runs only when ids
// arrive between List's merge and its read.
func (s *sortedIDs) snapshotPage(skip, limit int) ([]string, bool) {
	all := make([]string, 0, s.n+s.p)
	for _, c := range s.chunks {
		all = append(all, c...)
	}
	for _, b := range s.pending {
		all = append(all, b...)
	}
	slices.Sort(all)
	if skip >= len(all) {
		return nil, false
	}
	end := min(skip+limit, len(all))
	return all[skip:end], end < len(all)
}
