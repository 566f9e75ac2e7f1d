package serialized

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/retry"
	"github.com/sourced-go/sourced/internal/tracing"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

// call is one API call: it may take several attempts.
type call struct {
	op     string
	ref    transport.Ref
	method string
	path   string
	// query is the encoded query string, without the '?'.
	query string
	body  []byte
	// wait is how long the server may hold the request before it answers
	// (a long-polling feed read); it stretches the attempt's timeout.
	wait time.Duration
}

// response is what a successful attempt read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// verdict is what an attempt's failure means for the next one.
type verdict struct {
	// retry: trying again is safe and useful.
	retry bool
	// notBefore is when the server said to try again (a rate-limit reset
	// or Retry-After); zero when it did not say.
	notBefore time.Time
}

// resetAware stretches the next wait to the time the server gave, if one is
// pending.
type resetAware struct {
	backoff.BackOff
	until   *time.Time
	now     func() time.Time
	maxWait time.Duration
}

// NextBackOff is the policy's next wait, stretched to a pending reset.
func (r *resetAware) NextBackOff() time.Duration {
	d := r.BackOff.NextBackOff()
	if d == backoff.Stop || r.until.IsZero() {
		return d
	}
	wait := r.until.Sub(r.now())
	*r.until = time.Time{}
	if wait > r.maxWait {
		wait = r.maxWait
	}
	if wait > d {
		return wait
	}
	return d
}

// do runs a call with retries. Every POST is treated as a store: retried
// only when it certainly did not reach the server. The retry policy is built
// only once an attempt has failed. When the call fails after more than one
// attempt, the error says how many and over how long.
func (c *Client) do(ctx context.Context, cl call) (response, error) {
	var (
		res       response
		attempts  int
		notBefore time.Time // when the server said to try again, read by the policy
		last      *transport.Error
		began     = time.Now()
	)
	op := func() error {
		attempts++
		r, v, err := c.attempt(ctx, cl)
		if err == nil {
			res = r
			return nil
		}
		if te, ok := err.(*transport.Error); ok {
			last = te // a type assertion, not errors.As: last stays off the heap
		}
		if ctx.Err() != nil || !v.retry {
			return backoff.Permanent(err)
		}
		if !v.notBefore.IsZero() {
			// A wait that would outlast the caller's deadline is not
			// waited: the call fails now, with the server's answer and the
			// time it gave.
			if deadline, ok := ctx.Deadline(); ok && v.notBefore.Sub(c.now()) > time.Until(deadline) {
				return backoff.Permanent(err)
			}
			notBefore = v.notBefore
		}
		return err
	}
	policy := func() backoff.BackOff {
		return &resetAware{BackOff: c.retry(), until: &notBefore, now: c.now, maxWait: c.maxWait}
	}
	notify := func(err error, wait time.Duration) {
		c.log.Warn("request failed, retrying", zap.String("op", cl.op), zap.String("method", cl.method),
			zap.String("aggregate_type", cl.ref.Type), zap.String("aggregate_id", cl.ref.ID),
			zap.Int("attempt", attempts), zap.Duration("wait", wait), zap.Error(err))
	}
	err := retry.Run(ctx, op, policy, notify)
	if err == nil {
		return res, nil
	}
	var te *transport.Error
	if !errors.As(err, &te) {
		// backoff returns ctx's error when the context ends between
		// attempts: report it with the last answer.
		if last == nil {
			return response{}, transport.Wrap(err, cl.op, cl.ref, transport.ErrUnavailable)
		}
		e := *last
		e.Messages = append([]string(nil), last.Messages...)
		if e.Err == nil {
			e.Err = err
		}
		te = &e
	}
	if attempts > 1 {
		te.Messages = append(te.Messages, fmt.Sprintf("gave up after %d attempts over %s", attempts,
			time.Since(began).Round(time.Millisecond)))
	}
	return response{}, te
}

