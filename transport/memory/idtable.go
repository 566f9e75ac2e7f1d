package memory

import (
	"math/bits"
	"math/rand/v2"
)

// idTable maps aggregate ids to positions (the index of a stream in its
// scope's chunks). It is a hash table of its own rather than a Go map for
// two reasons, both about a store that keeps growing:
//
//   - Its slots hold no pointers (an id is kept as the 16 bytes of its
//     UUID), so the garbage collector never scans it however large it is.
//   - It grows without a pause: a Go map whose keys hash uniformly doubles
//     all its tables at about the same time (every id's table fills at once),
//     so one stretch of Creates pays for moving the whole index. Here, when
//     the table is three quarters full, a table twice its size takes the new
//     ids, and each insert moves two slots of the old table into it, so the
//     move is done well before the new table needs to grow in turn.
//
// Only lowercase UUIDs (the form uuid.NewString gives) are kept here: an id
// with capital letters names a different aggregate than its lowercase form
// but has the same 16 bytes, so those few go to a plain map (see
// scopeState.odd).
type idTable struct {
	seed  [2]uint64
	cur   []idSlot
	n     int // ids in cur and old together
	old   []idSlot
	moved int // slots of old already copied into cur
	// The farthest any id of cur (of old) was put from its home slot: an
	// upper bound (a remove only moves ids closer). A lookup whose every
	// possible slot in old lies below moved does not read old at all.
	curProbe, oldProbe int
}

// idSlot is one slot: an id's two halves and its position plus one (0 is
// an empty slot).
type idSlot struct {
	hi, lo uint64
	pos    uint32
}

// idKey is a lowercase UUID as two numbers.
type idKey struct{ hi, lo uint64 }

// movePerInsert is how many slots of the old table each insert copies. A
// move starts with the old table (C slots) three quarters full and a new
// one of 2C slots, which must grow in turn after 3C/4 more inserts: at two
// slots per insert the move ends after C/2 of them.
const movePerInsert = 2

// parseID returns the id as a key, or false if it is not a lowercase UUID.
func parseID(id string) (idKey, bool) {
	if len(id) != 36 {
		return idKey{}, false
	}
	var k idKey
	n := 0
	for i := 0; i < 36; i++ {
		c := id[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return idKey{}, false
			}
			continue
		}
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		default:
			return idKey{}, false
		}
		if n < 16 {
			k.hi = k.hi<<4 | uint64(v)
		} else {
			k.lo = k.lo<<4 | uint64(v)
		}
		n++
	}
	return k, true
}

func newIDTable() idTable {
	return idTable{seed: [2]uint64{rand.Uint64(), rand.Uint64()}, cur: make([]idSlot, 64)}
}

// hash mixes a key with the table's random seed (ids come from clients: a
// fixed hash would let one pick ids that collide).
func (t *idTable) hash(k idKey) uint64 {
	h, l := bits.Mul64(k.hi^t.seed[0], k.lo^t.seed[1])
	h, l = bits.Mul64(h^l^0x9e3779b97f4a7c15, t.seed[0]|1)
	return h ^ l
}

func find(tab []idSlot, h uint64, k idKey) (int, bool) {
	mask := len(tab) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := &tab[i]
		if s.pos == 0 {
			return i, false
		}
		if s.hi == k.hi && s.lo == k.lo {
			return i, true
		}
	}
}

// place puts s, whose key hashes to h and is not in cur, into cur.
func (t *idTable) place(h uint64, s idSlot) {
	i, _ := find(t.cur, h, idKey{s.hi, s.lo})
	t.cur[i] = s
	mask := len(t.cur) - 1
	if d := (i - int(h)&mask) & mask; d > t.curProbe {
		t.curProbe = d
	}
}

// get returns the position of k. During a move, an id of old whose slot
// was copied is found in cur; old is read only when k's slot there (at
// most oldProbe past its home) may not be copied yet: for about half the
// lookups of a move, one random read of a large table fewer.
func (t *idTable) get(k idKey) (uint32, bool) {
	h := t.hash(k)
	if i, ok := find(t.cur, h, k); ok {
		return t.cur[i].pos - 1, true
	}
	if t.old != nil && int(h)&(len(t.old)-1)+t.oldProbe >= t.moved {
		if i, ok := find(t.old, h, k); ok {
			return t.old[i].pos - 1, true
		}
	}
	return 0, false
}

// put adds k, which must not be in the table, at position pos.
func (t *idTable) put(k idKey, pos uint32) {
	if (t.n+1)*4 > len(t.cur)*3 {
		// Cannot happen while a move is under way (see movePerInsert);
		// finishing it first keeps the table sound if it did.
		t.move(len(t.old) - t.moved)
		t.old, t.moved, t.oldProbe = t.cur, 0, t.curProbe
		t.cur, t.curProbe = make([]idSlot, 2*len(t.cur)), 0
	}
	t.place(t.hash(k), idSlot{hi: k.hi, lo: k.lo, pos: pos + 1})
	t.n++
	t.move(movePerInsert)
}

// move copies up to n slots of the old table into the current one.
func (t *idTable) move(n int) {
	for ; n > 0 && t.old != nil; n-- {
		if s := t.old[t.moved]; s.pos != 0 {
			t.place(t.hash(idKey{s.hi, s.lo}), s)
		}
		t.moved++
		if t.moved == len(t.old) {
			t.old = nil
		}
	}
}

// remove drops k if present. Deletes are rare: a move under way is
// finished first, then the slot is emptied by shifting back the slots
// after it that would otherwise no longer be found.
func (t *idTable) remove(k idKey) {
	if t.old != nil {
		t.move(len(t.old) - t.moved)
	}
	i, ok := find(t.cur, t.hash(k), k)
	if !ok {
		return
	}
	t.n--
	mask := len(t.cur) - 1
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		s := t.cur[j]
		if s.pos == 0 {
			break
		}
		home := int(t.hash(idKey{s.hi, s.lo})) & mask
		// s may move to i if i lies on its probe path: from home to j.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.cur[i] = s
			i = j
		}
	}
	t.cur[i] = idSlot{}
}
