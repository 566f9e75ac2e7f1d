package serialized_test

// Servers that misbehave the ways issue 30's review found, and what the
// client must do against each.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
	"github.com/sourced-go/sourced/transport/transporttest"
)

// h2cServer is a raw HTTP/2 server over cleartext (prior knowledge), just
// enough to reset streams: it reads each request whole, then answers the
// first `resets` of them with RST_STREAM and the rest with 200 and no body.
type h2cServer struct {
	ln     net.Listener
	code   uint32 // the RST_STREAM error code
	resets int64
	bodies atomic.Int64 // requests read whole, body included
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// HTTP/2 frame types and flags (RFC 9113).
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2Ping         = 0x6
	h2EndStream    = 0x1
	h2Ack          = 0x1
	h2EndHeaders   = 0x4
	h2Padded       = 0x8
	h2RefusedCode  = 0x7
	h2ProtocolCode = 0x1
)

func newH2CServer(t *testing.T, code uint32, resets int64) *h2cServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &h2cServer{ln: ln, code: code, resets: resets}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *h2cServer) URL() string { return "http://" + s.ln.Addr().String() }

func writeFrame(w io.Writer, typ, flags byte, stream uint32, payload []byte) error {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	_, err := w.Write(append(h[:], payload...))
	return err
}

func (s *h2cServer) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	preface := make([]byte, len(http2Preface))
	if _, err := io.ReadFull(r, preface); err != nil || string(preface) != http2Preface {
		return
	}
	if writeFrame(conn, h2Settings, 0, 0, nil) != nil {
		return
	}
	for {
		var h [9]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags, stream := h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		var err error
		switch {
		case typ == h2Settings && flags&h2Ack == 0:
			err = writeFrame(conn, h2Settings, h2Ack, 0, nil)
		case typ == h2Ping && flags&h2Ack == 0:
			err = writeFrame(conn, h2Ping, h2Ack, 0, payload)
		case (typ == h2Data || typ == h2Headers) && flags&h2EndStream != 0:
			err = s.answer(conn, stream)
		}
		if err != nil {
			return
		}
	}
}

// answer ends a stream whose request was read whole.
func (s *h2cServer) answer(conn net.Conn, stream uint32) error {
	if s.bodies.Add(1) <= s.resets {
		var code [4]byte
		binary.BigEndian.PutUint32(code[:], s.code)
		return writeFrame(conn, h2RSTStream, 0, stream, code[:])
	}
	// 0x88 is HPACK's static entry 8, ":status: 200".
	return writeFrame(conn, h2Headers, h2EndHeaders|h2EndStream, stream, []byte{0x88})
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// Issue 30, item 2: net/http's HTTP/2 transport resends a request it can
// rewind after a REFUSED_STREAM or a PROTOCOL_ERROR reset, even when the
// server had read it whole. Only the client may decide to resend a store.
func TestHTTP2ResetStoreIsNotResent(t *testing.T) {
	for _, c := range []struct {
		name string
		code uint32
	}{{"REFUSED_STREAM", h2RefusedCode}, {"PROTOCOL_ERROR", h2ProtocolCode}} {
		t.Run(c.name, func(t *testing.T) {
			srv := newH2CServer(t, c.code, 100)
			client, err := serialized.New(serialized.WithBaseURL(srv.URL()), serialized.WithKeys(testAccess, testSecret),
				serialized.WithHTTPClient(h2cClient()), zeroRetry(3))
			require.NoError(t, err)
			err = client.Store(context.Background(), ref(), oneEvent, transport.Any)
			assert.ErrorIs(t, err, transport.ErrAmbiguous, "the server read the store, then reset it: the outcome is unknown")
			assert.Equal(t, int64(1), srv.bodies.Load(), "the store went out once")
		})
	}
	t.Run("reads are still retried", func(t *testing.T) {
		srv := newH2CServer(t, h2RefusedCode, 1)
		client, err := serialized.New(serialized.WithBaseURL(srv.URL()), serialized.WithKeys(testAccess, testSecret),
			serialized.WithHTTPClient(h2cClient()), zeroRetry(3))
		require.NoError(t, err)
		ok, err := client.Exists(context.Background(), ref())
		require.NoError(t, err)
		assert.True(t, ok)
	})
}

// Issue 30, item 1: HTTP allows Content-Length on a HEAD answer, whose body
// is empty all the same.
func TestHeadAnswerWithContentLength(t *testing.T) {
	for _, how := range []string{"header", "body written"} {
		t.Run(how, func(t *testing.T) {
			var hits atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				require.Equal(t, http.MethodHead, r.Method)
				w.Header().Set("Serialized-SequenceNumber-Current", "7")
				body := `{"something":"a HEAD answer does not carry"}`
				if how == "header" {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
					return
				}
				// A Go handler that writes a body for HEAD: the server sets
				// Content-Length from it and sends no body.
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), zeroRetry(3))
			require.NoError(t, err)
			ok, err := c.Exists(context.Background(), ref())
			require.NoError(t, err)
			assert.True(t, ok)
			head, err := c.FeedHead(context.Background(), transport.Scope{Type: "order"})
			require.NoError(t, err)
			assert.Equal(t, int64(7), head)
			assert.Equal(t, int64(2), hits.Load(), "one request each, no retry")
		})
	}
}

