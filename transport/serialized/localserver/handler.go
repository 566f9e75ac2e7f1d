package localserver

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/internal/tracing"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

// DefaultMaxBodyBytes bounds a request body: a full batch of
// transport.MaxBatchEvents events with maximal encryptedData and room for
// their data.
const DefaultMaxBodyBytes = 8 << 20

// Option configures a handler.
type Option func(*handler)

// WithKeys requires every request to carry these keys. Without it the
// server accepts any request (and the binary says so loudly).
func WithKeys(accessKey, secretKey string) Option {
	return func(h *handler) {
		a, s := sha256.Sum256([]byte(accessKey)), sha256.Sum256([]byte(secretKey))
		h.access, h.secret, h.keyed = a[:], s[:], true
	}
}

// WithLogger sets the request logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(h *handler) {
		if l != nil {
			h.log = l
		}
	}
}

// WithMaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option {
	return func(h *handler) {
		if n > 0 {
			h.maxBody = n
		}
	}
}

// WithRateLimit allows limit requests per window; more get 429. The default
// is 100,000 a minute, which local use never reaches.
//
// With keys, the budget is the access key's: only requests that carry the
// valid keys spend it (see WithUnauthenticatedRateLimit for the others).
func WithRateLimit(limit int, window time.Duration) Option {
	return func(h *handler) {
		if limit > 0 && window > 0 {
			h.keyedLimit = newBucket(limit, window)
		}
	}
}

// WithUnauthenticatedRateLimit sets the budget of requests that carry no
// valid keys (default 1,000 a minute): they are counted apart from the keyed
// budget, so requests without keys never use up a keyed client's budget.
// Their answers (401, or 429 once the budget is spent) carry no rate-limit
// headers.
func WithUnauthenticatedRateLimit(limit int, window time.Duration) Option {
	return func(h *handler) {
		if limit > 0 && window > 0 {
			h.anon = newBucket(limit, window)
		}
	}
}

// WithAnyHost turns off the checks a server without keys makes by default:
// that the Host header is a loopback name (localhost, 127.0.0.1, [::1]) and
// that a browser's Origin is the server's own. Give it only to a server
// that listens beyond loopback without keys on purpose; with keys it
// changes nothing.
func WithAnyHost() Option {
	return func(h *handler) { h.anyHost = true }
}

// WithTrustedProxies names the proxies (addresses as /32 or /128 prefixes,
// or networks) whose X-Forwarded-For header the request log believes: for
// a request from one of them, the log's remote address is the right-most
// forwarded address that is not itself a trusted proxy. Without it the log
// carries the connection's peer address only.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return func(h *handler) { h.proxies = httpguard.NewProxies(prefixes...) }
}

// WithTracerProvider makes a server span of every request, joined to the
// caller's trace when the request carries a traceparent header. Without it
// no span is made.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(h *handler) { h.tracer = tracing.Tracer(tp) }
}

// WithClock sets the clock of the rate-limit window.
func WithClock(now func() time.Time) Option {
	return func(h *handler) {
		if now != nil {
			h.now = now
		}
	}
}

type handler struct {
	tracer         trace.Tracer // nil: no spans
	backend        transport.Transport
	access, secret []byte
	keyed          bool
	anyHost        bool
	proxies        httpguard.Proxies
	log            *zap.Logger
	maxBody        int64
	now            func() time.Time
	mux            *http.ServeMux
	drain          <-chan struct{} // closed: waiting feed reads answer at once (WithDrain)

	// keyedLimit is the budget of requests with the valid keys (of every
	// request without keys configured); anon that of requests without them.
	keyedLimit *bucket
	anon       *bucket

	jsonType []string // the Content-Type of a JSON body, shared (see bucket)

	// bodies hold request bodies while they are decoded; decoding copies
	// what it keeps, so a buffer goes back to the pool at once.
	bodies sync.Pool
	// outs hold response bodies while they are streamed.
	outs sync.Pool
}

// Shared header values of API data: a response's header map is copied when
// it is written, and nothing appends to these slices, so sharing is safe.
var (
	noStore   = []string{"private, no-store"}
	noSniff   = []string{"nosniff"}
	varyOnKey = []string{wire.HeaderTenantID + ", " + wire.HeaderAccessKey + ", " + wire.HeaderSecretAccessKey}
)

