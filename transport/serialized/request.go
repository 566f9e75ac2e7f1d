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
	"sync/atomic"
	"time"

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

// resetAware stretches the next wait to the rate-limit reset, if one is
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
// only once an attempt has failed.
func (c *Client) do(ctx context.Context, cl call) (response, error) {
	var (
		res     response
		attempt int
		reset   time.Time // a pending rate-limit reset, read by the policy
	)
	op := func() error {
		attempt++
		r, err, retry := c.attempt(ctx, cl)
		if err == nil {
			res = r
			return nil
		}
		if ctx.Err() != nil || !retry {
			return backoff.Permanent(err)
		}
		var te *transport.Error
		if errors.As(err, &te) && te.RateLimit != nil && !te.RateLimit.Reset.IsZero() {
			reset = te.RateLimit.Reset
		}
		return err
	}
	policy := func() backoff.BackOff {
		return &resetAware{BackOff: c.retry(), until: &reset, now: c.now, maxWait: c.maxWait}
	}
	notify := func(err error, wait time.Duration) {
		c.log.Info("request failed, retrying", zap.String("op", cl.op), zap.String("method", cl.method),
			zap.String("aggregate_type", cl.ref.Type), zap.String("aggregate_id", cl.ref.ID),
			zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
	}
	if err := retry.Run(ctx, op, policy, notify); err != nil {
		var te *transport.Error
		if !errors.As(err, &te) {
			// backoff returns ctx's error when the context ends between attempts.
			err = transport.Wrap(err, cl.op, cl.ref, transport.ErrUnavailable)
		}
		return response{}, err
	}
	return res, nil
}

// attempt sends the request once. It returns the response, or an error and
// whether trying again is safe and useful.
func (c *Client) attempt(ctx context.Context, cl call) (res response, err error, retry bool) {
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
		return response{}, transport.Wrap(err, cl.op, cl.ref, transport.ErrInvalid), false
	}
	req.Header = c.headers.header(cl.body != nil, cl.ref.Tenant)
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
		if debug {
			c.log.Debug("request failed", c.fields(cl, 0, began, zap.Bool("sent", sent), zap.Error(scrub(err)))...)
		}
		if store && sent {
			return response{}, c.errorf(cl, transport.ErrAmbiguous, 0, "the request was sent, then: %v", scrub(err)), false
		}
		if ctx.Err() != nil {
			return response{}, transport.Wrap(ctx.Err(), cl.op, cl.ref, transport.ErrUnavailable), false
		}
		return response{}, c.errorf(cl, transport.ErrUnavailable, 0, "%v", scrub(err)), true
	}
	defer resp.Body.Close()
	data, rerr := readBody(resp, c.maxResp)
	if debug {
		c.log.Debug("request", c.fields(cl, resp.StatusCode, began)...)
	}
	if rerr == nil && int64(len(data)) > c.maxResp {
		return response{}, c.errorf(cl, transport.ErrUnavailable, resp.StatusCode, "response over %d bytes", c.maxResp), false
	}
	if rerr != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if store && resp.StatusCode/100 == 2 {
			// The status line says the batch was stored; a store's body is empty.
			return response{status: resp.StatusCode, header: resp.Header}, nil, false
		}
		if store {
			return response{}, c.errorf(cl, transport.ErrAmbiguous, resp.StatusCode, "response broken: %v", scrub(rerr)), false
		}
		return response{}, c.errorf(cl, transport.ErrUnavailable, resp.StatusCode, "response broken: %v", scrub(rerr)), true
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return response{status: resp.StatusCode, header: resp.Header, body: data}, nil, false
	}
	e := c.statusError(cl, resp, data)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusServiceUnavailable:
		return response{}, e, true
	case resp.StatusCode >= 500:
		if store {
			e.Kind = transport.ErrAmbiguous
			return response{}, e, false
		}
		return response{}, e, true
	}
	return response{}, e, false
}

// readBody reads a response body of at most limit bytes; a longer one
// comes back with limit+1 bytes, for the caller to reject. A body of
// declared length is read into a buffer of exactly that size: no growing,
// and an empty body allocates nothing.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	n := resp.ContentLength
	if n < 0 || n > limit {
		return io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	var data []byte
	if n > 0 {
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
// that happens.
func (c *Client) statusError(cl call, resp *http.Response, body []byte) *transport.Error {
	var kind error
	switch s := resp.StatusCode; {
	case s == http.StatusBadRequest, s == http.StatusUnprocessableEntity, s == http.StatusRequestEntityTooLarge:
		kind = transport.ErrInvalid
	case s == http.StatusUnauthorized:
		kind = transport.ErrUnauthorized
	case s == http.StatusForbidden:
		kind = transport.ErrBadDeleteToken
	case s == http.StatusNotFound:
		kind = transport.ErrNotFound
	case s == http.StatusConflict:
		kind = transport.ErrConflict
	case s == http.StatusTooManyRequests:
		kind = transport.ErrRateLimited
	case s >= 500:
		kind = transport.ErrUnavailable
	default:
		kind = transport.ErrInvalid
	}
	e := transport.NewError(cl.op, cl.ref, kind)
	e.StatusCode = resp.StatusCode
	if resp.StatusCode/100 == 3 {
		e.Messages = []string{"the server answered with a redirect, which the client does not follow"}
		return e
	}
	var er wire.ErrorResponse
	if len(body) > 0 && json.Unmarshal(body, &er) == nil {
		e.Messages = er.Errors
		if len(e.Messages) == 0 && er.Message != "" {
			e.Messages = []string{er.Message}
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.Header.Get(wire.HeaderRateLimitReset) != "" && kind == transport.ErrRateLimited {
		e.RateLimit = rateLimit(resp.Header)
	}
	return e
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