// Issue 30, item 3: an answer too large to read after a store went out may
// say anything, stored included.
func TestUnreadableAnswerToStoreIsAmbiguous(t *testing.T) {
	big := `{"errors":["` + strings.Repeat("x", 4096) + `"]}`
	for _, code := range []int{409, 422, 500} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			s := newScript(t, status(code, big), status(200, ``))
			err := s.client(t, serialized.WithMaxResponseBytes(1024)).Store(context.Background(), ref(), oneEvent, transport.Any)
			assert.ErrorIs(t, err, transport.ErrAmbiguous)
			assert.ErrorContains(t, err, "over 1024 bytes")
			assert.Equal(t, int64(1), s.hits.Load())
		})
	}
	t.Run("200", func(t *testing.T) {
		s := newScript(t, status(200, big))
		err := s.client(t, serialized.WithMaxResponseBytes(1024)).Store(context.Background(), ref(), oneEvent, transport.Any)
		assert.NoError(t, err, "the status line says stored")
		assert.Equal(t, int64(1), s.hits.Load())
	})
}

// storeThen503 is a proxy to a local server that passes the first n stores
// through, then replaces their answers with a 503: the batch is stored, the
// client is told the service was unavailable.
func storeThen503(t *testing.T, n int64) (base string, posts *atomic.Int64) {
	t.Helper()
	backend := localserver.NewServer(memory.New(), localserver.WithKeys(testAccess, testSecret))
	t.Cleanup(backend.Close)
	target, err := url.Parse(backend.URL)
	require.NoError(t, err)
	posts = new(atomic.Int64)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodPost && posts.Add(1) <= n {
			_ = resp.Body.Close()
			resp.StatusCode, resp.Status = 503, "503 Service Unavailable"
			resp.Body = io.NopCloser(strings.NewReader(`{"code":503,"message":"upstream timed out"}`))
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		}
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL, posts
}