// NewHandler returns the API over backend (a fresh memory transport when
// nil).
func NewHandler(backend transport.Transport, opts ...Option) http.Handler {
	if backend == nil {
		backend = memory.New()
	}
	h := &handler{backend: backend, log: zap.NewNop(), maxBody: DefaultMaxBodyBytes, now: time.Now,
		keyedLimit: newBucket(100_000, time.Minute), anon: newBucket(1_000, time.Minute)}
	for _, o := range opts {
		o(h)
	}
	h.jsonType = []string{"application/json"}
	h.bodies.New = func() any { return new(bytes.Buffer) }
	h.outs.New = func() any { b := make([]byte, 0, streamChunk+4096); return &b }
	m := http.NewServeMux()
	m.HandleFunc("GET /aggregates/{type}/{id}", h.load)
	m.HandleFunc("HEAD /aggregates/{type}/{id}", h.exists)
	m.HandleFunc("POST /aggregates/{type}/{id}/events", h.store)
	m.HandleFunc("POST /aggregates/{type}/events", h.storeBulk)
	m.HandleFunc("DELETE /aggregates/{type}/{id}", h.deleteAggregate)
	m.HandleFunc("DELETE /aggregates/{type}", h.deleteType)
	m.HandleFunc("GET /aggregates/{type}", h.list)
	m.HandleFunc("GET /feeds", h.feeds)
	m.HandleFunc("GET /feeds/{feed}", h.readFeed)
	m.HandleFunc("HEAD /feeds/{feed}", h.feedHead)
	h.mux = m
	return h
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader remembers the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts an implicit 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// knownMethod returns the method when it is one HTTP defines, "other"
// otherwise: what spans and logs name, so a made-up method cannot make
// them grow.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

// ServeHTTP applies the loopback checks, keys, rate limits and logging,
// then routes.
func (h *handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	logged := h.log.Core().Enabled(zap.InfoLevel)
	var began time.Time
	if logged {
		began = time.Now()
	}
	w := &statusWriter{ResponseWriter: rw}
	if h.tracer != nil {
		method := knownMethod(r.Method)
		ctx := tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := h.tracer.Start(ctx, "sourced-server "+method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", method), attribute.String("url.path", httpguard.Truncate(r.URL.Path))))
		r = r.WithContext(ctx)
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", w.status))
			if w.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(w.status))
			}
			span.End()
		}()
	}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				h.log.Warn("response cut off", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)))
				panic(p)
			}
			h.log.Error("handler panic", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Any("panic", p))
			if w.status == 0 {
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}
		if !logged {
			return
		}
		if ce := h.log.Check(zap.InfoLevel, "request"); ce != nil {
			client, forwarded := h.proxies.Client(r)
			fields := []zap.Field{zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)),
				zap.Int("status", w.status), zap.Duration("duration", time.Since(began)),
				zap.String("tenant", httpguard.Truncate(r.Header.Get(wire.HeaderTenantID))), zap.String("remote", client)}
			if forwarded {
				fields = append(fields, zap.Bool("forwarded", true))
			}
			ce.Write(fields...)
		}
	}()
	if !h.keyed && !h.anyHost {
		if status, msg := httpguard.CheckLoopback(r); status != 0 {
			httpguard.DropBody(w, r)
			writeError(w, status, msg)
			return
		}
	}
	if h.keyed && !h.authorized(r) {
		// No rate-limit headers: they would tell a caller without keys
		// how much the keyed clients ask.
		httpguard.DropBody(w, r)
		if _, _, ok := h.anon.take(h.now()); !ok {
			writeJSON(w, http.StatusTooManyRequests, wire.ErrorResponse{Code: http.StatusTooManyRequests, Message: "rate limit exceeded"})
			return
		}
		writeError(w, http.StatusUnauthorized, "missing or invalid access keys")
		return
	}
	if !h.rate(w) {
		httpguard.DropBody(w, r)
		writeJSON(w, http.StatusTooManyRequests, wire.ErrorResponse{Code: http.StatusTooManyRequests, Message: "rate limit exceeded"})
		return
	}
	if r.Method == http.MethodGet { // API data: for the caller only, per tenant and key
		hd := w.Header()
		hd["Cache-Control"] = noStore
		hd["Vary"] = varyOnKey
		hd["X-Content-Type-Options"] = noSniff // data is written as stored: never let a browser take it for HTML
	}
	h.mux.ServeHTTP(w, r)
}

