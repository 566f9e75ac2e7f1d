package httpguard

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoopbackHost(t *testing.T) {
	for _, h := range []string{"localhost", "localhost:1", "LocalHost", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:80", "[::1]", "[::1]:8080", "::1"} {
		assert.True(t, LoopbackHost(h), h)
	}
	for _, h := range []string{"", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1", "[::2]:80", "0.0.0.0:8080", "[fe80::1%lo]:80"} {
		assert.False(t, LoopbackHost(h), h)
	}
}

func TestSameOrigin(t *testing.T) {
	req := func(host string, origins ...string) bool {
		r := httptest.NewRequest("POST", "/", nil)
		r.Host = host
		for _, o := range origins {
			r.Header.Add("Origin", o)
		}
		return SameOrigin(r)
	}
	assert.True(t, req("127.0.0.1:8080"))
	assert.True(t, req("127.0.0.1:8080", "http://127.0.0.1:8080"))
	assert.True(t, req("localhost", "http://localhost:80"))
	assert.True(t, req("localhost:443", "https://localhost"))
	assert.False(t, req("127.0.0.1:8080", "http://127.0.0.1:8081"))
	assert.False(t, req("127.0.0.1:8080", "https://evil.example"))
	assert.False(t, req("127.0.0.1:8080", "null"))
	assert.False(t, req("127.0.0.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1:8080"))
	assert.False(t, req("127.0.0.1:8080", "ftp://127.0.0.1:8080"))

	fetched := func(host, site, origin string) bool {
		r := httptest.NewRequest("POST", "/", nil)
		r.Host = host
		r.Header.Set("Sec-Fetch-Site", site)
		r.Header.Set("Origin", origin)
		return SameOrigin(r)
	}
	assert.True(t, fetched("127.0.0.1:8080", "same-origin", "https://events.example.com"), "a proxy rewrote Host; the browser says same origin")
	assert.False(t, fetched("127.0.0.1:8080", "cross-site", "http://127.0.0.1:8080"), "the browser's word beats a matching Origin")
	assert.False(t, fetched("127.0.0.1:8080", "same-site", "http://127.0.0.1:8080"))
}

func TestTruncate(t *testing.T) {
	assert.Equal(t, "short", Truncate("short"))
	long := strings.Repeat("x", 10_000)
	assert.Equal(t, MaxLogValue+len("…"), len(Truncate(long)))
}

func TestClientBehindTrustedProxies(t *testing.T) {
	prefixes, err := ParsePrefixes("10.0.0.0/8, 192.0.2.5")
	require.NoError(t, err)
	p := NewProxies(prefixes...)
	req := func(peer string, xff ...string) (string, bool) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = peer
		for _, x := range xff {
			r.Header.Add("X-Forwarded-For", x)
		}
		return p.Client(r)
	}
	a, fw := req("198.51.100.1:5000", "203.0.113.1")
	assert.Equal(t, "198.51.100.1", a, "an untrusted peer's header is ignored")
	assert.False(t, fw)
	a, fw = req("10.0.0.1:5000", "1.1.1.1, 203.0.113.1, 10.0.0.2")
	assert.Equal(t, "203.0.113.1", a, "the right-most address that is not a trusted proxy")
	assert.True(t, fw)
	a, _ = req("192.0.2.5:1", "garbage")
	assert.Equal(t, "192.0.2.5", a, "a malformed header is not believed")
	a, _ = req("10.0.0.1:5000")
	assert.Equal(t, "10.0.0.1", a)
	a, _ = (Proxies{}).Client(httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, "192.0.2.1", a, "the zero value trusts nobody")
	_, err = ParsePrefixes("10.0.0.0/99")
	assert.Error(t, err)
}

// A forwarded address comes back in one form: with a port (which some
// proxies add), a zone or an IPv4-mapped form it would be a new client
// each time, for the sign-in throttle, and a long zone would fill the logs.
func TestClientIsOneFormPerAddress(t *testing.T) {
	p := NewProxies(mustPrefixes(t, "10.0.0.1")...)
	for _, hop := range []string{"198.51.100.7", "198.51.100.7:1234", "198.51.100.7:4321", "[::ffff:198.51.100.7]:80", "::ffff:198.51.100.7"} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "10.0.0.1:5000"
		req.Header.Set("X-Forwarded-For", hop)
		addr, fwd := p.Client(req)
		assert.Equal(t, "198.51.100.7", addr, hop)
		assert.True(t, fwd)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "10.0.0.1:5000"
	req.Header.Set("X-Forwarded-For", "fe80::1%"+strings.Repeat("z", 10_000))
	addr, _ := p.Client(req)
	assert.Equal(t, "fe80::1", addr)
	req.RemoteAddr = "[::ffff:192.0.2.9]:5000"
	addr, _ = p.Client(req)
	assert.Equal(t, "192.0.2.9", addr)
}

func mustPrefixes(t *testing.T, list string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(list)
	require.NoError(t, err)
	return p
}

// A link from another site (or from a local docs server on another port)
// to a keyless console opens it: a top-level GET navigation reads nothing
// for that site and changes nothing. A cross-site form post, a frame or a
// script fetch are still refused.
func TestCheckLoopbackLetsLinksFromOtherSitesOpen(t *testing.T) {
	req := func(method, site, mode, dest string) int {
		r := httptest.NewRequest(method, "/console/", nil)
		r.Host = "localhost:8080"
		r.Header.Set("Origin", "https://docs.example")
		r.Header.Set("Sec-Fetch-Site", site)
		r.Header.Set("Sec-Fetch-Mode", mode)
		r.Header.Set("Sec-Fetch-Dest", dest)
		status, _ := CheckLoopback(r)
		return status
	}
	assert.Zero(t, req("GET", "cross-site", "navigate", "document"))
	assert.Zero(t, req("GET", "same-site", "navigate", "document"))
	assert.Zero(t, req("HEAD", "cross-site", "navigate", "document"))
	assert.Equal(t, 403, req("POST", "cross-site", "navigate", "document"), "a cross-site form post")
	assert.Equal(t, 403, req("GET", "cross-site", "navigate", "iframe"), "a frame")
	assert.Equal(t, 403, req("GET", "cross-site", "no-cors", "image"))
	assert.Equal(t, 403, req("GET", "cross-site", "cors", "empty"), "a script's fetch")

	r := httptest.NewRequest("GET", "/console/", nil)
	r.Host = "evil.example:8080" // DNS rebinding: the host check comes first
	r.Header.Set("Sec-Fetch-Mode", "navigate")
	r.Header.Set("Sec-Fetch-Dest", "document")
	status, _ := CheckLoopback(r)
	assert.Equal(t, 421, status)
}