// Issue 30, item 4: a 5xx after a store went out is ambiguous; the
// repository resolves it by event id, so nothing is stored twice.
func TestServerErrorAfterStoreIsAmbiguous(t *testing.T) {
	ctx := context.Background()
	for _, code := range []int{500, 502, 503, 504} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			s := newScript(t, status(code, ``), status(200, ``))
			err := s.client(t).Store(ctx, ref(), oneEvent, transport.Any)
			assert.ErrorIs(t, err, transport.ErrAmbiguous)
			assert.Equal(t, int64(1), s.hits.Load(), "never resent blindly")
		})
	}
	t.Run("503 on a read is retried", func(t *testing.T) {
		s := newScript(t, status(503, ``), status(200, page))
		_, err := s.client(t).Load(ctx, ref(), 0, 0)
		require.NoError(t, err)
		assert.Equal(t, int64(2), s.hits.Load())
	})
	t.Run("a proxy answers 503 after the backend stored", func(t *testing.T) {
		base, posts := storeThen503(t, 2)
		client, err := serialized.New(serialized.WithBaseURL(base), serialized.WithKeys(testAccess, testSecret), zeroRetry(3))
		require.NoError(t, err)
		repo := repository.New(client, tallies)
		id := uuid.NewString()
		_, err = repo.Create(ctx, id, count)
		require.NoError(t, err, "Create resolves its own stored batch, no conflict")
		_, err = repo.Update(ctx, id, count)
		require.NoError(t, err)
		root, err := repo.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, 2, root.State().N, "one Create and one Update(+1): 2, not more")
		// The repository resends an ambiguous batch (same event ids, same
		// expected version) once to learn its outcome: the resend conflicts
		// with the batch that landed, which the repository recognises as its
		// own. So each store goes out at most twice, and lands once.
		assert.LessOrEqual(t, posts.Load(), int64(4), "each store went out at most twice")
	})
}

// Issue 30, item 5: whatever http.Client is given, no redirect is followed:
// the keys never travel to another host and a store never becomes a GET.
func TestRedirectsRefusedWithAnyHTTPClient(t *testing.T) {
	var reached atomic.Int64
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.Header.Get("Serialized-Access-Key") != "" || r.Header.Get("Serialized-Secret-Access-Key") != "" {
			leaked.Store(true)
		}
		_, _ = w.Write([]byte(page))
	}))
	defer elsewhere.Close()
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), code)
			}))
			defer srv.Close()
			followsAll := &http.Client{} // net/http's default policy: follow up to 10
			c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret),
				serialized.WithHTTPClient(followsAll))
			require.NoError(t, err)
			_, err = c.Load(context.Background(), ref(), 0, 0)
			var te *transport.Error
			require.ErrorAs(t, err, &te)
			assert.Equal(t, code, te.StatusCode)
			err = c.Store(context.Background(), ref(), oneEvent, transport.Any)
			require.Error(t, err, "a store answered with a redirect did not store")
			assert.ErrorContains(t, err, "redirect")
			assert.Nil(t, followsAll.CheckRedirect, "the caller's client is left as it was")
		})
	}
	assert.Zero(t, reached.Load(), "nothing reached the other host")
	assert.False(t, leaked.Load())
}

// echoKeys answers with the request's headers in its messages, as a proxy
// echoing requests might.
func echoKeys(code int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		var dump strings.Builder
		_ = r.Header.Write(&dump)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, `{"code":%d,"message":%q,"errors":[%q,%q]}`, code, "echo: "+dump.String(), dump.String(),
			"escaped: "+url.QueryEscape(r.Header.Get("Serialized-Secret-Access-Key")))
	}
}

// echoStatusLine answers with the request's key header as its status line:
// net/http quotes a malformed status line in its error.
func echoStatusLine(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				_, _ = fmt.Fprintf(conn, "Serialized-Secret-Access-Key: %s %s\r\n\r\n",
					req.Header.Get("Serialized-Secret-Access-Key"), req.Header.Get("Serialized-Access-Key"))
			}
			_ = conn.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// Issue 30, item 6: keys echoed by a server never reach an error, a log line
