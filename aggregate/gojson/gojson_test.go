package gojson_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/aggregate/gojson"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

type Line struct {
	SKU string  `json:"sku"`
	Qty int     `json:"qty"`
	Net float64 `json:"net,omitempty"`
}

// Shape is an event with the kinds of fields events have.
type Shape struct {
	ID       string            `json:"id"`
	Count    int               `json:"count"`
	Big      int64             `json:"big"`
	Ratio    float64           `json:"ratio"`
	OK       bool              `json:"ok"`
	Note     *string           `json:"note,omitempty"`
	Tags     []string          `json:"tags"`
	Lines    []Line            `json:"lines"`
	Attrs    map[string]string `json:"attrs"`
	Raw      json.RawMessage   `json:"raw,omitempty"`
	Skipped  string            `json:"-"`
	Untagged string
}

// decodeBoth decodes data with both codecs and says whether they agree:
// the same value, or both an error.
func decodeBoth(t *testing.T, data []byte) {
	t.Helper()
	var want, got Shape
	errWant := json.Unmarshal(data, &want)
	errGot := gojson.Codec{}.Unmarshal(data, &got)
	if errWant != nil {
		assert.Error(t, errGot, "encoding/json refuses %q; so must the codec", data)
		return
	}
	require.NoError(t, errGot, "encoding/json accepts %q; so must the codec", data)
	assert.Equal(t, want, got, "input %q", data)
}

var seeds = []string{
	`{"id":"a","count":3,"big":9007199254740993,"ratio":0.1,"ok":true,"note":"hi","tags":["x","y"],"lines":[{"sku":"s","qty":2,"net":1.5}],"attrs":{"k":"v"},"raw":{"any":[1,2]},"Untagged":"u"}`,
	`{"ID":"case","COUNT":4}`,
	`{"id":"åäö \u00e9 \ud83d\ude00 \"q\" \\ \/","tags":[]}`,
	`{"count":1.5}`,
	`{"count":"1"}`,
	`{"ok":"true"}`,
	`{"tags":null,"attrs":null,"note":null}`,
	`{"id":"a","id":"b"}`,
	`{"unknown":{"deep":[1,{"x":null}]},"count":2}`,
	`{"big":1e3}`,
	`{"count":99999999999999999999}`,
	`{"id":"a"`,
	`{"id":"a"} trailing`,
	`{"id":'a'}`,
	`[]`,
	`null`,
	`{"lines":[{"qty":-1}],"-":"x"}`,
	`  {"ratio": -0.0 }  `,
	`{"id":"\ud800"}`,
	"{\"id\":\"bad \xff byte\"}",
}

func TestDecodesLikeEncodingJSON(t *testing.T) {
	for _, s := range seeds {
		decodeBoth(t, []byte(s))
	}
}

func TestEncodesLikeEncodingJSON(t *testing.T) {
	note := "<b>&</b>"
	for _, v := range []Shape{
		{},
		{ID: "x", Count: -3, Big: 1 << 60, Ratio: 1e-9, OK: true, Note: &note, Tags: []string{"a"}, Lines: []Line{{SKU: "s", Qty: 1}},
			Attrs: map[string]string{"b": "2", "a": "1"}, Raw: json.RawMessage(`{"z":1}`), Skipped: "no", Untagged: "yes"},
	} {
		want, err := json.Marshal(v)
		require.NoError(t, err)
		got, err := gojson.Codec{}.Marshal(v)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(got))
		var back Shape
		require.NoError(t, json.Unmarshal(got, &back), "encoding/json reads what the codec wrote")
	}
}

func FuzzDecodesLikeEncodingJSON(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { decodeBoth(t, data) })
}

type basket struct{ Items int }

type ItemAdded struct {
	Quantity int `json:"quantity"`
}

// Events written with one codec load with the other: they are the same
// JSON.
func TestCodecsShareTheStore(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	plain := aggregate.MustNew[basket]("basket", aggregate.On(func(b *basket, e ItemAdded) { b.Items += e.Quantity }))
	fast := aggregate.MustNew[basket]("basket", aggregate.WithCodec[basket](gojson.Codec{}), aggregate.On(func(b *basket, e ItemAdded) { b.Items += e.Quantity }))
	id := uuid.NewString()
	_, err := repository.New(tr, plain).Create(ctx, id, func(r *aggregate.Root[basket]) error { return r.Record(ItemAdded{Quantity: 2}) })
	require.NoError(t, err)
	_, err = repository.New(tr, fast).Update(ctx, id, func(r *aggregate.Root[basket]) error { return r.Record(ItemAdded{Quantity: 3}) })
	require.NoError(t, err)
	for _, def := range []*aggregate.Definition[basket]{plain, fast} {
		root, err := repository.New(tr, def).Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, 5, root.State().Items)
	}
	_, err = aggregate.New[basket]("basket", aggregate.WithCodec[basket](nil))
	assert.ErrorIs(t, err, aggregate.ErrDefinition)
}
