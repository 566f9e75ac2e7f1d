package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, env(map[string]string{
			"SERIALIZED_ACCESS_KEY": "k-123", "SERIALIZED_SECRET_ACCESS_KEY": "s-very-secret-456",
		}), logs, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready")
	}

	req, err := http.NewRequest("HEAD", "http://"+addr+"/aggregates/order/"+uuid.NewString(), nil)
	require.NoError(t, err)
	req.Header.Set("Serialized-Access-Key", "k-123")
	req.Header.Set("Serialized-Secret-Access-Key", "s-very-secret-456")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 404, res.StatusCode)

	res, err = http.Head("http://" + addr + "/aggregates/order/" + uuid.NewString())
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 401, res.StatusCode, "keys are required once set")

	cancel()
	require.NoError(t, <-done)
	out := logs.String()
	assert.Contains(t, out, "sourced-server ready")
	assert.Contains(t, out, addr)
	assert.Contains(t, out, `"status":404`)
	assert.Contains(t, out, "stopped")
	assert.NotContains(t, out, "s-very-secret-456", "the secret never reaches the log")
	assert.NotContains(t, out, "k-123")
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"unknown flag":   {[]string{"-nope"}, nil},
		"bad log level":  {[]string{"-log-level", "loud"}, nil},
		"extra argument": {[]string{"serve"}, nil},
		"half the keys":  {[]string{"-addr", "127.0.0.1:0"}, map[string]string{"SERIALIZED_ACCESS_KEY": "k"}},
		"bad address":    {[]string{"-addr", "256.0.0.1:99999"}, nil},
	} {
		err := run(ctx, c.args, env(c.env), &syncBuffer{}, nil)
		assert.Error(t, err, name)
	}
}

func TestRunWarnsWithoutKeys(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, env(nil), logs, ready) }()
	<-ready
	cancel()
	require.NoError(t, <-done)
	assert.True(t, strings.Contains(logs.String(), "accepting every request"))
}

func TestRunKeepsDataInAFile(t *testing.T) {
	path := t.TempDir() + "/events.db"
	serve := func(do func(addr string)) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", path}, env(nil), &syncBuffer{}, ready)
		}()
		select {
		case addr := <-ready:
			do(addr)
		case err := <-done:
			t.Fatal(err)
		}
		cancel()
		require.NoError(t, <-done)
	}
	id := uuid.NewString()
	serve(func(addr string) {
		res, err := http.Post("http://"+addr+"/aggregates/order/"+id+"/events", "application/json",
			strings.NewReader(`{"events":[{"eventType":"OrderPlaced","data":{}}],"expectedVersion":0}`))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode)
	})
	serve(func(addr string) {
		res, err := http.Head("http://" + addr + "/aggregates/order/" + id)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, 200, res.StatusCode, "the event survived the restart")
	})
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0", "-data", t.TempDir()}, env(nil), &syncBuffer{}, nil)
	assert.Error(t, err, "a directory is not an event file")
}