// attempt sends the request once. It returns the response, or what the
// failure means for another attempt and the error.
func (c *Client) attempt(ctx context.Context, cl call) (res response, v verdict, err error) {
	// Bound the attempt, unless the caller's context ends sooner anyway.
	actx := ctx
	if bound := c.timeout + cl.wait; true {
		if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > bound {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, bound)
			defer cancel()
		}
	}
	// Only a store needs to know whether it went out: reads are repeatable.
	store := cl.method == http.MethodPost
	var wrote atomic.Bool
	if store {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) }}
		actx = httptrace.WithClientTrace(actx, trace)
	}

	target := c.baseURL + cl.path
	if cl.query != "" {
		target += "?" + cl.query
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, target, body)
	if err != nil {
		return response{}, verdict{}, transport.Wrap(err, cl.op, cl.ref, transport.ErrInvalid)
	}
	if store {
		// Only this client decides whether a store goes out again:
		// net/http's HTTP/2 transport resends a request whose body it can
		// rewind after some stream resets, even when the server had read
		// it whole.
		req.GetBody = nil
	}
	req.Header = c.keys.headers.header(cl.body != nil, cl.ref.Tenant)
	if c.tracer != nil {
		var span trace.Span
		actx, span = c.startSpan(actx, cl)
		req = req.WithContext(actx)
		// The shared header map must not carry this request's trace.
		req.Header = req.Header.Clone()
		tracing.Propagator.Inject(actx, propagation.HeaderCarrier(req.Header))
		defer func() { endSpan(span, res, err) }()
	}
	// Request logs cost nothing unless debug logging is on.
	var began time.Time
	debug := c.log.Core().Enabled(zap.DebugLevel)
	if debug {
		began = time.Now()
	}
	resp, err := c.send(req)
	if err != nil {
		sent := wrote.Load()
		why := c.clean(scrub(err).Error())
		if debug {
			c.log.Debug("request failed", c.fields(cl, 0, began, zap.Bool("sent", sent), zap.String("error", why))...)
		}
		if store && sent {
			return response{}, verdict{}, c.errorf(cl, transport.ErrAmbiguous, 0, "the request was sent, then: %s", why)
		}
		if ctx.Err() != nil {
			return response{}, verdict{}, transport.Wrap(ctx.Err(), cl.op, cl.ref, transport.ErrUnavailable)
		}
		return response{}, verdict{retry: true}, c.errorf(cl, transport.ErrUnavailable, 0, "%s", why)
	}
	defer resp.Body.Close()
	var data []byte
	var rerr error
	// A HEAD answer has no body, whatever its Content-Length says.
	if cl.method != http.MethodHead {
		data, rerr = readBody(resp, c.maxResp)
	}
	if debug {
		c.log.Debug("request", c.fields(cl, resp.StatusCode, began)...)
	}
	tooLong := rerr == nil && int64(len(data)) > c.maxResp
	if rerr != nil || tooLong {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		why := fmt.Sprintf("response over %d bytes", c.maxResp)
		if rerr != nil {
			why = "response broken: " + c.clean(scrub(rerr).Error())
		}
		switch {
		case store && resp.StatusCode/100 == 2:
			// The status line says the batch was stored; a store's body is empty.
			return response{status: resp.StatusCode, header: resp.Header}, verdict{}, nil
		case store:
			// The request went out and the answer cannot be read: it may
			// say anything, stored included.
			return response{}, verdict{}, c.errorf(cl, transport.ErrAmbiguous, resp.StatusCode, "%s", why)
		}
		return response{}, verdict{retry: !tooLong}, c.errorf(cl, transport.ErrUnavailable, resp.StatusCode, "%s", why)
	}
	if resp.StatusCode/100 == 2 {
		return response{status: resp.StatusCode, header: resp.Header, body: data}, verdict{}, nil
	}
	e := c.statusError(cl, resp, data)
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		v = verdict{retry: true}
		if e.RateLimit != nil {
			v.notBefore = e.RateLimit.Reset
		}
	case s == http.StatusRequestTimeout:
		// The server gave up waiting for the request: it took nothing.
		v = verdict{retry: true}
	case store && (s >= 500 || s == http.StatusNotModified):
		// A proxy answers 502, 503 or 504 after the backend took the
		// request as readily as before: the batch may have been stored.
		e.Kind = transport.ErrAmbiguous
	case s >= 500:
		v = verdict{retry: true, notBefore: retryAfter(resp.Header, c.now)}
	}
	return response{}, v, e
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date. It
// returns the zero time when there is none or it does not parse.
func retryAfter(h http.Header, now func() time.Time) time.Time {
	v := h.Get("Retry-After")
	if v == "" {
		return time.Time{}
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 || s > 1<<31 {
			return time.Time{}
		}
		return now().Add(time.Duration(s) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}

// preallocMax bounds what readBody allocates on the word of a
// Content-Length header: a body declared longer grows as its bytes arrive,
// so a server that declares much and sends little costs little.
const preallocMax = 256 << 10

// readBody reads a response body of at most limit bytes; a longer one
// comes back with limit+1 bytes, for the caller to reject. A body of
// declared length up to preallocMax is read into a buffer of exactly that
// size: no growing, and an empty body allocates nothing.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	n := resp.ContentLength
	if n < 0 || n > limit {
		return io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	var data []byte
	switch {
	case n > preallocMax:
		buf := bytes.NewBuffer(make([]byte, 0, preallocMax))
		if _, err := buf.ReadFrom(io.LimitReader(resp.Body, n)); err != nil {
			return nil, err
		}
		if int64(buf.Len()) < n {
			return nil, io.ErrUnexpectedEOF
		}
		data = buf.Bytes()
	case n > 0:
		data = make([]byte, n)
		if _, err := io.ReadFull(resp.Body, data); err != nil {
			return nil, err
		}
	}
	// Read on to the end, so a short body is an error and the connection
	// goes back to the pool.
	var probe [1]byte
	if _, err := io.ReadFull(resp.Body, probe[:]); err != io.EOF {
		if err == nil {
			err = errors.New("body longer than its Content-Length")
		}
		return nil, err
	}
	return data, nil
}

func (c *Client) fields(cl call, status int, began time.Time, extra ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.String("op", cl.op), zap.String("method", cl.method), zap.String("path", cl.path),
		zap.Int("status", status), zap.Duration("duration", time.Since(began)), zap.String("tenant", cl.ref.Tenant)}, extra...)
}

