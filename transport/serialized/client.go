package serialized

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/tracing"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

// DefaultBaseURL is the hosted Serialized API.
const DefaultBaseURL = "https://api.serialized.io"

// Defaults that fit a hosted API.
const (
	DefaultTimeout          = 60 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultMaxResponseBytes = 64 << 20
)

// Environment variables NewFromEnv reads.
const (
	EnvAccessKey = "SERIALIZED_ACCESS_KEY"
	EnvSecretKey = "SERIALIZED_SECRET_ACCESS_KEY"
	EnvBaseURL   = "SERIALIZED_BASE_URL"
)

// Option configures a Client.
type Option func(*settings)

type settings struct {
	baseURL string
	access  string
	secret  string
	// fromEnv: the keys were to come from the environment (WithEnv); New
	// checks them once every option has applied.
	fromEnv bool
	hc      *http.Client
	log     *zap.Logger
	retry   func() backoff.BackOff
	timeout time.Duration
	maxResp int64
	maxWait time.Duration
	now     func() time.Time
	tp      trace.TracerProvider
	errs    []error
}

// WithTracerProvider makes a span of every HTTP call (method, path without
// query, status, attempt) and sends the trace context in the standard
// traceparent header, so a server's spans join the caller's trace. Without
// it no span is made.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(s *settings) { s.tp = tp } }

// WithBaseURL sets the API's base URL (default DefaultBaseURL).
func WithBaseURL(u string) Option { return func(s *settings) { s.baseURL = u } }

// WithKeys sets the access key and the secret access key.
func WithKeys(accessKey, secretKey string) Option {
	return func(s *settings) { s.access, s.secret = accessKey, secretKey }
}

