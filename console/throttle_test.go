package console

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport/memory"
)

// gatedBody is a form body whose first Read says it started, then waits
// for the gate: sign-ins held at that point have passed every check that
// comes before reading the form.
type gatedBody struct {
	started func()
	gate    <-chan struct{}
	r       *strings.Reader
	once    sync.Once
}

func (b *gatedBody) Read(p []byte) (int, error) {
	b.once.Do(func() { b.started(); <-b.gate })
	return b.r.Read(p)
}

func (b *gatedBody) Close() error { return nil }

// Sign-ins sent all at once from one address must not all pass the lockout
// check before any of them fails: only the free tries and the one that
// locks the address out get their keys compared.
func TestConcurrentSignInsCannotOutrunTheThrottle(t *testing.T) {
	c, err := New(memory.New(), WithKeys("access", "secret"))
	require.NoError(t, err)
	const n = 30
	gate := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			var once sync.Once
			mark := func() { once.Do(started.Done) }
			defer mark() // answered without reading the form: counts as started too
			req := httptest.NewRequest("POST", "http://127.0.0.1/console/login", nil)
			req.Body = &gatedBody{started: mark, gate: gate, r: strings.NewReader("access_key=access&secret_key=guess")}
			req.ContentLength = -1
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = "192.0.2.7:40000"
			rec := httptest.NewRecorder()
			c.ServeHTTP(rec, req)
			codes[i] = rec.Code
		}()
	}
	started.Wait() // every sign-in is past the lockout check, or refused by it
	close(gate)
	done.Wait()
	compared := 0
	for _, code := range codes {
		if code == http.StatusUnauthorized {
			compared++
		} else {
			assert.Equal(t, http.StatusTooManyRequests, code)
		}
	}
	assert.Equal(t, freeTries+1, compared, "the free tries and the one that locks out, however many come at once")
}

// Failing from many other addresses must not lift a lockout: the throttle
// forgets addresses that are not locked out first.
func TestLockoutSurvivesAFloodOfAddresses(t *testing.T) {
	th := newThrottle()
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i <= freeTries; i++ {
		th.attempt("192.0.2.1", now)
	}
	wait, _, _ := th.attempt("192.0.2.1", now)
	require.Positive(t, wait, "locked out")
	for i := 0; i < 2*maxTracked; i++ {
		th.attempt(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), now)
	}
	wait, _, _ = th.attempt("192.0.2.1", now)
	assert.Positive(t, wait, "still locked out after failures from %d other addresses", 2*maxTracked)
	assert.LessOrEqual(t, len(th.addrs), maxTracked)

	// All locked out: the table stays bounded, and the lockouts that end
	// last are kept.
	th = newThrottle()
	for i := 0; i < maxTracked+10; i++ {
		for j := 0; j <= freeTries; j++ {
			th.attempt(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), now.Add(time.Duration(i)*time.Millisecond))
		}
	}
	assert.LessOrEqual(t, len(th.addrs), maxTracked)
	wait, _, _ = th.attempt("10.0.39.24", now.Add(maxTracked*time.Millisecond)) // address number maxTracked
	assert.Positive(t, wait)
}

// One IPv6 host holds a /64: its addresses count together, so rotating
// through them gains no tries. Ports and zones never make a new address.
func TestThrottleCountsIPv6ByItsSlash64(t *testing.T) {
	th := newThrottle()
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i <= freeTries; i++ {
		th.attempt(fmt.Sprintf("2001:db8:1:2::%x", i+1), now)
	}
	wait, _, _ := th.attempt("2001:db8:1:2:ffff::1", now)
	assert.Positive(t, wait, "another address of the same /64 is locked out too")
	wait, _, _ = th.attempt("2001:db8:1:3::1", now)
	assert.Zero(t, wait, "another /64 is not")
	assert.Equal(t, throttleKey("192.0.2.1"), throttleKey("::ffff:192.0.2.1"))
	assert.Equal(t, throttleKey("fe80::1"), throttleKey("fe80::1%eth0"))
}

// The sign-in form is read within a few seconds, not the server's whole
// read timeout: a client without keys that trickles it holds its
// connection that long at most. httptest's server has no read timeout, so
// without the deadline the answer never comes.
func TestSignInFormIsReadWithinADeadline(t *testing.T) {
	c, err := New(memory.New(), WithKeys("access", "secret"))
	require.NoError(t, err)
	c.formTimeout = 200 * time.Millisecond
	srv := httptest.NewServer(c)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
		"Content-Length: 1000\r\n\r\naccess_key=a") // and the rest never
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "answered once the form's deadline passes")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