// statusError maps an HTTP status to the port's errors: the one place where
// that happens. The messages it keeps from the body are cleaned (see clean).
func (c *Client) statusError(cl call, resp *http.Response, body []byte) *transport.Error {
	var kind error
	switch s := resp.StatusCode; {
	case s == http.StatusBadRequest, s == http.StatusUnprocessableEntity, s == http.StatusRequestEntityTooLarge:
		kind = transport.ErrInvalid
	case s == http.StatusUnauthorized:
		kind = transport.ErrUnauthorized
	case s == http.StatusForbidden:
		// Only a delete's token can be refused; elsewhere the keys were.
		kind = transport.ErrUnauthorized
		if cl.op == opConfirmDelete {
			kind = transport.ErrBadDeleteToken
		}
	case s == http.StatusNotFound:
		kind = transport.ErrNotFound
	case s == http.StatusConflict:
		kind = transport.ErrConflict
	case s == http.StatusTooManyRequests:
		kind = transport.ErrRateLimited
	case s >= 500, s == http.StatusRequestTimeout, s == http.StatusNotModified:
		kind = transport.ErrUnavailable
	default:
		kind = transport.ErrInvalid
	}
	e := transport.NewError(cl.op, cl.ref, kind)
	e.StatusCode = resp.StatusCode
	switch {
	case resp.StatusCode == http.StatusNotModified:
		e.Messages = []string{"the server answered 304 Not Modified to a request that was not conditional"}
		return e
	case resp.StatusCode/100 == 3:
		e.Messages = []string{"the server answered with a redirect, which the client does not follow"}
		return e
	}
	var er wire.ErrorResponse
	if len(body) > 0 && json.Unmarshal(body, &er) == nil {
		msgs := er.Errors
		if len(msgs) == 0 && er.Message != "" {
			msgs = []string{er.Message}
		}
		e.Messages = c.cleanAll(msgs)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		e.RateLimit = rateLimit(resp.Header)
		if e.RateLimit.Reset.IsZero() {
			e.RateLimit.Reset = retryAfter(resp.Header, c.now)
		}
	}
	return e
}

// Bounds on what an error keeps of a server's messages.
const (
	maxMessages     = 20
	maxMessageBytes = 300
)

// clean makes text taken from a response, or from net/http's errors about
// one, fit for an error message, a log line or a span: the keys' values
// are masked (a server or proxy may echo request headers), control
// characters become spaces and the text is cut to maxMessageBytes.
func (c *Client) clean(msg string) string {
	msg = c.redact.Replace(msg)
	if len(msg) > maxMessageBytes {
		cut := maxMessageBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		// The keys are masked already: a cut cannot reveal part of one.
		msg = msg[:cut] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
}

// cleanAll cleans each message and keeps at most maxMessages of them.
func (c *Client) cleanAll(msgs []string) []string {
	if len(msgs) == 0 {
		return nil
	}
	n := min(len(msgs), maxMessages)
	out := make([]string, n, n+1)
	for i := range out {
		out[i] = c.clean(msgs[i])
	}
	if len(msgs) > n {
		out = append(out, fmt.Sprintf("and %d more", len(msgs)-n))
	}
	return out
}

func rateLimit(h http.Header) *transport.RateLimit {
	rl := &transport.RateLimit{}
	rl.Limit, _ = strconv.Atoi(h.Get(wire.HeaderRateLimitLimit))
	rl.Remaining, _ = strconv.Atoi(h.Get(wire.HeaderRateLimitRemaining))
	if s, err := strconv.ParseInt(h.Get(wire.HeaderRateLimitReset), 10, 64); err == nil && s > 0 {
		rl.Reset = time.Unix(s, 0)
	}
	return rl
}

func (c *Client) errorf(cl call, kind error, status int, format string, args ...any) *transport.Error {
	e := transport.NewError(cl.op, cl.ref, kind)
	e.StatusCode = status
	e.Messages = []string{fmt.Sprintf(format, args...)}
	return e
}

// scrub removes the query string from URL errors: it may hold a delete
// token.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// startSpan starts the client span of one HTTP call.
func (c *Client) startSpan(ctx context.Context, cl call) (context.Context, trace.Span) {
	return c.tracer.Start(ctx, "sourced.http "+cl.method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", cl.method), attribute.String("url.path", cl.path),
			attribute.String("server.address", c.base.Host), attribute.String("sourced.op", cl.op),
			attribute.String("sourced.aggregate_type", cl.ref.Type), attribute.String("sourced.aggregate_id", cl.ref.ID)))
}

func endSpan(span trace.Span, res response, err error) {
	if res.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.status))
	}
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", te.StatusCode))
		}
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
