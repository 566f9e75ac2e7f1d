package main

import (
	"bytes"
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// DefaultMaxConns is -max-conns's default: open connections the server
// holds at once. Set the process's file-descriptor limit above it (see
// docs/security.md).
const DefaultMaxConns = 10_000

// readyCacheTTL is how long one /readyz answer is reused: a flood of
// probes reaches the store once a second at most.
const readyCacheTTL = time.Second

// securityConfig is the part of the configuration issue 27 added: limits,
// proxies and the console's cookie.
type securityConfig struct {
	maxConns     int
	anonLimit    int
	proxiesFlag  string
	proxies      []netip.Prefix
	cookieSecure bool
}

// register adds the flags (and their environment variables) to fs.
func (s *securityConfig) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.IntVar(&s.maxConns, "max-conns", DefaultMaxConns, "most connections open at once; more wait to be accepted (set the file-descriptor limit above it)")
	fs.IntVar(&s.anonLimit, "rate-limit-unauth", 1000, "requests without valid keys allowed per rate window (counted apart from -rate-limit, which is the keys')")
	fs.StringVar(&s.proxiesFlag, "trusted-proxy", getenv("SOURCED_TRUSTED_PROXIES"), "addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For the logs and the console's sign-in throttle believe, comma-separated (env SOURCED_TRUSTED_PROXIES)")
	fs.BoolVar(&s.cookieSecure, "cookie-secure", envBool(getenv("SOURCED_COOKIE_SECURE")), "mark the console's session cookie Secure even over plain HTTP: set it behind a proxy that terminates TLS (env SOURCED_COOKIE_SECURE=1)")
}

