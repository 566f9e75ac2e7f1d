package wire

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

const typicalPage = `{"aggregateId":"2c3cf88c-ee88-427e-818a-ab0267511c84","aggregateType":"order","aggregateVersion":3,` +
	`"events":[{"eventId":"9b2f3c1e-0d6a-4c1e-8f0e-2f6d1a0b7c55","eventType":"OrderPlaced","data":{"sku":"a-1","qty":2,"tags":["x",{"y":[1,2]}]}},` +
	`{"eventId":"1d0f3c1e-0d6a-4c1e-8f0e-2f6d1a0b7c56","eventType":"OrderPaid","data":{"amount":12.5},"encryptedData":"c2VjcmV0"}],"hasMore":true}`

const typicalStore = `{"events":[{"eventId":"9b2f3c1e-0d6a-4c1e-8f0e-2f6d1a0b7c55","eventType":"Counted","data":{"by":1}}],"expectedVersion":7}`

// decodeInputs are bodies that the fast path must either decode exactly as
// encoding/json does or hand over to it.
var decodeInputs = []string{
	typicalPage,
	typicalStore,
	`{"events":[],"expectedVersion":0}`,
	`{"events":[{"eventType":"A1","data":1}]}`,
	`{"aggregateVersion":1,"events":[],"hasMore":false}`,
	" \n{ \"aggregateVersion\" : 2 , \"events\" : [ { \"eventType\" : \"Xy1\" , \"data\" : [ 1 , \"]}\" , { } ] } ] , \"hasMore\" : false } \t",
	`{"aggregateVersion":1,"events":[{"eventType":"A","data":"a \"quoted\" }] string"}]}`,
	`{"aggregateVersion":1,"events":[{"eventType":"A","data":{"k":"\\"}}]}`,
	`{"aggregateVersion":1,"events":[{"eventType":"Caf\u00e9"}]}`,
	`{"aggregateVersion":1,"events":[{"eventType":"Café"}]}`,
	`{"aggregateVersion":1,"events":[{"eventType":"A\nB"}]}`,
	"{\"aggregateVersion\":1,\"events\":[{\"eventType\":\"\xff\"}]}",
	`{"aggregateVersion":1,"events":[{"eventType":"A","data":null}]}`,
	`{"aggregateVersion":1,"events":null}`,
	`{"aggregateVersion":1,"events":[null]}`,
	`{"aggregateVersion":null,"hasMore":null}`,
	`{"aggregateVersion":1e3}`,
	`{"aggregateVersion":1.0}`,
	`{"aggregateVersion":-0}`,
	`{"aggregateVersion":99999999999999999999}`,
	`{"aggregateVersion":"3"}`,
	`{"AggregateVersion":4}`,
	`{"aggregateVersion":1,"AGGREGATEVERSION":5}`,
	`{"events":[{"EventType":"A"}]}`,
	`{"events":[{"eventType":"A","eventType":"B"}]}`,
	`{"events":[{"eventType":"A"}],"events":[{"eventType":"B"},{"eventType":"C"}]}`,
	`{"events":[{"eventType":"0"}],"events":[{}]}`, // found by FuzzDecode: the second merges into the first
	`{"expectedVersion":"3","events":[]}`,
	`{"expectedVersion":null,"events":[]}`,
	`{"expectedVersion":3.5}`,
	`{"expectedVersion":3,"expectedVersion":4}`,
	`{"unknown":{"a":[1,{"b":"}"}]},"other":"x","n":-1.5e7,"t":true,"f":false,"z":null,"events":[]}`,
	`{"events":[{"eventType":"A","extra":{"nested":[{}]},"eventId":""}]}`,
	`{"hasMore":true}`,
	`{"hasMore":"true"}`,
	`{"events":{}}`,
	`{"events":"x"}`,
	`{"events":[1]}`,
	`{"events":[{"eventType":1}]}`,
	`{"events":[{"eventId":null}]}`,
	`{"k\u0065y":1}`,
	`{}`,
	`[]`,
	`null`,
	`""`,
	``,
	`{`,
	`{"events":[}`,
	`{"events":[]} trailing`,
	`{"events":[]}{}`,
	// The fast path checks what it skips and keeps: invalid JSON anywhere
	// goes to encoding/json for its error.
	`{"events":[{"eventType":"A","data":{"a":[1,2,]}}]}`,
	`{"events":[{"eventType":"A","data":{"a":1,}}]}`,
	`{"events":[{"eventType":"A","data":{"a" 1}}]}`,
	`{"events":[{"eventType":"A","data":{1:1}}]}`,
	`{"events":[{"eventType":"A","data":"bad \x escape"}]}`,
	`{"events":[{"eventType":"A","data":"\u12"}]}`,
	`{"events":[{"eventType":"A","data":"\u12zz"}]}`,
	`{"events":[{"eventType":"A","data":"\u00e9 ok"}]}`,
	"{\"events\":[{\"eventType\":\"A\",\"data\":\"tab\tinside\"}]}",
	"{\"events\":[{\"eventType\":\"A\",\"data\":\"\xff\xfe raw bytes\"}]}",
	`{"events":[{"eventType":"A","data":tru}]}`,
	`{"events":[{"eventType":"A","data":nul}]}`,
	`{"events":[{"eventType":"A","data":falsey}]}`,
	`{"events":[{"eventType":"A","data":-}]}`,
	`{"events":[{"eventType":"A","data":01}]}`,
	`{"events":[{"eventType":"A","data":1.}]}`,
	`{"events":[{"eventType":"A","data":1e}]}`,
	`{"events":[{"eventType":"A","data":-0.5E+10}]}`,
	`{"events":[{"eventType":"A","data":+1}]}`,
	`{"events":[{"eventType":"A","data":.5}]}`,
	`{"events":[{"eventType":"A","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}`,
	`{"events":[{"eventType":"A","data":{"x":[{"y":{"z":[true,false,null,"s",-1,2.5e-3]}}]}}],"expectedVersion":2}`,
	`{"aggregateVersion":1,"x":[1,2,],"events":[]}`,
	`{"aggregateVersion":1,"x":"\q","events":[]}`,
	`{"aggregateVersion":01,"events":[]}`,
	`{"events":[{"eventType":"A"},]}`,
	`{"events":[{"eventType":"A"}],}`,
	`{"events":[{"eventType":"A",}]}`,
	// Feed pages.
	typicalFeed,
	`{"entries":[],"hasMore":false,"currentSequenceNumber":0}`,
	`{"entries":null,"hasMore":true}`,
	`{"entries":[{"sequenceNumber":1,"aggregateId":"a\u0062","events":[{"eventType":"A","data": {"x":1} ,"encryptedData":"\u003cb\u003e"}]}]}`,
	`{"entries":[{"sequenceNumber":1,"events":[]}],"entries":[{"sequenceNumber":2}]}`,
	`{"entries":[{"sequenceNumber":1,"events":[],"events":[{"eventType":"B"}]}]}`,
	`{"entries":[{"sequenceNumber":"1"}]}`,
	`{"entries":[{"SequenceNumber":1}]}`,
	`{"entries":[{"sequenceNumber":1,"timestamp":1.5}]}`,
	`{"entries":[{"sequenceNumber":1,"feedName":null}]}`,
	`{"entries":[{"sequenceNumber":1,"other":[1,{"a":"}"}]}],"x":1}`,
	"{\"entries\":[{\"sequenceNumber\":1,\"events\":[{\"eventType\":\"A\",\"data\":\n  [1, 2 ,3 ]\n}]}]}",
	`{"entries":[{"sequenceNumber":1}],"currentSequenceNumber":-3,"hasMore":null}`,
}