// or a span, messages are bounded, and a Client value prints masked.
func TestEchoedKeysAreRedacted(t *testing.T) {
	ctx := context.Background()
	core, logs := observer.New(zapcore.DebugLevel)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(ctx) }()
	s := newScript(t, echoKeys(500), echoKeys(503), echoKeys(422), echoKeys(401), echoKeys(429), echoKeys(403))
	c := s.client(t, serialized.WithLogger(zap.New(core)), serialized.WithTracerProvider(tp), zeroRetry(5),
		serialized.WithMaxRateLimitWait(0))
	var seen []string
	keep := func(err error) {
		if err != nil {
			seen = append(seen, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		}
	}
	_, err := c.Load(ctx, ref(), 0, 0) // 500, 503, 422: retried twice, then fails
	require.Error(t, err)
	assert.Contains(t, err.Error(), "****", "the echoed keys are masked, the rest kept")
	keep(err)
	keep(c.Store(ctx, ref(), oneEvent, transport.Any))
	keep(c.Store(ctx, ref(), oneEvent, transport.Any))

	broken, err := serialized.New(serialized.WithBaseURL(echoStatusLine(t)), serialized.WithKeys(testAccess, testSecret),
		serialized.WithLogger(zap.New(core)), serialized.WithTracerProvider(tp), zeroRetry(1))
	require.NoError(t, err)
	_, err = broken.Load(ctx, ref(), 0, 0)
	require.ErrorContains(t, err, "malformed HTTP", "net/http quoted the status line")
	keep(err)
	keep(broken.Store(ctx, ref(), oneEvent, transport.Any))

	var logged []string
	for _, e := range logs.All() {
		logged = append(logged, e.Message)
		for k, v := range e.ContextMap() {
			logged = append(logged, k+"="+fmt.Sprint(v))
		}
	}
	var spans []string
	for _, sp := range rec.Ended() {
		if sp.Status().Code == codes.Error {
			spans = append(spans, sp.Status().Description)
		}
		for _, ev := range sp.Events() {
			spans = append(spans, fmt.Sprint(ev.Attributes))
		}
	}
	require.NotEmpty(t, logged)
	require.NotEmpty(t, spans)
	printed := fmt.Sprintf("%v %+v %#v %s | %v %+v %#v", c, c, c, c, *c, *c, *c)
	for _, secret := range []string{testAccess, testSecret} {
		assert.NotContains(t, strings.Join(seen, "\n"), secret)
		assert.NotContains(t, strings.Join(logged, "\n"), secret)
		assert.NotContains(t, strings.Join(spans, "\n"), secret)
		assert.NotContains(t, printed, secret)
	}
	assert.Contains(t, printed, "****")
}

// Issue 30, item 6: a server's messages are bounded in length and number.
func TestServerMessagesAreBounded(t *testing.T) {
	many := make([]string, 500)
	for i := range many {
		many[i] = fmt.Sprintf("%q", strings.Repeat("y", 10_000))
	}
	s := newScript(t, status(422, `{"errors":[`+strings.Join(many, ",")+`]}`))
	err := s.client(t).Store(context.Background(), ref(), oneEvent, transport.Any)
	require.ErrorIs(t, err, transport.ErrInvalid)
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	assert.LessOrEqual(t, len(te.Messages), 21)
	assert.Less(t, len(err.Error()), 8<<10)
	assert.Contains(t, err.Error(), "and 480 more")
}

// loadServer answers every Load with fn(since).
func loadServer(t *testing.T, fn func(since int64) string) (*serialized.Client, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		_, _ = io.WriteString(w, fn(since))
	}))
	t.Cleanup(srv.Close)
	c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), zeroRetry(3))
	require.NoError(t, err)
	return c, &hits
}

func loadPage(version int64, events int, hasMore bool) string {
	evs := make([]string, events)
	for i := range evs {
		evs[i] = fmt.Sprintf(`{"eventId":%q,"eventType":"Counted","data":{"by":1}}`, uuid.NewString())
	}
	return fmt.Sprintf(`{"aggregateVersion":%d,"events":[%s],"hasMore":%t}`, version, strings.Join(evs, ","), hasMore)
}

