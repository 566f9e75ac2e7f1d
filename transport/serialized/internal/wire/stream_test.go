package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

func TestAppendEventAndStringMatchMarshal(t *testing.T) {
	for _, e := range []transport.Event{
		{EventType: "A"},
		{EventID: "5f1c6b9e-7c1a-4e0e-9a43-3c2c3b1f3f10", EventType: "A", Data: json.RawMessage(`{"a":1}`), EncryptedData: "xyz"},
		{EventType: "A", Data: json.RawMessage(`{"a": 1}`)},
		{EventType: "A<b>", Data: json.RawMessage(`"<b>&amp;</b>` + "\u2028" + `"`), EncryptedData: "\xff"},
	} {
		want, err := json.Marshal(e)
		require.NoError(t, err)
		got, err := AppendEvent([]byte("x"), &e)
		require.NoError(t, err)
		assert.Equal(t, "x"+string(want), string(got))
	}
	for _, s := range []string{"plain", `q"uote`, "<&>", "\u2028", "\xff"} {
		want, _ := json.Marshal(s)
		assert.Equal(t, string(want), string(AppendString(nil, s)))
	}
}
