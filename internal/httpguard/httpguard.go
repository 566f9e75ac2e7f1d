// Package httpguard holds the request checks the local server and the
// console share: loopback Host names and same-origin requests for a server
// that runs without keys, the client's address (behind a trusted proxy
// too), and truncation of untrusted values before they are logged.
package httpguard

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// MaxLogValue bounds the untrusted values (paths, tenant headers, forwarded
// addresses) a log line carries.
const MaxLogValue = 256

// Truncate returns s cut to MaxLogValue bytes, marked with "…" when cut.
func Truncate(s string) string {
	if len(s) <= MaxLogValue {
		return s
	}
	return s[:MaxLogValue] + "…"
}

// LoopbackHost reports whether a Host header names this machine by a
// loopback name: localhost, 127.0.0.0/8 or [::1], with or without a port.
// A DNS-rebinding attack reaches a loopback server under its own domain
// name, which this refuses.
func LoopbackHost(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback() && ip.Zone() == ""
}

// SameOrigin reports whether r is not a browser's cross-origin request.
// A browser's own Sec-Fetch-Site header decides when present (a page cannot
// set it): same-origin, or none for a request the person made, pass;
// same-site and cross-site do not. Otherwise the Origin header must be
// absent or name the server the request was sent to: the same host and
// port as its Host header. (Behind a proxy that rewrites Host, only the
// first test can pass, which every current browser supports.)
func SameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "same-site", "cross-site":
		return false
	}
	o := r.Header.Values("Origin")
	if len(o) == 0 {
		return true
	}
	if len(o) > 1 {
		return false
	}
	u, err := url.Parse(o[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
		return false
	}
	return strings.EqualFold(withPort(u.Host, u.Scheme), withPort(r.Host, u.Scheme))
}

// withPort adds the scheme's default port to host when it has none.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "https" {
		return net.JoinHostPort(strings.Trim(host, "[]"), "443")
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "80")
}

// DropBody makes a refusal that leaves the request body unread close the
// connection (HTTP/1.x): otherwise the server reads the rest of the body
// before it answers, so a client that promises a body and sends it a byte
// at a time holds the connection, and its answer, for the whole read
// timeout. Call it before the answer is written. (HTTP/2 resets the stream
// instead; nothing to do.)
func DropBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// LoopbackOnly wraps next for a server without keys: requests whose Host is
// not a loopback name get 421 Misdirected Request, and requests whose
// Origin is another site's get 403, before next sees them.
func LoopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := CheckLoopback(r); status != 0 {
			DropBody(w, r)
			http.Error(w, msg, status)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CheckLoopback returns 0 when r may reach a server without keys, else the
// status and message to refuse it with. A browser's top-level navigation
// (a GET or HEAD of a document: a person followed a link from another site)
// passes the origin test: it changes nothing, the page it opens is not the
// other site's to read, and no frame may hold it (the console sends
// frame-ancestors 'none'). A cross-site form post is a navigation too, but
// not a GET: it is still refused.
func CheckLoopback(r *http.Request) (int, string) {
	if !LoopbackHost(r.Host) {
		return http.StatusMisdirectedRequest, "this server has no keys and answers loopback host names only (localhost, 127.0.0.1, [::1])"
	}
	if !SameOrigin(r) && !topLevelNavigation(r) {
		return http.StatusForbidden, "cross-origin request refused"
	}
	return 0, ""
}

// topLevelNavigation reports whether r is a browser opening a document in a
// tab or window by GET or HEAD, as its Fetch metadata headers (which a page
// cannot set) say.
func topLevelNavigation(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
}

// Proxies is a set of trusted proxy addresses. The zero value trusts none.
type Proxies struct {
	prefixes []netip.Prefix
}

// NewProxies returns the set of proxies in prefixes (a single address is
// a /32 or /128 prefix).
func NewProxies(prefixes ...netip.Prefix) Proxies {
	p := Proxies{prefixes: make([]netip.Prefix, 0, len(prefixes))}
	for _, pr := range prefixes {
		if pr.IsValid() {
			p.prefixes = append(p.prefixes, pr.Masked())
		}
	}
	return p
}

// ParsePrefixes reads a comma-separated list of IP addresses and CIDR
// prefixes ("10.0.0.0/8, 127.0.0.1").
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, pr.Masked())
	}
	return out, nil
}

// Trusted reports whether addr (an IP, or host:port) is a trusted proxy.
func (p Proxies) Trusted(addr string) bool {
	if len(p.prefixes) == 0 {
		return false
	}
	a, ok := parseIP(addr)
	if !ok {
		return false
	}
	for _, pr := range p.prefixes {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

func parseIP(addr string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(addr, "[]"))
	return a.Unmap(), err == nil
}

// Client returns the address of the client behind r: the connection's peer
// address, or, when that peer is a trusted proxy, the right-most address in
// X-Forwarded-For that is not itself a trusted proxy. forwarded reports
// whether the address came from the header. The address is given in one
// form only (no port, no zone, IPv4 not mapped into IPv6), so a client
// cannot pass for many by changing them (some proxies add the client's
// port).
func (p Proxies) Client(r *http.Request) (addr string, forwarded bool) {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if a, ok := parseIP(peer); ok {
		peer = a.WithZone("").String()
	}
	if !p.Trusted(peer) {
		return peer, false
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, ok := parseIP(h)
		if !ok {
			return peer, false // a malformed hop: trust nothing beyond the proxy
		}
		if !p.Trusted(h) {
			return a.WithZone("").String(), true
		}
	}
	return peer, false
}
