package memory

import (
	"slices"
	"sort"
)

// idChunk is the most ids one chunk of a sortedIDs holds; a full chunk
// splits in two. Inserting moves at most this many ids.
const idChunk = 256

// sortedIDs keeps a scope's aggregate ids in order for List: sorted chunks
// of at most idChunk ids, so an insert or a delete moves one chunk's worth,
// never the whole set, and a page is found by walking chunk lengths.
type sortedIDs struct {
	chunks [][]string
	n      int
}

// find returns the chunk that holds id or would.
func (s *sortedIDs) find(id string) int {
	i := sort.Search(len(s.chunks), func(i int) bool {
		c := s.chunks[i]
		return c[len(c)-1] >= id
	})
	return min(i, len(s.chunks)-1)
}

func (s *sortedIDs) insert(id string) {
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
	// Split the full chunk in two halves, each with room to grow.
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

// page returns up to limit ids after skipping skip, and whether more follow.
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
