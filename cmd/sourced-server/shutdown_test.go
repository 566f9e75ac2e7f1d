package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// heldStore is a memory store whose writes wait on a lock that is never
// released, the way a write waits behind a row lock in PostgreSQL; the
// wait honours the request's context. It says when a write and a feed
// read are under way.
type heldStore struct {
	*memory.Transport
	writing  chan struct{} // a write is held
	reading  chan struct{} // a feed read began
	released atomic.Bool   // the held write returned
}

func newHeldStore() *heldStore {
	return &heldStore{Transport: memory.New(), writing: make(chan struct{}, 1), reading: make(chan struct{}, 1)}
}

func (s *heldStore) Store(ctx context.Context, ref transport.Ref, _ []transport.Event, _ transport.ExpectedVersion) error {
	s.writing <- struct{}{}
	<-ctx.Done()
	s.released.Store(true)
	return transport.Wrap(ctx.Err(), "store", ref, transport.ErrUnavailable)
}

func (s *heldStore) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	select {
	case s.reading <- struct{}{}:
	default:
	}
	return s.Transport.ReadFeed(ctx, q)
}

// startWith runs the server with hooks; it returns the address, the logs,
// the cancel that stands for SIGTERM and the channel run's result comes on.
func startWith(t *testing.T, h hooks, args []string, vars map[string]string) (string, *syncBuffer, context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, h, args, env(vars), logs, ready) }()
	t.Cleanup(cancel)
	select {
	case addr := <-ready:
		return addr, logs, cancel, done
	case err := <-done:
		t.Fatalf("server did not start: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready")
	}
	return "", nil, nil, nil
}

type answer struct {
	status int
	proto  string
	body   string
	err    error
	at     time.Time
}

func do(method, url, body string) answer { return doWith(http.DefaultClient, method, url, body) }

func doWith(client *http.Client, method, url, body string) answer {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return answer{err: err, at: time.Now()}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, proto: res.Proto, body: string(b), err: err, at: time.Now()}
}

// TestShutdownBoundedByGrace: with a write held by a lock and a feed read
// long-polling, a stop answers the feed read at once (an empty page),
// cancels the write before it reaches the store when the grace runs out
// (the client gets a 503, not a cut connection), and returns within the
// grace with no error; "stopped" comes after the requests ended.
// Over TLS the client speaks HTTP/2, where the operator saw "stream was
// not closed cleanly".
func TestShutdownBoundedByGrace(t *testing.T) {
	t.Run("http", func(t *testing.T) { testShutdownBoundedByGrace(t, false) })
	t.Run("https, HTTP/2", func(t *testing.T) { testShutdownBoundedByGrace(t, true) })
}

func testShutdownBoundedByGrace(t *testing.T, overTLS bool) {
	store := newHeldStore()
	const grace = 3 * time.Second
	args := []string{"-addr", "127.0.0.1:0", "-shutdown-grace", grace.String()}
	client, scheme := http.DefaultClient, "http://"
	if overTLS {
		certFile, keyFile, pool := selfSigned(t)
		args = append(args, "-tls-cert", certFile, "-tls-key", keyFile)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		client, scheme = &http.Client{Transport: tr}, "https://"
	}
	addr, logs, stop, done := startWith(t, hooks{open: func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		return store, func() {}, "held memory", nil
	}}, args, nil)

	write := make(chan answer, 1)
	go func() {
		write <- doWith(client, "POST", scheme+addr+"/aggregates/order/"+uuid.NewString()+"/events",
			`{"events":[{"eventType":"OrderPlaced","data":{}}],"expectedVersion":0}`)
	}()
	poll := make(chan answer, 1)
	go func() { poll <- doWith(client, "GET", scheme+addr+"/feeds/order?waitTime=60000", "") }()
	for _, under := range []chan struct{}{store.writing, store.reading} {
		select {
		case <-under:
		case a := <-write:
			t.Fatalf("the write did not reach the store: %+v", a)
		case a := <-poll:
			t.Fatalf("the feed read did not wait: %+v", a)
		case <-time.After(20 * time.Second):
			t.Fatal("the write or the feed read did not reach the store")
		}
	}

	began := time.Now()
	stop()
	p := <-poll
	require.NoError(t, p.err)
	assert.Equal(t, http.StatusOK, p.status, p.body)
	var page struct {
		Entries []json.RawMessage `json:"entries"`
	}
	require.NoError(t, json.Unmarshal([]byte(p.body), &page))
	assert.Empty(t, page.Entries, "an empty page answers the long poll")
	assert.False(t, store.released.Load(), "the long poll is answered at once, while the write is still held")

	select {
	case err := <-done:
		require.NoError(t, err, "a stop within the grace is clean\n%s", logs)
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("still running %s after the stop, with -shutdown-grace %s", time.Since(began), grace)
	}
	t.Logf("stopped %s after the signal (grace %s)", time.Since(began).Round(time.Millisecond), grace)
	w := <-write
	require.NoError(t, w.err, "the held write gets an answer, not a cut connection")
	assert.Equal(t, http.StatusServiceUnavailable, w.status)
	assert.True(t, store.released.Load())
	if overTLS {
		assert.Equal(t, "HTTP/2.0", w.proto)
		res, err := client.Get(scheme + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			t.Fatal("still serving after the stop")
		}
	}

	out := logs.String()
	stopped := strings.Index(out, `"msg":"stopped"`)
	require.Positive(t, stopped, out)
	assert.Less(t, strings.Index(out, `"status":503`), stopped, "stopped is logged after the requests ended")
	assert.Contains(t, out, "cancelling them")
}

