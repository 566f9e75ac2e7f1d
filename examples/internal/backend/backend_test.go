package backend

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
)

func TestOpenChoosesTheStore(t *testing.T) {
	none := func(string) string { return "" }
	s, err := (&Flags{}).Open(none)
	require.NoError(t, err)
	assert.IsType(t, &memory.Transport{}, s.Transport)
	assert.Contains(t, s.Desc, "in-memory")
	views := filepath.Dir(s.ViewPath("x"))
	assert.DirExists(t, views)
	require.NoError(t, s.Close())
	assert.NoDirExists(t, views, "a memory run leaves no files behind")

	s, err = (&Flags{API: "http://127.0.0.1:8080", Views: t.TempDir()}).Open(none)
	require.NoError(t, err)
	assert.IsType(t, &serialized.Client{}, s.Transport)
	assert.Contains(t, s.Desc, "http://127.0.0.1:8080")
	assert.Contains(t, s.ViewPath("orders"), "127-0-0-1-8080.orders.db")
	require.NoError(t, s.Close())

	env := map[string]string{"SERIALIZED_ACCESS_KEY": "k", "SERIALIZED_SECRET_ACCESS_KEY": "s"}
	s, err = (&Flags{Views: t.TempDir()}).Open(func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Contains(t, s.Desc, serialized.DefaultBaseURL, "keys alone mean the hosted service")
	require.NoError(t, s.Close())

	_, err = (&Flags{API: "ftp://nope"}).Open(none)
	assert.Error(t, err)
	_, err = (&Flags{API: "http://x", Data: "y"}).Open(none)
	assert.Error(t, err)
}

func TestDataKeepsEventsInAFile(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "shop.db")
	s, err := (&Flags{Data: data}).Open(func(string) string { return "" })
	require.NoError(t, err)
	assert.IsType(t, &bolt.Transport{}, s.Transport)
	assert.Equal(t, filepath.Join(dir, "shop.orders.db"), s.ViewPath("orders"))
	f, err := s.Feeder()
	require.NoError(t, err)
	_, err = f.FeedHead(context.Background(), transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, err = os.Stat(data)
	assert.NoError(t, err)
}