const typicalFeed = `{"entries":[{"sequenceNumber":7,"aggregateId":"2c3cf88c-ee88-427e-818a-ab0267511c84","timestamp":1764640000000,` +
	`"feedName":"order","aggregateType":"order","aggregateVersion":2,"events":[{"eventId":"9b2f3c1e-0d6a-4c1e-8f0e-2f6d1a0b7c55",` +
	`"eventType":"OrderPlaced","data":{"sku":"a-1"}}]}],"hasMore":true,"currentSequenceNumber":9}`

// agree checks one input against encoding/json for both body types: the
// same result and error, but for the white space around event data, which
// the decoders keep.
func agree(t *testing.T, in []byte) {
	t.Helper()
	var want, got LoadPage
	wantErr := json.Unmarshal(in, &want)
	gotErr := DecodeLoadPage(in, &got)
	assert.Equal(t, wantErr, gotErr, "load page error for %q", in)
	trimData(got.Events)
	assert.Equal(t, want, got, "load page for %q", in)

	var wantS, gotS StoreRequest
	wantErr = json.Unmarshal(in, &wantS)
	gotErr = DecodeStoreRequest(in, &gotS)
	assert.Equal(t, wantErr, gotErr, "store request error for %q", in)
	trimData(gotS.Events)
	assert.Equal(t, wantS, gotS, "store request for %q", in)

	var wantF, gotF FeedResponse
	wantErr = json.Unmarshal(in, &wantF)
	gotErr = DecodeFeedResponse(in, &gotF)
	assert.Equal(t, wantErr, gotErr, "feed response error for %q", in)
	for i := range gotF.Entries {
		trimData(gotF.Entries[i].Events)
	}
	assert.Equal(t, wantF, gotF, "feed response for %q", in)
}

