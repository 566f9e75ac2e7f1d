package memory

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSortedIDsKeepsOrder(t *testing.T) {
	var s sortedIDs
	set := map[string]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		id := fmt.Sprintf("%08x", rng.Uint32())
		if set[id] {
			continue
		}
		set[id] = true
		s.insert(id)
	}
	i := 0
	for id := range set {
		if i%3 == 0 {
			s.remove(id)
			delete(set, id)
		}
		i++
	}
	s.merge()
	want := make([]string, 0, len(set))
	for id := range set {
		want = append(want, id)
	}
	slices.Sort(want)
	got, more := s.page(0, len(want)+10)
	assert.False(t, more)
	require.Equal(t, want, got)
	page, more := s.page(100, 50)
	assert.True(t, more)
	assert.Equal(t, want[100:150], page)
	page, more = s.page(len(want)-5, 50)
	assert.False(t, more)
	assert.Equal(t, want[len(want)-5:], page)
	s.insert("00000000")
	assert.False(t, s.ready())
	s.merge()
	first, _ := s.page(0, 1)
	assert.Equal(t, []string{"00000000"}, first)
}