// authorized compares digests of the keys in constant time, so neither the
// keys nor their lengths leak through timing.
func (h *handler) authorized(r *http.Request) bool {
	a := sha256.Sum256([]byte(r.Header.Get(wire.HeaderAccessKey)))
	s := sha256.Sum256([]byte(r.Header.Get(wire.HeaderSecretAccessKey)))
	okA := subtle.ConstantTimeCompare(a[:], h.access)
	okS := subtle.ConstantTimeCompare(s[:], h.secret)
	return okA&okS == 1
}

// rate counts the request in the keyed budget, sets the rate-limit headers
// and reports whether it is allowed.
func (h *handler) rate(w http.ResponseWriter) bool {
	b := h.keyedLimit
	used, resetValue, ok := b.take(h.now())
	remaining := max(b.limit-used, 0)
	// The names are canonical already: assign without Set's canonicalising.
	hd := w.Header()
	hd[wire.HeaderRateLimitLimit] = b.limitValue
	hd[wire.HeaderRateLimitRemaining] = []string{strconv.Itoa(remaining)}
	hd[wire.HeaderRateLimitReset] = resetValue
	return ok
}

// bucket is one fixed-window rate-limit budget.
type bucket struct {
	limit  int
	window time.Duration
	mu     sync.Mutex
	start  time.Time
	used   int
	// The Limit and Reset header values change once a window at most: they
	// are built then and shared by every response of the window. A
	// response's header map is copied when it is written, and nothing
	// appends to these slices, so sharing them is safe.
	limitValue []string
	resetValue []string
}

func newBucket(limit int, window time.Duration) *bucket {
	return &bucket{limit: limit, window: window, limitValue: []string{strconv.Itoa(limit)}}
}

// take counts one request at now: the requests counted in the window so
// far, the Reset header's value, and whether this one is allowed.
func (b *bucket) take(now time.Time) (used int, resetValue []string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.start.IsZero() || now.Sub(b.start) >= b.window {
		b.start, b.used = now, 0
		b.resetValue = []string{strconv.FormatInt(b.start.Add(b.window).Unix(), 10)}
	}
	if b.used <= b.limit { // stop counting past the limit: no overflow
		b.used++
	}
	return b.used, b.resetValue, b.used <= b.limit
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	writeBody(w, status, b, err, []string{"application/json"})
}

// writeBody writes an encoded JSON body, or a 500 if encoding failed, with
// contentType as the Content-Type header's value.
func writeBody(w http.ResponseWriter, status int, b []byte, err error, contentType []string) {
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":500,"message":"encoding failed"}`)
	}
	hd := w.Header()
	hd["Content-Type"] = contentType
	hd["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, wire.ErrorResponse{Code: status, Message: msg})
}

// phase says where an ErrInvalid came from: the path and query (400) or the
// body (422).
type phase int

const (
	inPath phase = iota
	inBody
)

