package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTracesJoinTheCallersTrace runs the server with -otlp-endpoint
// pointing at a fake collector, sends a request carrying a traceparent,
// and finds that trace's id in what the server exported.
func TestTracesJoinTheCallersTrace(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.URL.Path == "/v1/traces" {
			bodies = append(bodies, b)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-otlp-endpoint", collector.URL}, env(nil), &syncBuffer{}, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequest("HEAD", "http://"+addr+"/aggregates/order/"+uuid.NewString(), nil)
	require.NoError(t, err)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	cancel() // shutting down flushes the spans
	require.NoError(t, <-done)

	raw, err := hex.DecodeString(traceID)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, bodies, "the server exported spans")
	found := false
	for _, b := range bodies {
		found = found || bytes.Contains(b, raw)
	}
	assert.True(t, found, "the server's span is in the caller's trace")
	assert.Error(t, run(context.Background(), []string{"-otlp-endpoint", "::not a url"}, env(nil), &syncBuffer{}, nil))
}
