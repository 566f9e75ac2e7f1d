package memory

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// TestIDTableAgainstAMap puts, finds and removes ids across several
// growths (and during the moves that follow them) and checks every answer
// against a map.
func TestIDTableAgainstAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 1))
	tab := newIDTable()
	model := map[idKey]uint32{}
	var keys []idKey
	check := func() {
		for _, k := range keys {
			pos, ok := tab.get(k)
			want, in := model[k]
			if ok != in || pos != want {
				t.Fatalf("key %x: got %d %v, want %d %v", k, pos, ok, want, in)
			}
		}
		require.Equal(t, len(model), tab.n)
	}
	for round := range 20 {
		for range 500 + rng.IntN(3000) {
			k := idKey{rng.Uint64(), rng.Uint64()}
			keys = append(keys, k)
			pos := uint32(len(keys))
			tab.put(k, pos)
			model[k] = pos
		}
		for range rng.IntN(300) {
			k := keys[rng.IntN(len(keys))]
			tab.remove(k)
			delete(model, k)
		}
		tab.remove(idKey{rng.Uint64(), 1}) // absent: no change
		if round%5 == 0 || (tab.old != nil && round%2 == 0) {
			check()
		}
	}
	check()
}

// TestIDTableGrowsWithoutAPause follows the table through 2^18 inserts: no
// insert copies more than movePerInsert slots of an old table (a Go map
// moves a whole table at once, and with uniformly hashed ids all its
// tables at about the same time), a move always ends before the next
// growth, and the table is never more than three quarters full.
func TestIDTableGrowsWithoutAPause(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 2))
	tab := newIDTable()
	growths := 0
	for i := range 1 << 18 {
		before, oldBefore, movedBefore := len(tab.cur), tab.old, tab.moved
		tab.put(idKey{rng.Uint64(), rng.Uint64()}, uint32(i))
		if len(tab.cur) != before {
			growths++
			if oldBefore != nil || tab.moved > movePerInsert {
				t.Fatalf("insert %d: grew during a move, or moved %d slots", i, tab.moved)
			}
		} else if oldBefore != nil {
			moved := tab.moved - movedBefore
			if tab.old == nil {
				moved = len(oldBefore) - movedBefore
			}
			if moved > movePerInsert {
				t.Fatalf("insert %d moved %d slots", i, moved)
			}
		}
		if tab.n*4 > len(tab.cur)*3 {
			t.Fatalf("insert %d: %d ids in %d slots", i, tab.n, len(tab.cur))
		}
	}
	require.Equal(t, 13, growths) // 64 slots to 2^19
}

// Ids that are UUIDs with capital letters are other aggregates than their
// lowercase forms: they go to the scope's map, not the table.
func TestScopeKeepsIDsThatDifferOnlyInCase(t *testing.T) {
	bt := &blockTable{}
	sc := newScope("order", bt)
	lower := uuid.NewString()
	upper := strings.ToUpper(lower)
	require.True(t, keyOf(lower).canon)
	require.False(t, keyOf(upper).canon)
	a, pa := sc.add(keyOf(lower), &arena{blocks: bt})
	b, pb := sc.add(keyOf(upper), &arena{blocks: bt})
	require.NotEqual(t, pa, pb)
	got, _ := sc.find(keyOf(lower))
	require.Same(t, a, got)
	got, _ = sc.find(keyOf(upper))
	require.Same(t, b, got)
	sc.remove(keyOf(upper), pb)
	got, _ = sc.find(keyOf(upper))
	require.Nil(t, got)
	got, _ = sc.find(keyOf(lower))
	require.Same(t, a, got)
	for _, bad := range []string{"", "not-a-uuid", lower[:35] + "g", strings.ReplaceAll(lower, "-", "x")} {
		require.False(t, keyOf(bad).canon, bad)
	}
}

// Buffers of small batches come from shared blocks; each holds exactly its
// bytes, so a buffer never runs into the next one's.
func TestArenaBuffersDoNotOverlap(t *testing.T) {
	bt := &blockTable{}
	a := arena{blocks: bt}
	var refs []bref
	for i := range 100 {
		n := 1 + i*37%arenaMax
		r, b := a.alloc(n)
		require.Empty(t, b)
		require.Equal(t, n, cap(b))
		for range n {
			b = append(b, byte(i))
		}
		refs = append(refs, r)
	}
	big, b := a.alloc(arenaMax + 1)
	require.Equal(t, arenaMax+1, cap(b))
	require.NotEqual(t, a.cur, big.block, "a large buffer has a block of its own")
	for i, r := range refs {
		got := bt.bytes(r)
		require.Len(t, got, 1+i*37%arenaMax)
		for _, c := range got {
			require.Equal(t, byte(i), c)
		}
	}
}

// A block is released when the last buffer in it is, except the block an
// arena is still filling; its number is then reused for a new block.
func TestBlocksAreReleasedWithTheirLastBuffer(t *testing.T) {
	bt := &blockTable{}
	a := arena{blocks: bt}
	var refs []bref
	for range 3 * (arenaBlock / 100) { // three blocks' worth
		r, b := a.alloc(100)
		_ = append(b, make([]byte, 100)...)
		refs = append(refs, r)
	}
	big, _ := a.alloc(arenaMax + 1)
	require.Equal(t, 1+4, len(bt.bufs), "three shared blocks and a large one, after number 0")
	held := func() (n int) {
		for _, b := range bt.bufs {
			if b != nil {
				n++
			}
		}
		return n
	}
	bt.unref(big.block)
	require.Equal(t, 3, held())
	for _, r := range refs {
		bt.unref(r.block)
	}
	require.Equal(t, 1, held(), "only the block the arena fills is kept")
	require.NotNil(t, bt.bufs[a.cur])
	require.Equal(t, 3, len(bt.free))
	r, _ := a.alloc(arenaMax + 1)
	require.Less(t, int(r.block), len(bt.bufs), "a released number is reused")
	require.Equal(t, 5, len(bt.bufs))
}

// TestIDTableGetDuringAMove looks ids up after every insert while moves
// are under way (no removes, which finish a move first): every id put is
// found with its position, whether its slot of the old table is copied
// yet or not, and ids never put are not.
func TestIDTableGetDuringAMove(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 3))
	tab := newIDTable()
	var keys []idKey
	moving := 0
	for n := range 20000 {
		k := idKey{rng.Uint64(), rng.Uint64()}
		keys = append(keys, k)
		tab.put(k, uint32(n))
		if tab.old == nil {
			continue
		}
		moving++
		// The newest, the oldest, and a few at random (all of them now
		// and then).
		check := []int{n, 0, rng.IntN(n + 1), rng.IntN(n + 1)}
		if n%97 == 0 {
			check = check[:0]
			for i := range keys {
				check = append(check, i)
			}
		}
		for _, i := range check {
			pos, ok := tab.get(keys[i])
			if !ok || pos != uint32(i) {
				t.Fatalf("after %d inserts (%d of %d old slots moved): id %d got %d %v", n+1, tab.moved, len(tab.old), i, pos, ok)
			}
		}
		_, ok := tab.get(idKey{rng.Uint64(), rng.Uint64()})
		require.False(t, ok)
	}
	require.Greater(t, moving, 10000, "most lookups ran during a move")
}
