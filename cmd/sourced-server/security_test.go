package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

func scrape(t *testing.T, m *metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	return rec.Body.String()
}

func TestMetricLabelsTakeAClosedSetOfValues(t *testing.T) {
	m := newMetrics()
	h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	odd := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) })
	for i := 0; i < 200; i++ {
		req := httptest.NewRequest("GET", "/aggregates/order/"+strings.Repeat("x", i+1), nil)
		req.Method = "MADEUP" + strings.Repeat("M", i) // a new method each time
		h.ServeHTTP(httptest.NewRecorder(), req)
		req = httptest.NewRequest("GET", "/"+strings.Repeat("p/", i), nil)
		m.wrap(odd).ServeHTTP(httptest.NewRecorder(), req)
	}
	text := scrape(t, m)
	assert.False(t, strings.Contains(text, "MADEUP"), "no made-up method in a label")
	assert.True(t, strings.Contains(text, `sourced_http_requests_total{code="429",method="other",route="/aggregates/{type}/{id}"} 200`))
	assert.True(t, strings.Contains(text, `sourced_http_requests_total{code="5xx",method="GET",route="other"} 200`))
	assert.Less(t, strings.Count(text, "sourced_http_requests_total{"), 5, "a handful of series, not one per request")
}

func TestConnectionsAreCapped(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lim := newConnLimiter(2, nil)
	l := lim.wrap(raw)
	defer l.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted over the cap of two")
	case <-time.After(200 * time.Millisecond): // it waits in the backlog
	}
	require.NoError(t, first.Close())
	third := <-accepted // a slot is free: it is accepted now
	assert.NotNil(t, third)
	assert.EqualValues(t, 2, lim.open.Load())
	require.NoError(t, second.Close())
	_ = second.Close() // closing twice frees one slot only
	assert.EqualValues(t, 1, lim.open.Load())
	_ = third.Close()
}

func TestIdleConnectionsCloseNearTheCap(t *testing.T) {
	lim := newConnLimiter(10, nil) // near the cap from 9 open connections on
	var peers []net.Conn
	for i := 0; i < 3; i++ {
		server, client := net.Pipe()
		peers = append(peers, client)
		lim.slots <- struct{}{}
		lim.opened()
		lim.track(server, http.StateIdle)
	}
	lim.track(peers[0], http.StateActive) // not idle: kept
	for i := 3; i < 9; i++ {
		lim.slots <- struct{}{}
		lim.opened() // the ninth reaches nine tenths of the cap
	}
	for _, c := range peers {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "an idle keep-alive connection is closed near the cap")
	}
	// And a connection that turns idle near the cap is closed at once.
	server, client := net.Pipe()
	lim.track(server, http.StateIdle)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
}

func TestReadyzAnswerIsCachedBriefly(t *testing.T) {
	var probes atomic.Int64
	backend := countingStore{Transport: memory.New(), n: &probes}
	now := time.Unix(1000, 0)
	h := cacheAnswer(time.Second, func() time.Time { return now }, probeOf(backend))
	for i := 0; i < 100; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, "ready\n", rec.Body.String())
	}
	assert.EqualValues(t, 1, probes.Load(), "a flood of probes reaches the store once")
	now = now.Add(time.Second)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/readyz", nil))
	assert.EqualValues(t, 2, probes.Load(), "a second later it asks again")
}

type countingStore struct {
	transport.Transport
	n *atomic.Int64
}

func (c countingStore) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	c.n.Add(1)
	return c.Transport.Exists(ctx, ref)
}

func TestBrowserAtTheRootIsSentToTheConsole(t *testing.T) {
	addr, logs := start(t, []string{"-addr", "127.0.0.1:0"}, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	res, err := client.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusSeeOther, res.StatusCode)
	assert.Equal(t, "/console/", res.Header.Get("Location"))
	assert.Contains(t, logs.String(), `"console_url":"http://`+addr+`/console/"`, "the ready line names the console")

	req.Header.Set("Accept", "application/json")
	res, err = client.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusNotFound, res.StatusCode, "an API client still gets the API")
}

func TestKeylessServerRefusesOtherHostsAndCrossSiteWrites(t *testing.T) {
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0"}, nil)
	body := `{"events":[{"eventType":"OrderPlaced","data":{}}]}`
	path := "http://" + addr + "/aggregates/order/" + uuid.NewString()
	post := func(host, origin, ctype string) int {
		req, err := http.NewRequest("POST", path+"/events", strings.NewReader(body))
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", ctype)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	assert.Equal(t, http.StatusUnsupportedMediaType, post("", "", "text/plain"))
	assert.Equal(t, http.StatusForbidden, post("", "https://evil.example", "text/plain"))
	assert.Equal(t, http.StatusMisdirectedRequest, post("rebind.evil.example", "", "application/json"))
	req, _ := http.NewRequest("GET", "http://"+addr+"/console/", nil)
	req.Host = "rebind.evil.example"
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusMisdirectedRequest, res.StatusCode, "the console too")
	assert.Equal(t, http.StatusOK, post("", "", "application/json"))
}

func TestSecurityFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{{"-max-conns", "0"}, {"-trusted-proxy", "not-an-ip"}, {"-rate-limit-unauth", "0"}} {
		err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0"}, args...), env(nil), io.Discard, nil)
		assert.Error(t, err, args)
	}
}
