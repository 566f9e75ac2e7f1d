package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/memory"
)

// withDB is a store that shows a bbolt database, as the bolt transport does.
type withDB struct {
	*memory.Transport
	db *bbolt.DB
}

func (s withDB) DB() *bbolt.DB { return s.db }

// TestHotBackup: GET /backup, behind the keys, streams a copy of the bbolt
// file taken while the server runs; the copy opens and holds the data.
func TestHotBackup(t *testing.T) {
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "live.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("orders"))
		if err != nil {
			return err
		}
		return b.Put([]byte("o-1"), []byte(`{"total":4200}`))
	}))
	store := withDB{Transport: memory.New(), db: db}
	keys := map[string]string{"SERIALIZED_ACCESS_KEY": "b-a", "SERIALIZED_SECRET_ACCESS_KEY": "b-s"}
	addr, logs, _, _ := startWith(t, hooks{open: func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		return store, func() {}, "bolt-like", nil
	}}, []string{"-addr", "127.0.0.1:0"}, keys)

	assert.Equal(t, http.StatusUnauthorized, do("GET", "http://"+addr+"/backup", "").status, "a backup needs the keys")
	copyPath := filepath.Join(dir, "copy.db")
	fetchBackup(t, addr, "b-a", "b-s", copyPath)
	cp, err := bbolt.Open(copyPath, 0o600, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer cp.Close()
	require.NoError(t, cp.View(func(tx *bbolt.Tx) error {
		assert.Equal(t, `{"total":4200}`, string(tx.Bucket([]byte("orders")).Get([]byte("o-1"))))
		return nil
	}))
	assert.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"backup"`) }, 10*time.Second, 10*time.Millisecond)
}

func fetchBackup(t *testing.T, addr, access, secret, path string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/backup", nil)
	require.NoError(t, err)
	req.Header.Set("Serialized-Access-Key", access)
	req.Header.Set("Serialized-Secret-Access-Key", secret)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = io.Copy(f, res.Body)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestHotBackupOfABoltStore: the same through the bolt transport, once it
// shows its database (DB).
func TestHotBackupOfABoltStore(t *testing.T) {
	if _, ok := any((*bolt.Transport)(nil)).(boltBacked); !ok {
		t.Skip("the bolt transport does not show its database (DB) yet")
	}
	dir := t.TempDir()
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0", "-data", filepath.Join(dir, "events.db")}, nil)
	id := "3a8c7e2e-1b6f-4c1e-9d3f-0b7c2f5e9a41"
	a := do("POST", "http://"+addr+"/aggregates/order/"+id+"/events", `{"events":[{"eventType":"OrderPlaced","data":{"total":4200}}],"expectedVersion":0}`)
	require.Equal(t, http.StatusOK, a.status, a.body)
	copyPath := filepath.Join(dir, "copy.db")
	fetchBackup(t, addr, "", "", copyPath)
	restored, err := bolt.Open(copyPath)
	require.NoError(t, err)
	defer restored.Close()
	page, err := restored.Load(context.Background(), transport.Ref{Type: "order", ID: id}, 0, 0)
	require.NoError(t, err)
	require.Len(t, page.Events, 1)
	assert.JSONEq(t, `{"total":4200}`, string(page.Events[0].Data))
}