// Issue 30, item 7: Load pages that do not advance, go back, or say hasMore
// forever fail with ErrInconsistentPage instead of replaying events,
// committing a wrong version or looping.
func TestLoadPagesAreChecked(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		since int64
		page  func(since int64) string
		why   string
	}{
		{"ignores since", 2, func(int64) string { return loadPage(2, 2, true) }, "stays at since 2"},
		{"goes back", 3, func(int64) string { return loadPage(1, 1, false) }, "below since 3"},
		{"hasMore forever without events", 4, func(since int64) string { return loadPage(since, 0, true) }, "hasMore"},
		{"version past its events", 0, func(int64) string { return loadPage(9, 2, false) }, "9 past since 0"},
		{"version moves without events", 3, func(int64) string { return loadPage(5, 0, false) }, "2 past since 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, hits := loadServer(t, c.page)
			_, err := client.Load(ctx, ref(), c.since, 2)
			require.ErrorIs(t, err, serialized.ErrInconsistentPage)
			assert.ErrorIs(t, err, transport.ErrUnavailable)
			assert.ErrorContains(t, err, c.why)
			assert.Equal(t, int64(1), hits.Load())
		})
	}
	t.Run("consistent pages pass", func(t *testing.T) {
		client, _ := loadServer(t, func(since int64) string {
			if since >= 4 {
				return loadPage(since, 0, false)
			}
			return loadPage(since+2, 3, since+2 < 4)
		})
		for since, want := range map[int64]int64{0: 2, 2: 4, 4: 4, 7: 7} {
			p, err := client.Load(ctx, ref(), since, 2)
			require.NoError(t, err, since)
			assert.Equal(t, want, p.Version)
		}
	})
	t.Run("the repository does not loop on a server that ignores since", func(t *testing.T) {
		client, hits := loadServer(t, func(int64) string { return loadPage(2, 2, true) })
		_, err := repository.New(client, tallies).Load(ctx, uuid.NewString())
		require.ErrorIs(t, err, serialized.ErrInconsistentPage)
		assert.LessOrEqual(t, hits.Load(), int64(2))
	})
}

func feedEntry(seq int64, id string) string {
	seqField := ""
	if seq >= 0 {
		seqField = fmt.Sprintf(`"sequenceNumber":%d,`, seq)
	}
	return fmt.Sprintf(`{%s"aggregateId":%q,"timestamp":1,"feedName":"order","events":[{"eventId":%q,"eventType":"OrderPlaced","data":{}}]}`,
		seqField, id, uuid.NewString())
}

// Issue 30, item 7: feed pages must advance and carry sequence numbers.
func TestFeedPagesAreChecked(t *testing.T) {
	ctx := context.Background()
	id := uuid.NewString()
	cases := []struct {
		name  string
		since int64
		body  string
		why   string
	}{
		{"overlaps since", 5, `{"entries":[` + feedEntry(5, id) + `,` + feedEntry(6, id) + `],"hasMore":false,"currentSequenceNumber":6}`, "not after 5"},
		{"out of order", 0, `{"entries":[` + feedEntry(3, id) + `,` + feedEntry(2, id) + `],"hasMore":false,"currentSequenceNumber":3}`, "not after 3"},
		{"repeats", 0, `{"entries":[` + feedEntry(3, id) + `,` + feedEntry(3, id) + `],"hasMore":false,"currentSequenceNumber":3}`, "not after 3"},
		{"no sequence numbers", 0, `{"entries":[` + feedEntry(-1, id) + `],"hasMore":false,"currentSequenceNumber":3}`, "no sequence number"},
		{"no aggregate id", 0, `{"entries":[` + feedEntry(1, "") + `],"hasMore":false,"currentSequenceNumber":1}`, "no aggregateId"},
		{"hasMore without entries", 0, `{"entries":[],"hasMore":true,"currentSequenceNumber":9}`, "hasMore"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newScript(t, status(200, c.body))
			_, err := s.client(t).ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: c.since})
			require.ErrorIs(t, err, serialized.ErrInconsistentPage)
			assert.ErrorIs(t, err, transport.ErrUnavailable)
			assert.ErrorContains(t, err, c.why)
		})
	}
	t.Run("a consistent page passes", func(t *testing.T) {
		s := newScript(t, status(200, `{"entries":[`+feedEntry(6, id)+`,`+feedEntry(9, id)+`],"hasMore":true,"currentSequenceNumber":12}`))
		p, err := s.client(t).ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: 5})
		require.NoError(t, err)
		require.Len(t, p.Entries, 2)
		assert.Equal(t, int64(9), p.Entries[1].Sequence)
	})
}

