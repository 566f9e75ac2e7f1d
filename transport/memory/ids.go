package memory

import (
	"slices"
)

// idBlock is how many new ids one block of a sortedIDs' pending list holds.
const idBlock = 4096

// sortedIDs keeps a scope's aggregate ids in order for List without making
// Create pay for it: a new id goes to a pending list (fixed-size blocks, so
// adding never copies what is there); the first List after new ids sorts
// them and merges them into the sorted list, once, and later Lists page
// straight from it. A delete merges, then removes the id from the sorted
// list.
type sortedIDs struct {
	sorted  []string
	pending [][]string
	n       int // ids in pending
}

func (s *sortedIDs) insert(id string) {
	if s.n%idBlock == 0 {
		s.pending = append(s.pending, make([]string, 0, idBlock))
	}
	b := &s.pending[len(s.pending)-1]
	*b = append(*b, id)
	s.n++
}

// merge sorts the pending ids into the sorted list.
func (s *sortedIDs) merge() {
	if s.n == 0 {
		return
	}
	add := make([]string, 0, s.n)
	for _, b := range s.pending {
		add = append(add, b...)
	}
	slices.Sort(add)
	out := make([]string, 0, len(s.sorted)+len(add))
	i, j := 0, 0
	for i < len(s.sorted) && j < len(add) {
		if s.sorted[i] < add[j] {
			out = append(out, s.sorted[i])
			i++
		} else {
			out = append(out, add[j])
			j++
		}
	}
	out = append(out, s.sorted[i:]...)
	out = append(out, add[j:]...)
	s.sorted, s.pending, s.n = out, nil, 0
}

func (s *sortedIDs) remove(id string) {
	s.merge()
	if i, ok := slices.BinarySearch(s.sorted, id); ok {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
}

// page returns up to limit ids after skipping skip, and whether more
// follow. It needs the write lock when ids are pending (it merges them);
// ready says whether they are.
func (s *sortedIDs) page(skip, limit int) ([]string, bool) {
	if skip >= len(s.sorted) {
		return nil, false
	}
	end := min(skip+limit, len(s.sorted))
	return s.sorted[skip:end], end < len(s.sorted)
}

// ready reports whether page can answer without merging first.
func (s *sortedIDs) ready() bool { return s.n == 0 }
