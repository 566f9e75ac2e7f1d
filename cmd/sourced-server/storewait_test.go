package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// listeningAddr waits for the "listening" line and returns its address.
func listeningAddr(t *testing.T, logs *syncBuffer, done chan error) string {
	t.Helper()
	re := regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("run ended before listening: %v\n%s", err, logs)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("not listening\n%s", logs)
	return ""
}

// closedPort is a PostgreSQL address where nothing listens.
func closedPort() string {
	return "postgres://sourced:pw-never-logged-7@127.0.0.1:1/sourced?sslmode=disable&connect_timeout=2"
}

// TestStartWaitsForTheStore: with the database unreachable, the server
// listens, answers /healthz, says 503 on /readyz and the API (with
// Retry-After), logs the wait once, and gives up after -store-wait.
func TestStartWaitsForTheStore(t *testing.T) {
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"-addr", "127.0.0.1:0", "-store-wait", "3s", "-postgres", closedPort()}, env(nil), logs, nil)
	}()
	addr := listeningAddr(t, logs, done)
	assert.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/healthz", "").status)
	r := do("GET", "http://"+addr+"/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, r.status)
	assert.Contains(t, r.body, "starting")
	req, _ := http.NewRequest("HEAD", "http://"+addr+"/aggregates/order/x", nil)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	assert.Equal(t, retryAfter, res.Header.Get("Retry-After"))
	select {
	case err = <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "-store-wait")
	case <-time.After(30 * time.Second):
		t.Fatal("still waiting long after -store-wait")
	}
	assert.Equal(t, 1, countLines(logs.String(), "store not reachable yet"), "the wait is logged once, not per attempt")
	assert.NotContains(t, logs.String()+err.Error(), "pw-never-logged-7")
}

// TestStopWhileWaitingForTheStore: a stop during the wait is a clean stop.
func TestStopWhileWaitingForTheStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-store-wait", "10m", "-postgres", closedPort()}, env(nil), logs, nil)
	}()
	listeningAddr(t, logs, done)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("a stop during the wait was not heeded")
	}
	assert.Contains(t, logs.String(), `"msg":"stopped"`)
}

// TestOnlyOutagesAreWaitedFor: an error that waiting cannot cure ends the
// start at once.
func TestOnlyOutagesAreWaitedFor(t *testing.T) {
	assert.True(t, unreachable(fmt.Errorf("migrating: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})))
	assert.False(t, unreachable(&os.PathError{Op: "open", Path: "/data", Err: syscall.EISDIR}), "a file store is not waited for")
	assert.False(t, unreachable(errors.New("schema version 3 is newer than this binary knows")))
	assert.False(t, unreachable(fmt.Errorf("%w: bad string", errors.New("bad configuration"))))
	attempts := 0
	_, _, _, err := openWaiting(context.Background(), func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		attempts++
		return nil, nil, "", errors.New("schema version 3 is newer than this binary knows")
	}, config{storeWait: time.Hour}, zap.NewNop(), storeBackOff(time.Hour))
	require.Error(t, err)
	assert.Equal(t, 1, attempts)
}

func countLines(logs, snippet string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, snippet) {
			n++
		}
	}
	return n
}