// Issue 30, item 8: a rate-limit window that resets after the caller's
// deadline is not waited for: the call fails at once with the 429 and its
// reset.
func TestRateLimitResetPastDeadlineFailsAtOnce(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	reset := now.Add(time.Hour)
	s := newScript(t, status(429, `{"code":429,"message":"slow down"}`, "Serialized-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10)))
	c := s.client(t, serialized.WithClock(func() time.Time { return now }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Load(ctx, ref(), 0, 0)
	require.ErrorIs(t, err, transport.ErrRateLimited)
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	require.NotNil(t, te.RateLimit)
	assert.Equal(t, reset, te.RateLimit.Reset)
	assert.NoError(t, ctx.Err(), "it did not sleep to the deadline")
	assert.Equal(t, int64(1), s.hits.Load())
}

// Issue 30, item 8: Retry-After on a 429 or a 503 stretches the wait (to
// WithMaxRateLimitWait at most), and a 429's error carries it as its reset.
func TestRetryAfterIsHonoured(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, code := range []int{429, 503} {
		for _, value := range []string{"120", now.Add(120 * time.Second).UTC().Format(http.TimeFormat)} {
			t.Run(fmt.Sprintf("%d %s", code, value), func(t *testing.T) {
				core, logs := observer.New(zapcore.WarnLevel)
				s := newScript(t, status(code, ``, "Retry-After", value), status(200, page))
				c := s.client(t, serialized.WithClock(func() time.Time { return now }), serialized.WithLogger(zap.New(core)),
					serialized.WithMaxRateLimitWait(5*time.Millisecond))
				_, err := c.Load(context.Background(), ref(), 0, 0)
				require.NoError(t, err)
				retries := logs.FilterMessage("request failed, retrying").All()
				require.Len(t, retries, 1)
				assert.Equal(t, 5*time.Millisecond, retries[0].ContextMap()["wait"], "waited for Retry-After, bounded")
			})
		}
	}
	t.Run("429 error carries it", func(t *testing.T) {
		s := newScript(t, status(429, ``, "Retry-After", "120"))
		err := s.client(t, zeroRetry(0), serialized.WithClock(func() time.Time { return now })).Store(context.Background(), ref(), oneEvent, transport.Any)
		var te *transport.Error
		require.ErrorAs(t, err, &te)
		require.NotNil(t, te.RateLimit)
		assert.Equal(t, now.Add(120*time.Second), te.RateLimit.Reset)
	})
}

// Issue 30, item 8: a declared Content-Length is not allocated before its
// bytes arrive.
func TestDeclaredLengthNotAllocatedUpFront(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(60<<20))
		_, _ = io.WriteString(w, `{"aggreg`) // and then nothing: the server gives up
	}))
	defer srv.Close()
	c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret), zeroRetry(0))
	require.NoError(t, err)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = c.Load(context.Background(), ref(), 0, 0)
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "allocated as the bytes came, not the 60 MiB declared")
}

// Issue 30, item 8: a 403 is a bad delete token only where a token was sent.
func TestForbiddenIsBadTokenOnlyOnConfirmDelete(t *testing.T) {
	ctx := context.Background()
	s := newScript(t, status(403, `{"code":403,"message":"forbidden"}`))
	c := s.client(t)
	_, err := c.Load(ctx, ref(), 0, 0)
	assert.ErrorIs(t, err, transport.ErrUnauthorized)
	assert.NotErrorIs(t, err, transport.ErrBadDeleteToken)
	err = c.Store(ctx, ref(), oneEvent, transport.Any)
	assert.ErrorIs(t, err, transport.ErrUnauthorized)
	_, err = c.RequestDelete(ctx, transport.DeleteAggregate(ref()))
	assert.ErrorIs(t, err, transport.ErrUnauthorized)
	err = c.ConfirmDelete(ctx, transport.DeleteAggregate(ref()), "token")
	assert.ErrorIs(t, err, transport.ErrBadDeleteToken)
}

