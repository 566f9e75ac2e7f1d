package repository

import (
	"encoding/json"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
)

type plainInner struct {
	N float32 `json:"n,omitempty"`
	S string
}

type plainOne struct {
	ID    string `json:"id"`
	Count int64  `json:"count,omitempty"`
	Big   uint64
	F     float64
	OK    bool
	In    plainInner
}

type taggedOut struct {
	A string
	B string `json:"-"`
}

type sameName struct {
	A string `json:"x"`
	B string `json:"X"`
}

type asString struct {
	N int `json:",string"`
}

type withTime struct{ At time.Time }

type withSlice struct{ L []int }

type embedded struct {
	plainInner
}

// probe checks the fast answer for v against the round trip.
func probe[E any](t *testing.T, v E, plain bool) {
	t.Helper()
	def := aggregate.MustNew[struct{}]("probe", aggregate.On(func(*struct{}, E) {}))
	name := reflect.TypeFor[E]().Name()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	r := &Repository[struct{}]{def: def, plain: &sync.Map{}}
	e := aggregate.Recorded{EventID: "x", EventType: name, Data: data, Value: v}
	got := r.plainAsRecorded(e)
	assert.Equal(t, plain, got, "%s %+v", name, v)
	if got {
		decoded, err := def.Decode(name, data)
		require.NoError(t, err)
		assert.Empty(t, jsonDiff(reflect.ValueOf(any(v)), reflect.ValueOf(decoded), name), name)
		assert.Equal(t, any(v), decoded, name)
	}
}

// The fast answer never says "as recorded" where the round trip says
// otherwise, and says it for the plain shapes.
func TestPlainAgreesWithTheRoundTrip(t *testing.T) {
	probe(t, plainOne{ID: "a<b>&\u2028", Count: math.MaxInt64, Big: math.MaxUint64, F: 0.1 + 0.2, OK: true, In: plainInner{N: 1.1, S: "é"}}, true)
	probe(t, plainOne{F: math.SmallestNonzeroFloat64, Count: math.MinInt64, In: plainInner{N: math.MaxFloat32}}, true)
	probe(t, plainOne{ID: "bad \xff utf-8"}, false)
	probe(t, plainOne{In: plainInner{S: "\xc3"}}, false)
	probe(t, taggedOut{A: "a", B: "b"}, false)
	probe(t, sameName{A: "a", B: "b"}, false)
	probe(t, asString{N: 3}, false)
	probe(t, withTime{At: time.Now()}, false)
	probe(t, withSlice{L: []int{}}, false)
	probe(t, embedded{plainInner{S: "s"}}, false)
}