// fail maps a transport error to its status code, in one place.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error, p phase) {
	var te *transport.Error
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Messages
	}
	switch {
	case errors.Is(err, transport.ErrInvalid):
		if p == inBody {
			if len(msgs) == 0 {
				msgs = []string{"invalid request body"}
			}
			writeJSON(w, http.StatusUnprocessableEntity, wire.ErrorResponse{Errors: msgs})
			return
		}
		writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Code: http.StatusBadRequest, Message: firstOr(msgs, "bad request"), Errors: msgs})
	case errors.Is(err, transport.ErrConflict):
		writeError(w, http.StatusConflict, "expected version does not match")
	case errors.Is(err, transport.ErrNotFound):
		writeError(w, http.StatusNotFound, "aggregate not found")
	case errors.Is(err, transport.ErrBadDeleteToken):
		writeError(w, http.StatusForbidden, "invalid or expired delete token")
	case errors.Is(err, transport.ErrUnauthorized):
		writeError(w, http.StatusUnauthorized, "unauthorized")
	case errors.Is(err, transport.ErrRateLimited):
		writeError(w, http.StatusTooManyRequests, "rate limit exceeded")
	case errors.Is(err, transport.ErrAmbiguous):
		// Not 503, which tells a client that nothing was stored and a
		// resend is safe: the batch may be stored (a statement cancelled
		// or a connection lost after it was sent). A 500 on a store is
		// ambiguous to the client, which then looks before it resends.
		h.log.Error("store outcome unknown", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "store outcome unknown: the batch may or may not be stored")
	case errors.Is(err, transport.ErrUnavailable):
		if r.Context().Err() != nil { // the client left, or the server cancelled the request
			h.log.Warn("request cancelled", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Error(err))
		} else {
			h.log.Error("store unavailable", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Error(err))
		}
		writeError(w, http.StatusServiceUnavailable, "store unavailable")
	default:
		h.log.Error("backend failure", zap.String("method", knownMethod(r.Method)), zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func firstOr(msgs []string, def string) string {
	if len(msgs) > 0 {
		return msgs[0]
	}
	return def
}

func invalid(msg string) error {
	return &transport.Error{Op: "validate", Kind: transport.ErrInvalid, Messages: []string{msg}}
}

// ref reads and checks the tenant, type and id of a request.
func ref(r *http.Request) (transport.Ref, error) {
	ref := transport.Ref{Tenant: r.Header.Get(wire.HeaderTenantID), Type: r.PathValue("type"), ID: r.PathValue("id")}
	if ref.ID == "" {
		return ref, (transport.Scope{Tenant: ref.Tenant, Type: ref.Type}).Validate()
	}
	return ref, ref.Validate()
}

// intParam reads a non-negative integer query parameter.
func intParam(q url.Values, name string, def int64) (int64, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, invalid(fmt.Sprintf("query parameter %s must be a non-negative integer", name))
	}
	return n, nil
}

// decode reads a JSON body within the size bound; a second value or
// trailing garbage is an error.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) (status int, err error) {
	buf := h.bodies.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // do not pin the memory of a rare large body
			buf.Reset()
			h.bodies.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", h.maxBody)
		}
		return http.StatusBadRequest, fmt.Errorf("reading the body: %v", err)
	}
	if len(bytes.TrimSpace(buf.Bytes())) == 0 {
		return http.StatusUnprocessableEntity, errors.New("empty request body")
	}
	// Both reject anything after the one value.
	if req, ok := v.(*wire.StoreRequest); ok {
		err = wire.DecodeStoreRequest(buf.Bytes(), req)
	} else {
		err = json.Unmarshal(buf.Bytes(), v)
	}
	if err != nil {
		return http.StatusUnprocessableEntity, jsonError(err)
	}
	return 0, nil
}

// jsonError says what is wrong with a body in the API's terms: where the
// JSON breaks, or which field has the wrong type; never a Go type's name.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Errorf("invalid JSON: %s must be %s", typ.Field, jsonKind(typ.Type.Kind()))
	case errors.As(err, &typ):
		return fmt.Errorf("invalid JSON: the body must be %s", jsonKind(typ.Type.Kind()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: the body ends too early")
	}
	msg := err.Error()
	if strings.Contains(msg, "Go ") || len(msg) > 200 {
		return errors.New("invalid JSON: a value has the wrong type")
	}
	return fmt.Errorf("invalid JSON: %s", msg)
}

// jsonKind names the JSON value a Go kind decodes from.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another kind of value"
}

// jsonBody reports whether a request's Content-Type is application/json
// (with parameters such as charset or not), said once. Writes must say so:
// a browser sends text/plain across sites without asking first, never
// application/json.
func jsonBody(r *http.Request) bool {
	v := r.Header["Content-Type"]
	if len(v) != 1 { // none, or two that may disagree: which would be the truth?
		return false
	}
	ct := v[0]
	if ct == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// needJSON answers 415 and reports false when a write's body is not
// declared as JSON.
func needJSON(w http.ResponseWriter, r *http.Request) bool {
	if jsonBody(r) {
		return true
	}
	httpguard.DropBody(w, r)
	writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	return false
}

func bodyError(w http.ResponseWriter, status int, err error) {
	if status == http.StatusUnprocessableEntity {
		writeJSON(w, status, wire.ErrorResponse{Errors: []string{err.Error()}})
		return
	}
	writeError(w, status, err.Error())
}