func envBool(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// check validates the flags once parsed.
func (s *securityConfig) check() error {
	if s.maxConns < 1 {
		return errors.New("-max-conns must be at least 1")
	}
	if s.anonLimit < 1 {
		return errors.New("-rate-limit-unauth must be at least 1")
	}
	p, err := httpguard.ParsePrefixes(s.proxiesFlag)
	if err != nil {
		return fmt.Errorf("-trusted-proxy: %w", err)
	}
	s.proxies = p
	return nil
}

// serverOptions are the API's options from these flags. anyHost is for a
// server without keys listening beyond loopback on purpose.
func (s *securityConfig) serverOptions(window time.Duration, anyHost bool) []localserver.Option {
	opts := []localserver.Option{localserver.WithUnauthenticatedRateLimit(s.anonLimit, window),
		localserver.WithTrustedProxies(s.proxies...)}
	if anyHost {
		opts = append(opts, localserver.WithAnyHost())
	}
	return opts
}

// consoleOptions are the console's options from these flags.
func (s *securityConfig) consoleOptions(anyHost bool) []console.Option {
	opts := []console.Option{console.WithTrustedProxies(s.proxies...)}
	if s.cookieSecure {
		opts = append(opts, console.WithSecureCookie())
	}
	if anyHost {
		opts = append(opts, console.WithAnyHost())
	}
	return opts
}

// withConsoleRedirect sends a browser that opens the server's root (a GET
// of / that accepts HTML) to the console, instead of the API's 401 JSON.
func withConsoleRedirect(next http.Handler, consoleOn bool) http.Handler {
	if !consoleOn {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, console.Prefix, http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cachedAnswer serves next's answer again for ttl: the first request after
// ttl runs next (one at a time; the others wait for it and share its
// answer), so however many requests come, next runs once per ttl at most.
type cachedAnswer struct {
	next http.Handler
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	at      time.Time
	status  int
	ctype   string
	body    []byte
	present bool
}

func cacheAnswer(ttl time.Duration, now func() time.Time, next http.Handler) *cachedAnswer {
	if now == nil {
		now = time.Now
	}
	return &cachedAnswer{next: next, ttl: ttl, now: now}
}

// ServeHTTP answers from the cache, or refreshes it.
func (c *cachedAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	if !c.present || c.now().Sub(c.at) >= c.ttl {
		rec := &captured{header: http.Header{}}
		// The answer is shared: a caller that goes away must not make it
		// a failure for the others.
		c.next.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		c.status, c.ctype, c.body = rec.status, rec.header.Get("Content-Type"), rec.buf.Bytes()
		c.at, c.present = c.now(), true
	}
	status, ctype, body := c.status, c.ctype, c.body
	c.mu.Unlock()
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// captured is a ResponseWriter that keeps the answer.
type captured struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (c *captured) Header() http.Header { return c.header }
func (c *captured) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captured) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.buf.Write(b)
}

// connLimiter caps the connections a server holds: at the cap, Accept
// waits until one closes (it holds one more connection, the others wait in
// the kernel's backlog, and the process never runs out of file
// descriptors), and from nine tenths of the cap on, idle keep-alive
// connections are closed at once instead of after the idle timeout.
//
// At the cap, when one more connection comes, a connection that has not
// yet served a request (a TLS handshake or headers under way, or nothing
// sent at all) is closed to make room for it, oldest first: otherwise
// connections that trickle their headers (slowloris) or send nothing would
// hold every slot for the whole header timeout, again and again, and keep
// keyed clients out.
type connLimiter struct {
	slots chan struct{}
	high  int64
	open  atomic.Int64
	gauge func(n int64) // reports open connections; may be nil

	now func() time.Time

	mu    sync.Mutex
	conns map[net.Conn]*connInfo // the connections the hook has seen open
	idle  map[net.Conn]struct{}  // connections that served a request and wait for the next
	order *list.List             // connections that have served no request, oldest first
}

// connInfo is what the limiter knows of one connection.
type connInfo struct {
	fresh   *list.Element // in order while the connection has served no request
	actives int           // times it turned active
	h2      bool
	idle    time.Time // when an HTTP/2 connection last turned idle
}

// h2IdleGrace is how long an HTTP/2 connection must have been idle before
// the limiter closes it: it turns idle when its last stream ends, which may
// be before that stream's last frames are written out.
const h2IdleGrace = time.Second

// served reports whether the connection has served a request. An HTTP/2
// connection turns active, then idle, as it starts, before any request:
// it has served one when it turns active a second time.
func (ci *connInfo) served() bool {
	if ci.h2 {
		return ci.actives >= 2
	}
	return ci.actives >= 1
}

// metricsMaxConns caps the connections of the separate -metrics-addr
// listener: scrapers need few, and it shares the process's file limit.
const metricsMaxConns = 64

func newConnLimiter(max int, gauge func(int64)) *connLimiter {
	high := int64(max) * 9 / 10
	if high < 1 {
		high = 1
	}
	return &connLimiter{slots: make(chan struct{}, max), high: high, gauge: gauge, now: time.Now,
		conns: map[net.Conn]*connInfo{}, idle: map[net.Conn]struct{}{}, order: list.New()}
}

// under reports whether the server is near its cap.
func (c *connLimiter) under() bool { return c.open.Load() < c.high }

// wrap returns l limited.
func (c *connLimiter) wrap(l net.Listener) net.Listener {
	return &limitedListener{Listener: l, c: c, done: make(chan struct{})}
}

// track is the http.Server's ConnState hook: it keeps the connections that
// have served no request yet, oldest first, and the idle ones, and closes
// an HTTP/1 connection that turns idle near the cap. An HTTP/2 connection
// is idle as it starts, before any request, and turns idle before the last
// frames of its last answer are out: it is kept in the idle set, and
// closed from there once it has been idle for h2IdleGrace. (Closing it at
// once failed every HTTP/2 client near the cap.)
func (c *connLimiter) track(conn net.Conn, state http.ConnState) {
	c.mu.Lock()
	ci := c.conns[conn]
	switch state {
	case http.StateNew:
		c.conns[conn] = &connInfo{fresh: c.order.PushBack(conn)}
	case http.StateActive:
		if ci == nil {
			ci = &connInfo{}
			c.conns[conn] = ci
		}
		delete(c.idle, conn)
		if ci.actives == 0 {
			tc, ok := conn.(*tls.Conn)
			ci.h2 = ok && tc.ConnectionState().NegotiatedProtocol == "h2"
		}
		ci.actives++
		if ci.fresh != nil && ci.served() {
			c.order.Remove(ci.fresh)
			ci.fresh = nil
		}
	case http.StateIdle:
		if ci != nil && ci.fresh != nil {
			break // an HTTP/2 connection starting: it has served nothing yet
		}
		if ci != nil && ci.h2 {
			ci.idle = c.now()
			c.idle[conn] = struct{}{}
			break
		}
		if !c.under() {
			c.mu.Unlock()
			_ = conn.Close()
			return
		}
		c.idle[conn] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		if ci != nil && ci.fresh != nil {
			c.order.Remove(ci.fresh)
		}
		delete(c.conns, conn)
		delete(c.idle, conn)
	}
	c.mu.Unlock()
}

// makeRoom closes the idle connections, or else the oldest connection that
// has served no request yet; each frees its slot as it closes.
func (c *connLimiter) makeRoom() {
	if c.closeIdle() > 0 {
		return
	}
	c.mu.Lock()
	var conn net.Conn
	if e := c.order.Front(); e != nil {
		conn = c.order.Remove(e).(net.Conn)
		if ci := c.conns[conn]; ci != nil {
			ci.fresh = nil
		}
	}
	c.mu.Unlock()
	if conn == nil {
		return // every connection is serving a request: wait for one to end
	}
	closeRaw(conn)
}

// closeRaw closes a connection, under TLS the one beneath it: a TLS close
// first sends an alert, which waits up to 5 s for a peer that does not
// read, and Accept must not wait on a peer.
func closeRaw(conn net.Conn) {
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = nc.NetConn()
	}
	_ = conn.Close()
}

// closeIdle closes the idle connections (HTTP/2 ones once idle for
// h2IdleGrace) and returns how many it closed.
func (c *connLimiter) closeIdle() int {
	c.mu.Lock()
	now := c.now()
	idle := make([]net.Conn, 0, len(c.idle))
	for conn := range c.idle {
		if ci := c.conns[conn]; ci != nil && ci.h2 && now.Sub(ci.idle) < h2IdleGrace {
			continue
		}
		idle = append(idle, conn)
		delete(c.idle, conn)
	}
	c.mu.Unlock()
	for _, conn := range idle {
		closeRaw(conn)
	}
	return len(idle)
}

func (c *connLimiter) opened() {
	n := c.open.Add(1)
	if c.gauge != nil {
		c.gauge(n)
	}
	if n >= c.high {
		c.closeIdle()
	}
}

func (c *connLimiter) closed() {
	n := c.open.Add(-1)
	<-c.slots
	if c.gauge != nil {
		c.gauge(n)
	}
}

type limitedListener struct {
	net.Listener
	c         *connLimiter
	done      chan struct{}
	closeOnce sync.Once
}

// Accept takes a free slot, then accepts. At the cap it accepts the next
// connection first, then makes room for it and waits for a slot: room is
// made only for a connection that is there.
func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.c.slots <- struct{}{}:
	default:
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.c.makeRoom()
		select {
		case l.c.slots <- struct{}{}:
		case <-l.done:
			_ = conn.Close()
			return nil, net.ErrClosed
		}
		l.c.opened()
		return &limitedConn{Conn: conn, c: l.c}, nil
	}
	conn, err := l.Listener.Accept()
	if err != nil {
		<-l.c.slots
		return nil, err
	}
	l.c.opened()
	return &limitedConn{Conn: conn, c: l.c}, nil
}

// Close stops a waiting Accept too.
func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	c    *connLimiter
	once sync.Once
}

// Close frees the connection's slot once.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.c.closed)
	return err
}

// warnFileLimit says at start when the process's file-descriptor limit is
// below what -max-conns needs (the connections, the store's files and
// pool, and some to spare).
func warnFileLimit(log *zap.Logger, maxConns int) {
	limit, ok := fileLimit()
	if !ok {
		return
	}
	if need := uint64(maxConns) + 128; limit < need {
		log.Warn("the file-descriptor limit is below what -max-conns needs: raise it (ulimit -n, LimitNOFILE) or lower -max-conns",
			zap.Uint64("limit", limit), zap.Uint64("needed", need), zap.Int("max_conns", maxConns))
	}
}
