package wire

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// encodeSame checks both encoders for one event: they fail where
// json.Marshal fails (data that is not JSON), and otherwise write a body
// that means what json.Marshal's means, with the event's data byte for byte
// as given.
func encodeSame(t *testing.T, e transport.Event, expected *Version) {
	t.Helper()
	events := []transport.Event{e, {EventType: "Second", Data: json.RawMessage(`{"n":2}`)}}
	sr := StoreRequest{Events: events, ExpectedVersion: expected}
	want, wantErr := json.Marshal(sr)
	got, gotErr := EncodeStoreRequest(sr)
	require.Equal(t, wantErr == nil, gotErr == nil, "store request error for %#v: %v / %v", e, wantErr, gotErr)
	if wantErr == nil {
		sameMeaning(t, want, got)
		var back StoreRequest
		require.NoError(t, DecodeStoreRequest(got, &back))
		var wantBack StoreRequest
		require.NoError(t, json.Unmarshal(want, &wantBack))
		sameEvents(t, events, wantBack.Events, back.Events)
		assert.Equal(t, wantBack.ExpectedVersion, back.ExpectedVersion)
	}

	lr := LoadResponse{AggregateID: e.EventID, AggregateType: e.EventType, AggregateVersion: 3, Events: events, HasMore: true}
	want, wantErr = json.Marshal(lr)
	got, gotErr = EncodeLoadResponse(lr)
	require.Equal(t, wantErr == nil, gotErr == nil, "load response error for %#v: %v / %v", e, wantErr, gotErr)
	if wantErr == nil {
		sameMeaning(t, want, got)
		var back LoadPage
		require.NoError(t, DecodeLoadPage(got, &back))
		var wantBack LoadPage
		require.NoError(t, json.Unmarshal(want, &wantBack))
		sameEvents(t, events, wantBack.Events, back.Events)
	}

	br := BulkRequest{Batches: []BulkBatch{{AggregateID: e.EventID, Events: events, ExpectedVersion: expected}}}
	want, wantErr = json.Marshal(br)
	got, gotErr = EncodeBulkRequest(br)
	require.Equal(t, wantErr == nil, gotErr == nil, "bulk request error for %#v: %v / %v", e, wantErr, gotErr)
	if wantErr == nil {
		sameMeaning(t, want, got)
	}
}

// sameMeaning checks that two bodies decode to the same JSON values.
func sameMeaning(t *testing.T, want, got []byte) {
	t.Helper()
	decode := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		require.NoError(t, d.Decode(&v), "%s", b)
		return v
	}
	assert.Equal(t, decode(want), decode(got), "same meaning: %s / %s", want, got)
}

// sameEvents checks decoded events: strings as encoding/json decodes them,
// data byte for byte as sent.
func sameEvents(t *testing.T, sent, want, got []transport.Event) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range got {
		assert.Equal(t, want[i].EventID, got[i].EventID)
		assert.Equal(t, want[i].EventType, got[i].EventType)
		assert.Equal(t, want[i].EncryptedData, got[i].EncryptedData)
		assert.Equal(t, string(sent[i].Data), string(got[i].Data), "data byte for byte")
	}
}

var encodeInputs = []transport.Event{
	{EventID: "9b2f3c1e-0d6a-4c1e-8f0e-2f6d1a0b7c55", EventType: "OrderPlaced", Data: json.RawMessage(`{"sku":"a-1","qty":2}`)},
	{EventType: "A"},
	{EventType: "", Data: json.RawMessage(`1`)},
	{EventType: "T", Data: json.RawMessage(`{"title":"Printer on fire","n":[1,2,{"x":null}]}`)},
	{EventType: "T", Data: json.RawMessage(`{ "spaced" : 1 }`)},
	{EventType: "T", Data: json.RawMessage("{\"a\":\n1}")},
	{EventType: "T", Data: json.RawMessage(`{"html":"<b>&amp;</b>"}`)},
	{EventType: "T", Data: json.RawMessage(`{"esc":"a\"b\\c\u003c\n"}`)},
	{EventType: "T", Data: json.RawMessage(`{"utf8":"café"}`)},
	{EventType: "T", Data: json.RawMessage("{\"line\":\"\u2028\"}")},
	{EventType: "T", Data: json.RawMessage(`{"broken":`)},
	{EventType: "T", Data: json.RawMessage(`not json`)},
	{EventType: "T", Data: json.RawMessage(`{"a":1} {"b":2}`)},
	{EventType: "T", Data: json.RawMessage(`{"a":[1,2,]}`)},
	{EventType: "T", Data: json.RawMessage(`"bad \x escape"`)},
	{EventType: "T", Data: json.RawMessage(`"\u00e9\/\b"`)},
	{EventType: "T", Data: json.RawMessage(`01`)},
	{EventType: "T", Data: json.RawMessage(`-0.5E+10`)},
	{EventType: "T", Data: json.RawMessage(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`)},
	{EventType: "a\"b"},
	{EventType: "a<b"},
	{EventType: "tab\there"},
	{EventType: "caf\u00e9"},
	{EventType: "\xff"},
	{EventType: "T", EncryptedData: "c2VjcmV0+/="},
	{EventType: "T", EncryptedData: "with space & more"},
	{EventType: "T", Data: json.RawMessage("  {\"padded\":true}\n")},
	{EventType: "T", Data: json.RawMessage("[1, 2 ,3 ]")},
	{EventType: "T", Data: json.RawMessage(`{"big":123456789012345678901234567890,"f":1.50,"e":1E+2}`)},
	{EventType: "T", Data: json.RawMessage(`{"dup":1,"dup":2}`)},
	{EventType: "T", Data: json.RawMessage(`{"nul":"\u0000"}`), EncryptedData: "<b>&amp;</b>\u2028"},
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	v := Version(0)
	for _, e := range encodeInputs {
		encodeSame(t, e, nil)
		encodeSame(t, e, &v)
	}
	got, err := EncodeLoadResponse(LoadResponse{AggregateID: "x", AggregateType: "t"})
	require.NoError(t, err)
	want, _ := json.Marshal(LoadResponse{AggregateID: "x", AggregateType: "t"})
	assert.Equal(t, string(want), string(got), "nil events")
	got, err = EncodeBulkRequest(BulkRequest{})
	require.NoError(t, err)
	want, _ = json.Marshal(BulkRequest{})
	assert.Equal(t, string(want), string(got), "nil batches")
}

func FuzzEncode(f *testing.F) {
	for _, e := range encodeInputs {
		f.Add(e.EventID, e.EventType, []byte(e.Data), e.EncryptedData, int64(3))
	}
	f.Fuzz(func(t *testing.T, id, typ string, data []byte, encrypted string, version int64) {
		v := Version(version)
		encodeSame(t, transport.Event{EventID: id, EventType: typ, Data: data, EncryptedData: encrypted}, &v)
	})
}

// The fast path must be taken for what the repository records: one
// allocation, the body itself (json.Marshal makes more).
func TestEncodeTakesTheFastPathForTypicalBodies(t *testing.T) {
	v := Version(7)
	sr := StoreRequest{Events: encodeInputs[:1], ExpectedVersion: &v}
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = EncodeStoreRequest(sr) }))
	lr := LoadResponse{AggregateID: "2c3cf88c-ee88-427e-818a-ab0267511c84", AggregateType: "order", Events: encodeInputs[:1]}
	assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _, _ = EncodeLoadResponse(lr) }))
}