// trimData drops the white space around each event's data, as
// encoding/json does.
func trimData(events []transport.Event) {
	for i := range events {
		if d := events[i].Data; d != nil {
			events[i].Data = bytes.Trim(d, " \t\r\n")
		}
	}
}

func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range decodeInputs {
		agree(t, []byte(in))
	}
}

// The fast path must be taken for what the API and our client send;
// otherwise it is dead code and the bodies pay for reflection again.
func TestDecodeTakesTheFastPathForTypicalBodies(t *testing.T) {
	var p LoadPage
	d := decoder{data: []byte(typicalPage)}
	require.True(t, d.loadPage(&p))
	assert.Equal(t, int64(3), p.AggregateVersion)
	require.Len(t, p.Events, 2)
	assert.Equal(t, `{"sku":"a-1","qty":2,"tags":["x",{"y":[1,2]}]}`, string(p.Events[0].Data))
	assert.Equal(t, "c2VjcmV0", p.Events[1].EncryptedData)
	assert.True(t, p.HasMore)

	var r StoreRequest
	d = decoder{data: []byte(typicalStore)}
	require.True(t, d.storeRequest(&r))
	require.NotNil(t, r.ExpectedVersion)
	assert.Equal(t, Version(7), *r.ExpectedVersion)
	assert.Equal(t, "Counted", r.Events[0].EventType)

	// The decoded data must not share memory with the body, which the
	// server reuses for the next request.
	body := []byte(typicalStore)
	require.NoError(t, DecodeStoreRequest(body, &r))
	for i := range body {
		body[i] = 'x'
	}
	assert.Equal(t, `{"by":1}`, string(r.Events[0].Data))

	var f FeedResponse
	d = decoder{data: []byte(typicalFeed)}
	require.True(t, d.feedResponse(&f))
	require.Len(t, f.Entries, 1)
	assert.Equal(t, int64(7), f.Entries[0].SequenceNumber)
	assert.Equal(t, `{"sku":"a-1"}`, string(f.Entries[0].Events[0].Data))
	assert.Equal(t, int64(9), f.CurrentSequenceNumber)
}

// Data comes back with the bytes it went out with, white space and escapes
// included, also next to strings that need escapes (which once sent the
// whole body to encoding/json).
func TestDecodeKeepsDataByteForByte(t *testing.T) {
	for _, data := range []string{"  {\"padded\":true}\n", "[1, 2 ,3 ]", `{"a": 1}`, `{"html":"<b>&amp;</b>"}`,
		"{\"ls\":\"\u2028\"}", `{"esc":"\u00e9\/"}`} {
		sr := StoreRequest{Events: []transport.Event{{EventType: "A", Data: json.RawMessage(data), EncryptedData: "<b>\u2028</b>"}}}
		body, err := EncodeStoreRequest(sr)
		require.NoError(t, err)
		var back StoreRequest
		require.NoError(t, DecodeStoreRequest(body, &back))
		assert.Equal(t, data, string(back.Events[0].Data))
		assert.Equal(t, "<b>\u2028</b>", back.Events[0].EncryptedData)

		lr := LoadResponse{Events: sr.Events}
		body, err = EncodeLoadResponse(lr)
		require.NoError(t, err)
		var page LoadPage
		require.NoError(t, DecodeLoadPage(body, &page))
		assert.Equal(t, data, string(page.Events[0].Data))
	}
}

func FuzzDecode(f *testing.F) {
	for _, in := range decodeInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { agree(t, in) })
}

func BenchmarkDecodeLoadPage(b *testing.B) {
	body := []byte(typicalPage)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var p LoadPage
			if err := DecodeLoadPage(body, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var p LoadPage
			if err := json.Unmarshal(body, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
