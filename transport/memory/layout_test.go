package memory

import (
	"reflect"
	"testing"
	"unsafe"

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
// truncated length. The events only claim the size: checkSize reads
// lengths, never bytes.
func TestABatchTooLargeForABlockIsRefused(t *testing.T) {
	var b [1]byte
	huge := unsafe.Slice(&b[0], maxBatchBytes/2)
	ref := transport.Ref{Type: "order", ID: "o-1"}
	require.NoError(t, checkSize("store", ref, []transport.Event{{EventType: "Placed", Data: huge}}))
	err := checkSize("store", ref, []transport.Event{{EventType: "Placed", Data: huge}, {EventType: "Placed", Data: huge}})
	require.ErrorIs(t, err, transport.ErrInvalid)
}
