package memory

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testIDs is an idSource: the id at a position is the element there.
type testIDs []string

func (t testIDs) idAt(pos uint32) string { return t[pos] }

// ids returns the ids at positions.
func (t testIDs) ids(positions []uint32) []string {
	var out []string
	for _, p := range positions {
		out = append(out, t[p])
	}
	return out
}

// TestSortedIDsKeepsOrder sorts ids whose first 8 bytes order them, ids
// that share them (compared in full) and ids shorter than 8 bytes (some
// the start of others), removes some and reuses their positions.
func TestSortedIDsKeepsOrder(t *testing.T) {
	for name, format := range map[string]func(uint32) string{
		"distinct prefixes": func(n uint32) string { return fmt.Sprintf("%08x", n) },
		"one prefix":        func(n uint32) string { return fmt.Sprintf("aggregate-%08x", n) },
		"short":             func(n uint32) string { return fmt.Sprintf("%03x", n%4096)[:1+n%3] },
	} {
		t.Run(name, func(t *testing.T) { testSortedIDsKeepsOrder(t, format) })
	}
}

func testSortedIDsKeepsOrder(t *testing.T, format func(uint32) string) {
	var s sortedIDs
	var src testIDs
	set := map[string]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		id := format(rng.Uint32())
		if _, ok := set[id]; ok {
			continue
		}
		set[id] = uint32(len(src))
		src = append(src, id)
		s.insert(set[id])
	}
	i := 0
	var freed []uint32
	for id, pos := range set {
		if i%3 == 0 {
			s.remove(src, pos)
			delete(set, id)
			freed = append(freed, pos)
		}
		i++
	}
	// Freed positions take new ids, as a scope reuses them.
	for _, pos := range freed[:len(freed)/2] {
		id := format(rng.Uint32())
		if _, ok := set[id]; ok {
			continue
		}
		src[pos] = id
		set[id] = pos
		s.insert(pos)
	}
	s.merge(src)
	want := make([]string, 0, len(set))
	for id := range set {
		want = append(want, id)
	}
	slices.Sort(want)
	got, more := s.page(0, len(want)+10)
	assert.False(t, more)
	require.Equal(t, want, src.ids(got))
	if len(want) > 150 {
		page, more := s.page(100, 50)
		assert.True(t, more)
		assert.Equal(t, want[100:150], src.ids(page))
	}
	page, more := s.page(len(want)-5, 50)
	assert.False(t, more)
	assert.Equal(t, want[len(want)-5:], src.ids(page))
	src = append(src, "")
	s.insert(uint32(len(src) - 1))
	assert.False(t, s.ready())
	snap, more := s.snapshotPage(src, 0, 2)
	assert.True(t, more)
	assert.Equal(t, []string{"", want[0]}, src.ids(snap))
	s.merge(src)
	first, _ := s.page(0, 1)
	assert.Equal(t, []string{""}, src.ids(first))
}
