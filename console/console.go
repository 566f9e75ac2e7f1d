// Package console is a read-only web console over a transport: the
// aggregate types with their counts, the aggregates of a type, one
// aggregate's history batch by batch, and the live feed. sourced-server
// serves it under /console/; any program can mount Handler itself.
//
// It reads through the same transport the API serves, never around it:
// type counts and the live feed need a transport.Feeder, the aggregate
// list a transport.Lister; without them those pages say so.
//
// Behind the same keys as the API: a person signs in once with the access
// key and the secret, and gets a session cookie (HttpOnly, SameSite=Strict,
// Secure over TLS or with WithSecureCookie). Sign-in is throttled per client
// address, and sign-in and sign-out refuse other origins. Without keys
// configured (a loopback development server) the console is open, to
// loopback Host names and its own origin only (WithAnyHost lifts that). A
// store failure shows as "store unavailable"; its cause goes to the log. Every page is rendered through html/template, and the
// live feed builds its rows with textContent, so event data and names,
// which are untrusted input, always show as text.
//
// Everything is embedded in the binary: no build step, no CDN, works
// offline.
//
// Experimental: this package is outside the compatibility promise (see
// README, "Compatibility"); its API may change in any minor version.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/transport"
)

// Prefix is the path the console expects to be mounted at.
const Prefix = "/console/"

// CookieName is the name of the session cookie.
const CookieName = "sourced_console"

// signInFormTimeout bounds the reading of the sign-in form.
const signInFormTimeout = 5 * time.Second

// SessionTTL is how long a sign-in lasts.
const SessionTTL = 12 * time.Hour

//go:embed assets templates
var files embed.FS

// Option configures a console.
type Option func(*Console)

// WithKeys requires a sign-in with these keys (the API's keys). Without it
// the console is open to whoever reaches it.
func WithKeys(accessKey, secretKey string) Option {
	return func(c *Console) {
		c.access, c.secret = digest(accessKey), digest(secretKey)
		c.keyed = true
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(c *Console) {
		if l != nil {
			c.log = l
		}
	}
}

// WithClock sets the clock that dates and expires sessions.
func WithClock(now func() time.Time) Option {
	return func(c *Console) {
		if now != nil {
			c.now = now
		}
	}
}

// WithSecureCookie marks the session cookie Secure even when the request
// came over plain HTTP: set it when a proxy in front terminates TLS, so the
// browser never sends the cookie over a plain connection. Without it the
// cookie is Secure when the console itself serves TLS.
func WithSecureCookie() Option {
	return func(c *Console) { c.secureCookie = true }
}

// WithAnyHost turns off the checks a console without keys makes by
// default: that the Host header is a loopback name and that a browser's
// Origin is the console's own (against DNS rebinding and cross-site
// requests). Give it only to a console without keys that is reached beyond
// loopback on purpose.
func WithAnyHost() Option {
	return func(c *Console) { c.anyHost = true }
}

// WithTrustedProxies names the reverse proxies (addresses as /32 or /128
// prefixes, or networks) whose X-Forwarded-For header the console believes
// for the client's address, which the sign-in throttle and the logs use.
// Without it the client is the connection's peer.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(c *Console) { c.proxies = httpguard.NewProxies(prefixes...) }
}

// WithLiveWait sets how long one live-feed request waits for a batch
// (default 20 s, at most transport.MaxFeedWait).
func WithLiveWait(d time.Duration) Option {
	return func(c *Console) {
		if d > 0 && d <= transport.MaxFeedWait {
			c.liveWait = d
		}
	}
}

// Console is the console's http.Handler. Build it with New.
type Console struct {
	tr       transport.Transport
	log      *zap.Logger
	now      func() time.Time
	liveWait time.Duration

	keyed          bool
	access, secret []byte
	formTimeout    time.Duration // to read the sign-in form
	secureCookie   bool
	anyHost        bool
	proxies        httpguard.Proxies
	throttle       *throttle

	mu       sync.Mutex
	sessions map[string]time.Time // session id digest -> expiry

	pages  map[string]*template.Template
	mux    *http.ServeMux
	static http.Handler
}

// New returns a console over tr, to be mounted at Prefix.
func New(tr transport.Transport, opts ...Option) (*Console, error) {
	if tr == nil {
		return nil, errors.New("console: nil transport")
	}
	c := &Console{tr: tr, log: zap.NewNop(), now: time.Now, liveWait: 20 * time.Second, sessions: map[string]time.Time{},
		throttle: newThrottle(), formTimeout: signInFormTimeout}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	if err := c.parse(); err != nil {
		return nil, err
	}
	assets, err := fs.Sub(files, "assets")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix(Prefix+"assets/", noListing(http.FileServerFS(assets)))
	c.routes()
	return c, nil
}

