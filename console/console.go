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
// Secure over TLS). Without keys configured (a loopback development server)
// the console is open. Every page is rendered through html/template, and the
// live feed builds its rows with textContent, so event data and names,
// which are untrusted input, always show as text.
//
// Everything is embedded in the binary: no build step, no CDN, works
// offline.
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
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// Prefix is the path the console expects to be mounted at.
const Prefix = "/console/"

// CookieName is the name of the session cookie.
const CookieName = "sourced_console"

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
	c := &Console{tr: tr, log: zap.NewNop(), now: time.Now, liveWait: 20 * time.Second, sessions: map[string]time.Time{}}
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
	c.static = http.StripPrefix(Prefix+"assets/", http.FileServerFS(assets))
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
	c.mux.ServeHTTP(w, r)
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
	if !c.keyed {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.render(w, r, http.StatusBadRequest, "login", pageData{Title: "Sign in", Error: "The form could not be read."})
		return
	}
	okA := subtle.ConstantTimeCompare(digest(r.PostForm.Get("access_key")), c.access)
	okS := subtle.ConstantTimeCompare(digest(r.PostForm.Get("secret_key")), c.secret)
	if okA&okS != 1 {
		c.log.Info("console sign-in refused", zap.String("remote", r.RemoteAddr))
		c.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Sign in", Error: "Those keys are not the server's keys."})
		return
	}
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
		Name: CookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(SessionTTL / time.Second),
	})
	c.log.Info("console sign-in", zap.String("remote", r.RemoteAddr))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, hex.EncodeToString(digest(ck.Value)))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: Prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// requestContext bounds the store calls of one page.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}
