package memory

import (
	"context"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// pointers returns the paths to the Go pointers a value of type t holds
// (strings, slices, maps, interfaces, funcs, channels and pointers all
// are, for the collector).
func pointers(t reflect.Type, path string) []string {
	switch t.Kind() {
	case reflect.Array:
		if t.Len() == 0 {
			return nil
		}
		return pointers(t.Elem(), path+"[i]")
	case reflect.Struct:
		var out []string
		for i := range t.NumField() {
			f := t.Field(i)
			out = append(out, pointers(f.Type, path+"."+f.Name)...)
		}
		return out
	case reflect.Pointer, reflect.UnsafePointer, reflect.String, reflect.Slice, reflect.Map,
		reflect.Chan, reflect.Func, reflect.Interface:
		return []string{path + " (" + t.String() + ")"}
	}
	return nil
}

// TestPerAggregateStorageHoldsNoPointers checks that what the store keeps
// per aggregate holds no Go pointer (issue 20): the elements of a scope's
// stream chunks, of its sorted ids for List, of its id table, and of the
// feed. A full collection then marks nothing per aggregate; with a string,
// a slice and a time.Time per stream it chased several pointers per
// aggregate, ~70 ms at a million aggregates.
func TestPerAggregateStorageHoldsNoPointers(t *testing.T) {
	var sc scopeState
	var f feedLog
	var x seqIndex
	for name, typ := range map[string]reflect.Type{
		"scope chunk element (stream)":  reflect.TypeOf(sc.chunks).Elem().Elem(),
		"batch":                         reflect.TypeOf(batch{}),
		"sorted ids chunk element":      reflect.TypeOf(sc.ids.chunks).Elem().Elem(),
		"sorted ids pending element":    reflect.TypeOf(sc.ids.pending).Elem().Elem(),
		"id table slot":                 reflect.TypeOf(sc.index.cur).Elem(),
		"feed block":                    reflect.TypeOf(f.blocks).Elem().Elem(),
		"type feed index block element": reflect.TypeOf(x.blocks).Elem().Elem(),
		"scope free positions element":  reflect.TypeOf(sc.free).Elem(),
		"block table reference counts":  reflect.TypeOf(blockTable{}.refs).Elem(),
	} {
		require.Empty(t, pointers(typ, typ.String()), "%s holds pointers", name)
	}
}

// A batch whose stored form would pass 4 GiB cannot be named by a bref
// (uint32 offsets and lengths): Store refuses it rather than keep a
// truncated length. (The check is given the size: a batch that large
// cannot be made in a test.)
func TestABatchTooLargeForABlockIsRefused(t *testing.T) {
	ref := transport.Ref{Type: "order", ID: "o-1"}
	require.NoError(t, checkSize("store", ref, maxBatchBytes))
	require.ErrorIs(t, checkSize("store", ref, maxBatchBytes+1), transport.ErrInvalid)
	events := []transport.Event{{EventType: "Placed", Data: []byte(`{"a":1}`)}, {EventType: "Paid", EncryptedData: "xyz"}}
	var a arena
	a.blocks = &blockTable{}
	b := encodeBatch(events, &a)
	require.Equal(t, encodedSize(events), int(b.buf.n), "the size checked is the size stored")
}

// TestBlockReferencesMatchTheStreams stores small, large and later batches,
// deletes aggregates and whole types at random, and after each round counts
// the references to each block that the stored streams and the two arenas
// hold: every block's count is exactly that, a block with none is
// released (and its number free for reuse), and none is released early.
func TestBlockReferencesMatchTheStreams(t *testing.T) {
	ctx := context.Background()
	tr := New()
	rng := rand.New(rand.NewPCG(7, 20))
	types := []string{"order", "item"}
	var refs []transport.Ref
	check := func(round int) {
		want := make([]int32, len(tr.blocks.bufs))
		count := func(r bref) {
			require.NotZero(t, r.block, "round %d: a stored buffer without a block", round)
			want[r.block]++
		}
		for _, sc := range tr.scopes {
			sc.each(func(s *stream) {
				count(s.id)
				count(s.first.buf)
				if s.more != 0 {
					for _, b := range sc.more[s.more] {
						count(b.buf)
					}
				}
			})
		}
		for _, a := range []*arena{&tr.arena, &tr.appends} {
			if a.cur != 0 {
				want[a.cur]++
			}
		}
		free := map[uint32]bool{}
		for _, b := range tr.blocks.free {
			require.False(t, free[b], "round %d: block %d freed twice", round, b)
			free[b] = true
		}
		for b := 1; b < len(want); b++ {
			require.Equal(t, want[b], tr.blocks.refs[b], "round %d: references to block %d", round, b)
			require.Equal(t, want[b] == 0, tr.blocks.bufs[b] == nil, "round %d: block %d released", round, b)
			require.Equal(t, want[b] == 0, free[uint32(b)], "round %d: block %d's number free", round, b)
		}
	}
	for round := range 30 {
		for range 200 {
			switch op := rng.IntN(10); {
			case op < 6 || len(refs) == 0:
				ref := transport.Ref{Type: types[rng.IntN(2)], ID: uuid.NewString()}
				if len(refs) > 0 && rng.IntN(2) == 0 {
					ref = refs[rng.IntN(len(refs))] // a later batch
				} else {
					refs = append(refs, ref)
				}
				data := []byte(`{"n":1}`)
				if rng.IntN(8) == 0 {
					data = []byte(`"` + strings.Repeat("x", arenaMax) + `"`) // a block of its own
				}
				require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "Noted", Data: data}}, transport.Any))
			case op < 9:
				i := rng.IntN(len(refs))
				target := transport.DeleteAggregate(refs[i])
				tok, err := tr.RequestDelete(ctx, target)
				require.NoError(t, err)
				require.NoError(t, tr.ConfirmDelete(ctx, target, tok))
				refs = slices.Delete(refs, i, i+1)
			default:
				typ := types[rng.IntN(2)]
				target := transport.DeleteAllOfType(transport.Scope{Type: typ})
				tok, err := tr.RequestDelete(ctx, target)
				require.NoError(t, err)
				require.NoError(t, tr.ConfirmDelete(ctx, target, tok))
				refs = slices.DeleteFunc(refs, func(r transport.Ref) bool { return r.Type == typ })
			}
		}
		check(round)
	}
}
