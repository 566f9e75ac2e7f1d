package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

func TestAppendEventWritesDataByteForByte(t *testing.T) {
	for _, e := range []transport.Event{
		{EventType: "A"},
		{EventID: "5f1c6b9e-7c1a-4e0e-9a43-3c2c3b1f3f10", EventType: "A", Data: json.RawMessage(`{"a":1}`), EncryptedData: "xyz"},
		{EventType: "A", Data: json.RawMessage(`{"a": 1}`)},
		{EventType: "A<b>", Data: json.RawMessage(` "<b>&amp;</b>` + "\u2028" + `"` + "\n"), EncryptedData: "<&>"},
	} {
		got, err := AppendEvent([]byte("x"), &e)
		require.NoError(t, err)
		require.Equal(t, byte('x'), got[0])
		var back transport.Event
		require.NoError(t, json.Unmarshal(got[1:], &back), string(got))
		if len(e.Data) > 0 {
			assert.Contains(t, string(got), `"data":`+string(e.Data), "data byte for byte")
		}
		assert.Equal(t, e.EventType, back.EventType)
		assert.Equal(t, e.EventID, back.EventID)
		assert.Equal(t, e.EncryptedData, back.EncryptedData)
	}
	_, err := AppendEvent(nil, &transport.Event{EventType: "A", Data: json.RawMessage(`{nope`)})
	assert.Error(t, err)
	for _, s := range []string{"plain", `q"uote`, "<&>", "\u2028"} {
		want, _ := json.Marshal(s)
		assert.Equal(t, string(want), string(AppendString(nil, s)))
	}
}
