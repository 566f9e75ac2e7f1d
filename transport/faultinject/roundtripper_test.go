package faultinject_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
)

func newCountingServer(t *testing.T, body string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func do(t *testing.T, rt http.RoundTripper, method, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(`{"events":[]}`))
	require.NoError(t, err)
	return (&http.Client{Transport: rt}).Do(req)
}

func TestRoundTripperRefusedNeverReachesServer(t *testing.T) {
	srv, hits := newCountingServer(t, "ok")
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(faultinject.Fail(transport.ErrUnavailable)))

	_, err := do(t, rt, http.MethodPost, srv.URL)
	require.Error(t, err)
	assert.ErrorIs(t, err, faultinject.ErrInjected)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Equal(t, int64(0), hits.Load(), "a refused request never reaches the server")

	resp, err := do(t, rt, http.MethodPost, srv.URL)
	require.NoError(t, err, "the sequence is spent: the next call goes through")
	resp.Body.Close()
	assert.Equal(t, int64(1), hits.Load())
	assert.Equal(t, faultinject.Stats{Calls: 2, Before: 1}, rt.Stats())
}

func TestRoundTripperFailAfterReachesServer(t *testing.T) {
	srv, hits := newCountingServer(t, "ok")
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(faultinject.FailAfter(nil)))

	_, err := do(t, rt, http.MethodPost, srv.URL)
	require.Error(t, err)
	assert.ErrorIs(t, err, faultinject.ErrInjected)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout(), "looks like a timeout to the client")
	assert.Equal(t, int64(1), hits.Load(), "the server acted on the request")
}

func TestRoundTripperCannedStatus(t *testing.T) {
	srv, hits := newCountingServer(t, "ok")
	reset := time.Unix(1_900_000_000, 0)
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(
		faultinject.RateLimited(reset), faultinject.RespondWith(503, nil)))

	resp, err := do(t, rt, http.MethodGet, srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "1900000000", resp.Header.Get("Serialized-RateLimit-Reset"))

	resp, err = do(t, rt, http.MethodGet, srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, int64(0), hits.Load())
}

func TestRoundTripperResetMidBody(t *testing.T) {
	srv, _ := newCountingServer(t, strings.Repeat("x", 10_000))
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(faultinject.ResetMidBody(100)))

	resp, err := do(t, rt, http.MethodGet, srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	assert.Len(t, b, 100)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestRoundTripperDelayHonoursContext(t *testing.T) {
	srv, hits := newCountingServer(t, "ok")
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(faultinject.Sleep(time.Hour)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	_, err = (&http.Client{Transport: rt}).Do(req)
	assert.True(t, errors.Is(err, context.Canceled))
	assert.Equal(t, int64(0), hits.Load())
}

func TestRandomIsReproducible(t *testing.T) {
	draw := func(seed uint64) []string {
		p := faultinject.Random(seed, 0.5, faultinject.Fail(transport.ErrConflict), faultinject.Sleep(time.Millisecond))
		out := make([]string, 64)
		for i := range out {
			out[i] = p(faultinject.OpStore).String()
		}
		return out
	}
	a, b := draw(7), draw(7)
	assert.Equal(t, a, b, "same seed, same faults")
	assert.NotEqual(t, a, draw(8))
	none, some := 0, 0
	for _, s := range a {
		if s == "none" {
			none++
		} else {
			some++
		}
	}
	assert.Positive(t, none)
	assert.Positive(t, some)
}

func TestOnlyFiltersOperations(t *testing.T) {
	p := faultinject.Only(func(faultinject.Op) faultinject.Fault { return faultinject.Fail(transport.ErrConflict) }, faultinject.OpStore)
	assert.Equal(t, faultinject.Before, p(faultinject.OpStore).Kind)
	assert.Equal(t, faultinject.None, p(faultinject.OpLoad).Kind)
}

func TestRoundTripperLandLaterReachesServerLater(t *testing.T) {
	srv, hits := newCountingServer(t, "ok")
	rt := faultinject.NewRoundTripper(nil, faultinject.Sequence(faultinject.LandLater(nil, 2)))

	_, err := do(t, rt, http.MethodPost, srv.URL)
	require.Error(t, err)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout(), "looks like a timeout to the client")
	assert.Equal(t, int64(0), hits.Load(), "not there yet")
	assert.Equal(t, 1, rt.Held())
	_, err = do(t, rt, http.MethodGet, srv.URL)
	require.NoError(t, err)
	assert.Equal(t, int64(1), hits.Load())
	_, err = do(t, rt, http.MethodGet, srv.URL)
	require.NoError(t, err)
	assert.Equal(t, int64(3), hits.Load(), "the held request landed just before this one")
	assert.Equal(t, int64(1), rt.Stats().Landed)
}