func digest(s string) []byte { d := sha256.Sum256([]byte(s)); return d[:] }

// ServeHTTP serves the console with headers that keep the browser strict:
// scripts and styles only from the console itself, no framing, no sniffing.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if !c.keyed && !c.anyHost {
		if status, msg := httpguard.CheckLoopback(r); status != 0 {
			httpguard.DropBody(w, r)
			http.Error(w, msg, status)
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// noListing answers 404 for a directory instead of listing it.
func noListing(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin refuses (403) a form post whose Origin is another site's: a
// cross-site page must not sign a person in or out.
func sameOrigin(w http.ResponseWriter, r *http.Request) bool {
	if httpguard.SameOrigin(r) {
		return true
	}
	httpguard.DropBody(w, r)
	http.Error(w, "cross-origin request refused", http.StatusForbidden)
	return false
}

func (c *Console) routes() {
	m := http.NewServeMux()
	m.Handle("GET "+Prefix+"assets/", c.static)
	m.HandleFunc("GET "+Prefix+"login", c.loginPage)
	m.HandleFunc("POST "+Prefix+"login", c.login)
	m.HandleFunc("POST "+Prefix+"logout", c.logout)
	m.Handle("GET "+Prefix+"{$}", c.signedIn(c.home))
	m.Handle("GET "+Prefix+"types/{type}", c.signedIn(c.typePage))
	m.Handle("GET "+Prefix+"aggregates/{type}/{id}", c.signedIn(c.aggregatePage))
	m.Handle("GET "+Prefix+"feed", c.signedIn(c.feedPage))
	m.Handle("GET "+Prefix+"api/feed", c.signedIn(c.feedAPI))
	m.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", pageData{Title: "Not found", Error: "There is no such page in the console."})
	})
	c.mux = m
}

// signedIn lets a request through when it carries a live session (or when
// the console has no keys); pages send the browser to the sign-in form,
// the JSON endpoint answers 401.
func (c *Console) signedIn(next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.session(r) {
			next(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, Prefix+"api/") {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
	})
}

func (c *Console) session(r *http.Request) bool {
	if !c.keyed {
		return true
	}
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return false
	}
	key := hex.EncodeToString(digest(ck.Value))
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.sessions[key]
	if !ok {
		return false
	}
	if !c.now().Before(exp) {
		delete(c.sessions, key)
		return false
	}
	return true
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if !c.keyed {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", pageData{Title: "Sign in"})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(w, r) {
		return
	}
	if !c.keyed {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	client, _ := c.proxies.Client(r)
	remote := zap.String("remote", httpguard.Truncate(client))
	wait, n, lock := c.throttle.attempt(client, c.now())
	if wait > 0 {
		c.log.Warn("console sign-in refused: locked out", remote, zap.Duration("wait", wait))
		httpguard.DropBody(w, r)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		c.render(w, r, http.StatusTooManyRequests, "login", pageData{Title: "Sign in", Error: "Too many failed sign-ins from your address: try again later."})
		return
	}
	// The form is two keys: it comes at once or not at all. A client that
	// sends it a byte at a time gets formTimeout, not the server's whole
	// read timeout, to hold its connection.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(c.formTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.render(w, r, http.StatusBadRequest, "login", pageData{Title: "Sign in", Error: "The form could not be read."})
		return
	}
	okA := subtle.ConstantTimeCompare(digest(r.PostForm.Get("access_key")), c.access)
	okS := subtle.ConstantTimeCompare(digest(r.PostForm.Get("secret_key")), c.secret)
	if okA&okS != 1 {
		c.log.Warn("console sign-in refused", remote, zap.Int("failures", n), zap.Duration("locked_for", lock))
		c.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Sign in", Error: "Those keys are not the server's keys."})
		return
	}
	c.throttle.succeed(client)
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		c.render(w, r, http.StatusInternalServerError, "error", pageData{Title: "Sign in", Error: "No session could be made."})
		return
	}
	id := hex.EncodeToString(raw)
	now := c.now()
	c.mu.Lock()
	for k, exp := range c.sessions { // drop expired sessions as new ones come
		if !now.Before(exp) {
			delete(c.sessions, k)
		}
	}
	c.sessions[hex.EncodeToString(digest(id))] = now.Add(SessionTTL)
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: c.secureCookie || r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(SessionTTL / time.Second),
	})
	c.log.Info("console sign-in", remote)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(w, r) {
		return
	}
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, hex.EncodeToString(digest(ck.Value)))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: Prefix, HttpOnly: true, Secure: c.secureCookie || r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// requestContext bounds the store calls of one page.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}
