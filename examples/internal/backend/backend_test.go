package backend

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
)

func TestOpenChoosesTheStore(t *testing.T) {
	none := func(string) string { return "" }
	tr, desc, err := (&Flags{}).Open(none)
	require.NoError(t, err)
	assert.IsType(t, &memory.Transport{}, tr)
	assert.Contains(t, desc, "in-memory")

	tr, desc, err = (&Flags{API: "http://127.0.0.1:8080"}).Open(none)
	require.NoError(t, err)
	assert.IsType(t, &serialized.Client{}, tr)
	assert.Contains(t, desc, "http://127.0.0.1:8080")

	env := map[string]string{"SERIALIZED_ACCESS_KEY": "k", "SERIALIZED_SECRET_ACCESS_KEY": "s"}
	_, desc, err = (&Flags{}).Open(func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Contains(t, desc, serialized.DefaultBaseURL, "keys alone mean the hosted service")

	_, _, err = (&Flags{API: "ftp://nope"}).Open(none)
	assert.Error(t, err)
}
