package faultinject

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"syscall"
	"time"
)

// ErrInjected is the cause of every transport-level error a RoundTripper
// injects, so tests can tell injected failures from real ones.
var ErrInjected = errors.New("injected fault")

// RoundTripper injects faults into HTTP requests on their way to next.
//
// The faults mean, for an HTTP client:
//
//   - Fail(err): the request is never sent; the client sees a refused
//     connection (syscall.ECONNREFUSED wrapped with ErrInjected and err).
//   - FailAfter(err): the request is sent and the server acts on it; the
//     client sees a timeout-like error instead of the response.
//   - Sleep(d): the request waits d (honouring its context) before it goes.
//   - RespondWith(code, header): the request is not sent; the client gets a
//     canned response with that status and a JSON body.
//   - ResetMidBody(n): the request is sent; the response body breaks after n
//     bytes with a connection reset.
//   - LandLater(err, n): the client sees a timeout at once; the request is
//     sent just before the n-th next request (or at Land).
type RoundTripper struct {
	next   http.RoundTripper
	policy Policy
	stats  counters
	holder
}

// Land sends every request still held back by a Later fault now.
func (rt *RoundTripper) Land() { rt.landDue(true, &rt.stats) }

// NewRoundTripper wraps next (http.DefaultTransport when nil) with policy.
// The Op a policy sees is the request's method (GET, POST, HEAD, DELETE).
func NewRoundTripper(next http.RoundTripper, policy Policy) *RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	if policy == nil {
		policy = func(Op) Fault { return NoFault }
	}
	return &RoundTripper{next: next, policy: policy}
}

// RespondWith answers with status code and the given headers, without
// sending the request.
func RespondWith(code int, header map[string]string) Fault {
	return Fault{Kind: Status, Code: code, Header: header}
}

// RateLimited answers 429 with the Serialized-RateLimit-* headers, the
// window resetting at reset.
func RateLimited(reset time.Time) Fault {
	return RespondWith(http.StatusTooManyRequests, map[string]string{
		"Serialized-RateLimit-Limit":     "100",
		"Serialized-RateLimit-Remaining": "0",
		"Serialized-RateLimit-Reset":     strconv.FormatInt(reset.Unix(), 10),
	})
}

// ResetMidBody sends the request and breaks the response body after n bytes.
func ResetMidBody(n int) Fault { return Fault{Kind: ResetBody, Code: n} }

// Stats returns what was injected so far.
func (rt *RoundTripper) Stats() Stats { return rt.stats.snapshot() }

// RoundTrip implements http.RoundTripper.
func (rt *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.landDue(false, &rt.stats)
	f := rt.policy(Op(req.Method))
	rt.stats.count(f)
	switch f.Kind {
	case Later:
		held := req.Clone(context.WithoutCancel(req.Context()))
		if req.Body != nil {
			body, err := io.ReadAll(req.Body)
			closeBody(req)
			if err != nil {
				return nil, err
			}
			held.Body = io.NopCloser(bytes.NewReader(body))
			held.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		rt.hold(f.Calls, func() {
			if resp, err := rt.next.RoundTrip(held); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
		// To the client, the request was written: it is on its way.
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.WroteRequest != nil {
			trace.WroteRequest(httptrace.WroteRequestInfo{})
		}
		return nil, &injectedError{msg: "timeout after the request was sent (injected; it lands later)", errs: []error{ErrInjected, f.Err}, timeout: true}
	case Before:
		closeBody(req)
		return nil, &injectedError{msg: "connection refused (injected)", errs: []error{ErrInjected, syscall.ECONNREFUSED, f.Err}}
	case Delay:
		timer := time.NewTimer(f.Wait)
		defer timer.Stop()
		select {
		case <-req.Context().Done():
			closeBody(req)
			return nil, req.Context().Err()
		case <-timer.C:
		}
	case Status:
		closeBody(req)
		return cannedResponse(req, f), nil
	case After:
		resp, err := rt.next.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		return nil, &injectedError{msg: "timeout after the request was sent (injected)", errs: []error{ErrInjected, f.Err}, timeout: true}
	case ResetBody:
		resp, err := rt.next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		resp.Body = &resettingBody{body: resp.Body, left: f.Code}
		resp.ContentLength = -1
		return resp, nil
	}
	return rt.next.RoundTrip(req)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func cannedResponse(req *http.Request, f Fault) *http.Response {
	body := []byte(`{"code":` + strconv.Itoa(f.Code) + `,"message":"injected fault"}`)
	h := make(http.Header, len(f.Header)+1)
	h.Set("Content-Type", "application/json")
	for k, v := range f.Header {
		h.Set(k, v)
	}
	return &http.Response{
		Status:        strconv.Itoa(f.Code) + " " + http.StatusText(f.Code),
		StatusCode:    f.Code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// injectedError is what a RoundTripper fault returns; it unwraps to
// ErrInjected and the fault's own error, and says whether it is a timeout
// (net.Error style) so clients classify it as they would a real one.
type injectedError struct {
	msg     string
	errs    []error
	timeout bool
}

// Error describes the injected failure.
func (e *injectedError) Error() string { return e.msg }

// Unwrap returns ErrInjected and the fault's own error.
func (e *injectedError) Unwrap() []error {
	out := make([]error, 0, len(e.errs))
	for _, err := range e.errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Timeout reports whether the fault looks like a timeout.
func (e *injectedError) Timeout() bool { return e.timeout }

// Temporary reports false: these faults say nothing about retrying.
func (e *injectedError) Temporary() bool { return false }

type resettingBody struct {
	body io.ReadCloser
	left int
}

// Read passes bytes through until the break, then fails as a reset.
func (b *resettingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, &injectedError{msg: "connection reset by peer (injected)", errs: []error{ErrInjected, syscall.ECONNRESET}}
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= n
	if err == io.EOF && b.left > 0 {
		// The whole body fit before the break: break it on the next read anyway.
		b.left = 0
		return n, nil
	}
	return n, err
}

// Close closes the real body.
func (b *resettingBody) Close() error { return b.body.Close() }