// Issue 30, item 8: the client sends no conditional request, so a 304 is
// not an answer: not to a store (which may or may not have been stored),
// not to a read.
func TestNotModifiedIsNotSuccess(t *testing.T) {
	ctx := context.Background()
	s := newScript(t, status(304, ``))
	c := s.client(t, zeroRetry(0))
	err := c.Store(ctx, ref(), oneEvent, transport.Any)
	assert.ErrorIs(t, err, transport.ErrAmbiguous)
	_, err = c.Exists(ctx, ref())
	assert.ErrorIs(t, err, transport.ErrUnavailable)
	assert.ErrorContains(t, err, "304")
}

// Issue 30, item 8: a 408 means the server took nothing: retried.
func TestRequestTimeoutIsRetried(t *testing.T) {
	s := newScript(t, status(408, ``), status(200, page))
	_, err := s.client(t).Load(context.Background(), ref(), 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(2), s.hits.Load())
}

// Issue 30, item 8: a key no header can carry as it is fails New, with a
// message that says why and not what the key is.
func TestKeysWithWhitespaceRefused(t *testing.T) {
	for _, c := range []struct{ access, secret, why string }{
		{"AKIA-one\n", "secret-one", "access key has whitespace at byte 9 of 9"},
		{"AKIA-two", " secret-two", "secret access key has whitespace at byte 1"},
		{"AKIA-three", "secret\tthree", "whitespace"},
		{"AKIA-four\x00", "secret-four", "control character"},
		{"AKIA-five", "secret-fivé", "outside ASCII"},
	} {
		_, err := serialized.New(serialized.WithKeys(c.access, c.secret))
		require.Error(t, err, c.why)
		assert.ErrorContains(t, err, c.why)
		assert.NotContains(t, err.Error(), strings.TrimSpace(c.access))
		assert.NotContains(t, err.Error(), strings.TrimSpace(c.secret))
	}
}

// Issue 20, item 2: NewFromEnv with a loopback base URL and no keys talks
// to a local server started without keys; elsewhere the error says what to
// set.
func TestNewFromEnvKeylessLoopback(t *testing.T) {
	srv := localserver.NewServer(memory.New())
	defer srv.Close()
	t.Setenv(serialized.EnvAccessKey, "")
	t.Setenv(serialized.EnvSecretKey, "")
	t.Setenv(serialized.EnvBaseURL, srv.URL)
	c, err := serialized.NewFromEnv()
	require.NoError(t, err)
	r := ref()
	require.NoError(t, c.Store(context.Background(), r, oneEvent, transport.MustNotExist))
	ok, err := c.Exists(context.Background(), r)
	require.NoError(t, err)
	assert.True(t, ok)

	for _, base := range []string{"http://localhost:8080", "http://[::1]:8080", "http://127.0.0.2:1"} {
		_, err := serialized.New(serialized.WithEnv(func(k string) string { return map[string]string{serialized.EnvBaseURL: base}[k] }))
		assert.NoError(t, err, base)
	}
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }
	_, err = serialized.New(serialized.WithEnv(env(nil)))
	require.Error(t, err)
	assert.ErrorContains(t, err, "SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY not set")
	assert.ErrorContains(t, err, "SERIALIZED_BASE_URL")
	assert.ErrorContains(t, err, "https://api.serialized.io, which is not a loopback address")
	_, err = serialized.New(serialized.WithEnv(env(map[string]string{serialized.EnvBaseURL: "http://192.0.2.1:8080"})))
	assert.ErrorContains(t, err, "SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY not set")
	_, err = serialized.New(serialized.WithEnv(env(map[string]string{serialized.EnvAccessKey: testAccess, serialized.EnvBaseURL: srv.URL})))
	assert.EqualError(t, err, "serialized: SERIALIZED_SECRET_ACCESS_KEY not set (SERIALIZED_ACCESS_KEY is): set SERIALIZED_SECRET_ACCESS_KEY too")
	_, err = serialized.New(serialized.WithEnv(env(nil)), serialized.WithKeys(testAccess, testSecret))
	assert.NoError(t, err, "keys given after the environment count")
}