// TestShutdownDrainKeepsServingWhileNotReady: during -shutdown-drain,
// readiness answers 503 while the API still serves.
func TestShutdownDrainKeepsServingWhileNotReady(t *testing.T) {
	addr, logs, stop, done := startWith(t, hooks{}, []string{"-addr", "127.0.0.1:0", "-shutdown-grace", "8s", "-shutdown-drain", "4s"}, nil)
	assert.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/readyz", "").status)
	stop()
	require.Eventually(t, func() bool { return do("GET", "http://"+addr+"/readyz", "").status == http.StatusServiceUnavailable },
		5*time.Second, 10*time.Millisecond, "readiness turns off first")
	a := do("HEAD", "http://"+addr+"/aggregates/order/"+uuid.NewString(), "")
	require.NoError(t, a.err)
	assert.Equal(t, http.StatusNotFound, a.status, "requests are still served while draining")
	assert.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/healthz", "").status)
	assert.Contains(t, logs.String(), `"msg":"shutting down"`)
	assert.NotContains(t, logs.String(), `"msg":"stopped"`)
	require.NoError(t, <-done)
}

// TestGateRefusesOnceStopping: a request that arrives after the stop began
// is answered 503 with Retry-After and never reaches the API; so is one
// that arrives before the store is open.
func TestGateRefusesOnceStopping(t *testing.T) {
	l := newLifecycle()
	refused := newOpsMetrics(prometheus.NewRegistry(), build{}).refused
	reached := 0
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })
	for _, step := range []struct {
		name   string
		act    func()
		status int
	}{
		{"starting", func() {}, http.StatusServiceUnavailable},
		{"serving", func() { l.serve(api) }, http.StatusOK},
		{"draining", l.beginDrain, http.StatusOK},
		{"stopping", l.beginStop, http.StatusServiceUnavailable},
	} {
		step.act()
		rec := httptest.NewRecorder()
		l.gate(refused).ServeHTTP(rec, httptest.NewRequest("POST", "/aggregates/order/x/events", strings.NewReader("{}")))
		assert.Equal(t, step.status, rec.Code, step.name)
		if step.status == http.StatusServiceUnavailable {
			assert.Equal(t, retryAfter, rec.Header().Get("Retry-After"), step.name)
			assert.True(t, json.Valid(rec.Body.Bytes()), step.name)
		}
	}
	assert.Equal(t, 2, reached)
	assert.Equal(t, 1.0, value(refused.WithLabelValues("starting")))
	assert.Equal(t, 1.0, value(refused.WithLabelValues("stopping")))
	select {
	case <-l.drain:
	default:
		t.Fatal("stopping releases the waiting feed reads")
	}

	// Stopped while the store was still opening: the answer says stopping.
	early := newLifecycle()
	early.beginStop()
	rec := httptest.NewRecorder()
	early.gate(refused).ServeHTTP(rec, httptest.NewRequest("GET", "/aggregates/order/x", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Contains(t, rec.Body.String(), "shutting down")
}

func TestShutdownFlagsChecked(t *testing.T) {
	err := run(context.Background(), []string{"-shutdown-grace", "5s", "-shutdown-drain", "5s"}, env(nil), &syncBuffer{}, nil)
	assert.ErrorContains(t, err, "-shutdown-drain")
	assert.Regexp(t, regexp.MustCompile(`-store-wait`), run(context.Background(), []string{"-store-wait", "-1s"}, env(nil), &syncBuffer{}, nil).Error())
}

// BenchmarkGate: what the lifecycle gate adds to every API request.
func BenchmarkGate(b *testing.B) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	l := newLifecycle()
	l.serve(api)
	gated := l.gate(newOpsMetrics(prometheus.NewRegistry(), build{}).refused)
	req := httptest.NewRequest("HEAD", "/aggregates/order/x", nil)
	w := httptest.NewRecorder()
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			api.ServeHTTP(w, req)
		}
	})
	b.Run("gated", func(b *testing.B) {
		for b.Loop() {
			gated.ServeHTTP(w, req)
		}
	})
}
