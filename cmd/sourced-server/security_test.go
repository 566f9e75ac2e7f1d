package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"math/big"
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

// Connections that send half a request (slowloris), or nothing, must not
// hold every slot: at the cap the oldest of them is closed to make room, and
// a client with a whole request gets in. The server here has no header
// timeout, so without that the request would wait for ever.
func TestSlowClientsDoNotHoldTheCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lim := newConnLimiter(2, nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState: lim.track}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lim.wrap(raw)) }()
	defer func() { _ = srv.Close(); <-done }()

	var slow []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		_, err = io.WriteString(c, "GET /feeds HTTP/1.1\r\nHost: x\r\n") // and never the end of the headers
		require.NoError(t, err)
		slow = append(slow, c)
	}
	require.Eventually(t, func() bool { return lim.open.Load() == 2 }, 5*time.Second, time.Millisecond, "both slow connections hold a slot")

	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	resp, err := cl.Get("http://" + raw.Addr().String() + "/")
	require.NoError(t, err, "a whole request gets in past connections that never finish theirs")
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "ok", string(body))

	// The oldest slow connection was the one closed.
	_ = slow[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = slow[0].Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
	cl.CloseIdleConnections()
}

// Near the cap, idle connections are closed, but an HTTP/2 connection is
// idle as it starts, before its first request: closing it then failed
// every HTTP/2 client (every TLS client of Go, browsers) near the cap.
func TestHTTP2ClientsGetInNearTheCap(t *testing.T) {
	lim := newConnLimiter(10, nil) // near the cap from 9 connections on
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	ts.Listener = lim.wrap(ts.Listener)
	ts.Config.ConnState = lim.track
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the empty connections' handshake errors
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()

	for i := 0; i < 8; i++ { // connections that send nothing yet
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	require.Eventually(t, func() bool { return lim.open.Load() == 8 }, 5*time.Second, time.Millisecond)

	cl := ts.Client()
	cl.Timeout = 10 * time.Second
	for i := 0; i < 3; i++ {
		resp, err := cl.Get(ts.URL + "/")
		require.NoError(t, err, "an HTTP/2 client near the cap")
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, 2, resp.ProtoMajor)
		assert.Equal(t, "ok", string(body))
	}
	// The idle HTTP/2 connection is closed to make room once it has been
	// idle a while, not before: its last frames may not be out yet.
	assert.Zero(t, lim.closeIdle())
	lim.mu.Lock()
	later := time.Now().Add(2 * h2IdleGrace)
	lim.now = func() time.Time { return later }
	lim.mu.Unlock()
	assert.Equal(t, 1, lim.closeIdle())
}

// The request-bytes counter counts what was read, not the Content-Length a
// client claims: a refused request that says it carries a terabyte must not
// add a terabyte (and set off alerts).
func TestRequestBytesCountWhatWasRead(t *testing.T) {
	m := newMetrics()
	refuse := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	req := httptest.NewRequest("POST", "/aggregates/order/events", strings.NewReader(`{}`))
	req.ContentLength = 1 << 40
	refuse.ServeHTTP(httptest.NewRecorder(), req)
	read := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	read.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/aggregates/order/events", strings.NewReader(`{"batches":[]}`)))
	assert.Contains(t, scrape(t, m), `sourced_http_request_bytes_total{route="/aggregates/{type}/events"} 14`+"\n")
}

// A response cut off mid-stream (its status 200 already sent) is counted,
// as "aborted", and the abort still reaches net/http, which cuts the
// connection.
func TestCutOffResponsesAreCounted(t *testing.T) {
	m := newMetrics()
	h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"entries":[`)
		panic(http.ErrAbortHandler)
	}))
	assert.PanicsWithValue(t, http.ErrAbortHandler, func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/feeds/order", nil))
	})
	assert.Contains(t, scrape(t, m), `sourced_http_requests_total{code="aborted",method="GET",route="/feeds/{feed}"} 1`)
}

// Closing idle connections runs on the accepting goroutine (near and at
// the cap): it must not wait on a peer. A TLS close first sends an alert,
// which waits up to 5 s for a peer that does not read; the limiter closes
// the connection beneath instead. (net.Pipe has no buffer: any write waits
// for the peer.)
func TestClosingIdleConnectionsDoesNotWaitOnThePeer(t *testing.T) {
	pair, err := throwawayCert()
	require.NoError(t, err)
	a, b := net.Pipe()
	defer b.Close()
	server := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{pair}})
	client := tls.Client(b, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test's own certificate
	done := make(chan error, 1)
	go func() { done <- client.Handshake() }()
	require.NoError(t, server.Handshake())
	require.NoError(t, <-done)
	// The client reads no more from here on.

	lim := newConnLimiter(100, nil)
	lim.track(server, http.StateIdle)
	closed := make(chan int, 1)
	go func() { closed <- lim.closeIdle() }()
	select {
	case n := <-closed:
		assert.Equal(t, 1, n)
	case <-time.After(3 * time.Second):
		t.Fatal("closing an idle connection waited on a peer that does not read")
	}
}

// throwawayCert makes a certificate for 127.0.0.1.
func throwawayCert() (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// Without keys, health, readiness and metrics answer loopback host names
// only, like the API: a DNS-rebinding page cannot read them.
func TestKeylessRoutesOutsideTheAPIAnswerLoopbackOnly(t *testing.T) {
	addr, _ := start(t, []string{"-addr", "127.0.0.1:0"}, nil)
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		require.NoError(t, err)
		req.Host = "rebound.example.com"
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode, "%s with a foreign Host", path)

		resp, err = http.Get("http://" + addr + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.NotEqual(t, http.StatusMisdirectedRequest, resp.StatusCode, "%s on loopback", path)
	}
}