// Issue 20, item 6: a refused connection is retried with a Warn log each
// time, and the final error says how many attempts over how long.
func TestRefusedConnectionRetriesAreLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	core, logs := observer.New(zapcore.InfoLevel)
	c, err := serialized.New(serialized.WithBaseURL("http://"+addr), serialized.WithKeys(testAccess, testSecret),
		serialized.WithLogger(zap.New(core)), zeroRetry(3))
	require.NoError(t, err)
	_, err = c.Load(context.Background(), ref(), 0, 0)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	assert.ErrorContains(t, err, "connection refused")
	assert.ErrorContains(t, err, "gave up after 4 attempts over ")
	retries := logs.FilterMessage("request failed, retrying").All()
	require.Len(t, retries, 3)
	for i, e := range retries {
		assert.Equal(t, zapcore.WarnLevel, e.Level)
		assert.Equal(t, int64(i+1), e.ContextMap()["attempt"])
	}
}

// Issue 30, item 6: a key echoed quoted or query-escaped is masked too.
func TestEchoedKeysAreRedactedInEveryForm(t *testing.T) {
	const access, secret = `AK/x+y=z-1234`, `s"k\q+/=-5678`
	forms := func(k string) []string {
		return []string{k, strings.Trim(strconv.Quote(k), `"`), url.QueryEscape(k)}
	}
	var echo []string
	for _, k := range []string{access, secret} {
		for _, f := range forms(k) {
			echo = append(echo, strconv.Quote("echo "+f))
		}
	}
	s := newScript(t, status(422, `{"errors":[`+strings.Join(echo, ",")+`]}`))
	c := s.client(t, serialized.WithKeys(access, secret))
	err := c.Store(context.Background(), ref(), oneEvent, transport.Any)
	require.ErrorIs(t, err, transport.ErrInvalid)
	for _, k := range []string{access, secret} {
		for _, f := range forms(k) {
			assert.NotContains(t, err.Error(), f)
		}
	}
	assert.Equal(t, 6, strings.Count(err.Error(), "echo ****"))

	broken, err := serialized.New(serialized.WithBaseURL(echoStatusLine(t)), serialized.WithKeys(access, secret), zeroRetry(0))
	require.NoError(t, err)
	_, err = broken.Load(context.Background(), ref(), 0, 0)
	require.ErrorContains(t, err, "malformed HTTP")
	for _, k := range []string{access, secret} {
		for _, f := range forms(k) {
			assert.NotContains(t, err.Error(), f)
		}
	}
}

// Issue 30, item 7: a List page that says hasMore without an aggregate
// would keep a paging reader (the console's) at the same skip forever.
func TestListPageWithoutProgressIsRefused(t *testing.T) {
	s := newScript(t, status(200, `{"aggregates":[],"hasMore":true}`))
	_, err := s.client(t).List(context.Background(), transport.Scope{Type: "order"}, 0, 0)
	require.ErrorIs(t, err, serialized.ErrInconsistentPage)
	assert.ErrorIs(t, err, transport.ErrUnavailable)
}

// The whole conformance suite over HTTP/2 (TLS, as the hosted service
// speaks it): a store without GetBody goes out and comes back as over
// HTTP/1.1.
func TestConformanceHTTP2(t *testing.T) {
	var h2 atomic.Int64
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		api := localserver.NewHandler(memory.New(memory.WithClock(now)), localserver.WithKeys(testAccess, testSecret))
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 {
				h2.Add(1)
			}
			api.ServeHTTP(w, r)
		}))
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret),
			serialized.WithHTTPClient(srv.Client()), zeroRetry(2))
		require.NoError(t, err)
		return client
	})
	assert.Positive(t, h2.Load(), "the requests went over HTTP/2")
}