// WithHTTPClient sends every request through hc: its Transport and Jar (the
// Client's own timeout applies per attempt through the request context).
// hc's redirect policy is not used: the client follows no redirect, whatever
// hc's CheckRedirect says, because a redirect would carry the keys to
// wherever it points and turn a store (POST) into a GET. A 3xx answer is an
// error. hc itself is not modified.
func WithHTTPClient(hc *http.Client) Option {
	return func(s *settings) {
		if hc != nil {
			s.hc = hc
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(s *settings) {
		if l != nil {
			s.log = l
		}
	}
}

// WithRetry sets the retry policy of one call, as a factory (a
// backoff.BackOff is stateful). Default: DefaultRetry.
func WithRetry(policy func() backoff.BackOff) Option {
	return func(s *settings) {
		if policy != nil {
			s.retry = policy
		}
	}
}

// WithTimeout bounds each attempt of a request (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithMaxResponseBytes bounds the size of a response body the client reads
// (default DefaultMaxResponseBytes); a larger one fails the call.
func WithMaxResponseBytes(n int64) Option {
	return func(s *settings) {
		if n > 0 {
			s.maxResp = n
		}
	}
}

// WithMaxRateLimitWait bounds how long the client waits for a rate-limit
// window to reset before it retries (default 1 minute).
func WithMaxRateLimitWait(d time.Duration) Option {
	return func(s *settings) {
		if d >= 0 {
			s.maxWait = d
		}
	}
}

// WithClock sets the clock used to read Serialized-RateLimit-Reset.
func WithClock(now func() time.Time) Option {
	return func(s *settings) {
		if now != nil {
			s.now = now
		}
	}
}

// WithEnv reads the keys (and the base URL, if set) from getenv, as
// NewFromEnv does from the process environment; a variable that is empty
// leaves the setting as it was. Once every option has applied, New
// requires both keys, except for a base URL on a loopback address
// (localhost, 127.0.0.0/8, ::1) with neither key set: a local server
// started without keys needs none. The error names the variables to set.
func WithEnv(getenv func(string) string) Option {
	return func(s *settings) {
		if getenv == nil {
			s.errs = append(s.errs, errors.New("serialized: WithEnv: nil getenv"))
			return
		}
		s.fromEnv = true
		if v := getenv(EnvAccessKey); v != "" {
			s.access = v
		}
		if v := getenv(EnvSecretKey); v != "" {
			s.secret = v
		}
		if u := getenv(EnvBaseURL); u != "" {
			s.baseURL = u
		}
	}
}

// checkEnvKeys is WithEnv's rule, checked once every option has applied.
func (s *settings) checkEnvKeys(base *url.URL) error {
	if !s.fromEnv || s.access != "" && s.secret != "" {
		return nil
	}
	if s.access == "" && s.secret == "" {
		if isLoopback(base.Hostname()) {
			return nil // a local server without keys
		}
		return fmt.Errorf("serialized: %s and %s not set: set both to the API's keys "+
			"(or, for a local server started without keys, set %s to its loopback address, "+
			"such as http://127.0.0.1:8080; the base URL is %s, which is not a loopback address)",
			EnvAccessKey, EnvSecretKey, EnvBaseURL, base.Redacted())
	}
	missing, set := EnvSecretKey, EnvAccessKey
	if s.access == "" {
		missing, set = EnvAccessKey, EnvSecretKey
	}
	return fmt.Errorf("serialized: %s not set (%s is): set %s too", missing, set, missing)
}

// isLoopback reports whether host names this machine only.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkKey refuses a key that no header can carry as it is: one with
// whitespace (a trailing newline read from a file, say), a control
// character or a byte outside printable ASCII. The message says where, never
// what the key is.
func checkKey(name, key string) error {
	for i := 0; i < len(key); i++ {
		if b := key[i]; b <= ' ' || b >= 0x7f {
			what := "a control character"
			switch {
			case b == ' ', b == '\t', b == '\n', b == '\r':
				what = "whitespace"
			case b >= 0x80:
				what = "a byte outside ASCII"
			}
			return fmt.Errorf("serialized: the %s has %s at byte %d of %d (keys are printable ASCII; check for a trailing newline or a space where the key was read)",
				name, what, i+1, len(key))
		}
	}
	return nil
}

// DefaultRetry is the default policy of one call: exponential backoff from
// 100ms, doubling up to 5s, ±50% jitter, at most 5 retries and 30s.
func DefaultRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 30 * time.Second
	b.Reset()
	return backoff.WithMaxRetries(b, 5)
}

// Client is the HTTP transport. It implements transport.Transport and
// transport.Lister and is safe for concurrent use.
type Client struct {
	base    *url.URL
	baseURL string // base.String(), built once
	// keys sits behind a pointer: fmt prints a pointer inside a struct as
	// an address, so even a Client value printed with %+v or %#v (which
	// does not reach the masking methods of *Client) shows no key.
	keys *keys
	// send makes one exchange: the default transport's RoundTrip, which
	// follows no redirect, or a caller's http.Client's Do.
	send func(*http.Request) (*http.Response, error)
	// redact removes the keys from text taken from a response or from
	// net/http's errors (a server or proxy may echo request headers).
	redact  *strings.Replacer
	log     *zap.Logger
	retry   func() backoff.BackOff
	timeout time.Duration
	maxResp int64
	maxWait time.Duration
	now     func() time.Time
	tracer  trace.Tracer // nil: no spans
}

var (
	_ transport.Transport = (*Client)(nil)
	_ transport.Lister    = (*Client)(nil)
)

// newTransport is the default: pooled connections and bounded dials. It
// sets no ResponseHeaderTimeout: each attempt's context bounds the whole
// exchange already (WithTimeout), and a second timer per request would
// only cost time. The client calls its RoundTrip directly: no redirect is
// followed (a redirect would carry the keys to wherever it points), and
// no http.Client copies each request's headers for one.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.MaxIdleConns = 100
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// New returns a client. It fails for a malformed base URL or options that
// contradict each other; it sends nothing.
func New(opts ...Option) (*Client, error) {
	s := &settings{baseURL: DefaultBaseURL, log: zap.NewNop(), retry: DefaultRetry, timeout: DefaultTimeout,
		maxResp: DefaultMaxResponseBytes, maxWait: time.Minute, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	if err := errors.Join(s.errs...); err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimRight(s.baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("serialized: base URL %q must be an http or https URL without credentials, query or fragment", redactURL(s.baseURL))
	}
	if err := s.checkEnvKeys(u); err != nil {
		return nil, err
	}
	if err := errors.Join(checkKey("access key", s.access), checkKey("secret access key", s.secret)); err != nil {
		return nil, err
	}
	send := newTransport().RoundTrip
	if s.hc != nil {
		// A copy of the caller's client that follows no redirect: the
		// 3xx answer comes back as it is.
		hc := *s.hc
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		send = hc.Do
	}
	return &Client{base: u, baseURL: u.String(),
		keys: &keys{access: s.access, secret: s.secret, headers: newRequestHeaders(s.access, s.secret, s.hc == nil)}, send: send, redact: keyRedactor(s.access, s.secret), log: s.log, retry: s.retry,
		timeout: s.timeout, maxResp: s.maxResp, maxWait: s.maxWait, now: s.now, tracer: tracing.Tracer(s.tp)}, nil
}

// keyRedactor masks the keys in text: as they are, and as they look quoted
// (net/http quotes what it cannot parse) or query-escaped.
func keyRedactor(keys ...string) *strings.Replacer {
	var pairs []string
	for _, k := range keys {
		if k == "" {
			continue
		}
		forms := []string{k, strings.Trim(strconv.Quote(k), `"`), url.QueryEscape(k)}
		for i, f := range forms {
			if !slices.Contains(forms[:i], f) {
				pairs = append(pairs, f, "****")
			}
		}
	}
	return strings.NewReplacer(pairs...)
}

// keys are the access keys and the request headers that carry them.
type keys struct {
	access, secret string
	headers        requestHeaders
}

// requestHeaders are the headers every request carries, built once. A
// request's header map shares their value slices: net/http and a
// well-behaved RoundTripper only read a request's header values, and the
// client never appends to them, so a request costs one map at most and no
// canonicalising. With the default transport, which only reads a request's
// header map too, a request without a tenant shares a whole map and costs
// none; a caller's http.Client gets a map of its own every time, in case
// its RoundTripper sets a header of its own on the request.
type requestHeaders struct {
	access, secret []string // nil without keys
	json           []string
	// shared maps for the default transport: without and with a body
	plain, withBody http.Header
}

func newRequestHeaders(access, secret string, share bool) requestHeaders {
	h := requestHeaders{json: []string{"application/json"}}
	if access != "" || secret != "" {
		h.access, h.secret = []string{access}, []string{secret}
	}
	if share {
		h.plain, h.withBody = h.build(false, ""), h.build(true, "")
	}
	return h
}

// header returns the header map of one request.
func (h requestHeaders) header(withBody bool, tenant string) http.Header {
	switch {
	case tenant != "" || h.plain == nil:
		return h.build(withBody, tenant)
	case withBody:
		return h.withBody
	}
	return h.plain
}

func (h requestHeaders) build(withBody bool, tenant string) http.Header {
	hd := make(http.Header, 4)
	if h.access != nil {
		hd[wire.HeaderAccessKey] = h.access
		hd[wire.HeaderSecretAccessKey] = h.secret
	}
	if withBody {
		hd["Content-Type"] = h.json
	}
	if tenant != "" {
		hd[wire.HeaderTenantID] = []string{tenant}
	}
	return hd
}

// NewFromEnv returns a client configured from SERIALIZED_ACCESS_KEY,
// SERIALIZED_SECRET_ACCESS_KEY and, if set, SERIALIZED_BASE_URL; opts apply
// after them. A missing key is an error naming the variables to set, except
// that a base URL on a loopback address needs no keys when neither is set
// (a local server started without keys).
func NewFromEnv(opts ...Option) (*Client, error) {
	return New(append([]Option{WithEnv(os.Getenv)}, opts...)...)
}

// BaseURL returns the API's base URL.
func (c *Client) BaseURL() string { return c.baseURL }

// String describes the client with its keys masked. (A Client value,
// which has none of these methods, prints its keys' place as an address.)
func (c *Client) String() string {
	return fmt.Sprintf("serialized.Client{baseURL: %s, accessKey: %s, secretKey: %s}", c.base, mask(c.keys.access), mask(c.keys.secret))
}

// GoString is String, so %#v masks the keys too.
func (c *Client) GoString() string { return c.String() }

// Format prints String for every verb, so no verb prints a key.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

func mask(key string) string {
	if key == "" {
		return "(unset)"
	}
	return "****"
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if len(raw) > 100 {
			return raw[:100] + "..."
		}
		return raw
	}
	u.User = url.User("****")
	return u.String()
}
