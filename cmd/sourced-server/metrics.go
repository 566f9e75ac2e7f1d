package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of their own.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	bytesIn     *prometheus.CounterVec
	bytesOut    *prometheus.CounterVec
	stores      prometheus.Counter
	conflicts   prometheus.Counter
	limited     prometheus.Counter
	storeErrors prometheus.Counter
	waiting     prometheus.Gauge
	connsOpen   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sourced_http_requests_total",
			Help: "API requests by route, method and status code."}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sourced_http_request_duration_seconds",
			Help: "API request latency by route and method (feed reads include their wait).", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)},
			[]string{"route", "method"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sourced_http_request_bytes_total",
			Help: "Request body bytes received, by route."}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sourced_http_response_bytes_total",
			Help: "Response body bytes sent, by route."}, []string{"route"}),
		stores: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_stores_total",
			Help: "Store requests (single and bulk) that stored their batches."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_conflicts_total",
			Help: "Requests answered 409: the expected version did not match."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_rate_limited_total",
			Help: "Requests answered 429."}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_store_errors_total",
			Help: "Requests answered 5xx: the store failed or was unavailable."}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_feed_readers_waiting",
			Help: "Feed reads in progress that may wait for a batch (waitTime > 0)."}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_http_connections_open",
			Help: "Connections open on the API's address (at most -max-conns)."}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.bytesIn, m.bytesOut, m.stores, m.conflicts, m.limited, m.storeErrors, m.waiting, m.connsOpen,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// connections reports the open connections.
func (m *metrics) connections(n int64) { m.connsOpen.Set(float64(n)) }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// methodLabel returns the method when it is one HTTP defines, "other"
// otherwise: a label takes values from a closed set only, or anyone could
// grow the server's memory (and /metrics) with made-up methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

// codeAborted is the code label of a response cut off after its status
// was sent.
const codeAborted = "aborted"

// codeLabel returns the status codes the server answers with as they are,
// and any other as its class ("5xx"), so the label's values form a closed
// set.
func codeLabel(code int) string {
	switch code {
	case 200, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 421, 422, 429, 500, 501, 503:
		return strconv.Itoa(code)
	}
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}

// route names a path by its pattern, never by its ids.
func route(method, path string) string {
	parts := strings.SplitN(strings.Trim(path, "/"), "/", 5) // no more pieces than a route has, plus one
	switch {
	case parts[0] == "aggregates" && len(parts) == 2:
		return "/aggregates/{type}"
	case parts[0] == "aggregates" && len(parts) == 3 && parts[2] == "events" && method == http.MethodPost:
		return "/aggregates/{type}/events"
	case parts[0] == "aggregates" && len(parts) == 3:
		return "/aggregates/{type}/{id}"
	case parts[0] == "aggregates" && len(parts) == 4 && parts[3] == "events":
		return "/aggregates/{type}/{id}/events"
	case parts[0] == "feeds" && len(parts) == 1:
		return "/feeds"
	case parts[0] == "feeds" && len(parts) == 2:
		return "/feeds/{feed}"
	}
	return "other"
}

// recorder remembers the status and counts the bytes of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

// Unwrap gives http.ResponseController the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// wrap counts every API request the handler serves.
func (m *metrics) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, method := route(r.Method, r.URL.Path), methodLabel(r.Method)
		if rt == "/feeds/{feed}" && r.Method == http.MethodGet {
			if wt := r.URL.Query().Get("waitTime"); wt != "" && wt != "0" {
				m.waiting.Inc()
				defer m.waiting.Dec()
			}
		}
		began := time.Now()
		rec := &recorder{ResponseWriter: w}
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		defer func() {
			// A response cut off mid-way (http.ErrAbortHandler: the store
			// or the encoding failed after the status went out) is
			// counted as "aborted", then the panic goes on to net/http.
			if p := recover(); p != nil {
				m.requests.WithLabelValues(rt, method, codeAborted).Inc()
				panic(p)
			}
		}()
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		m.requests.WithLabelValues(rt, method, codeLabel(rec.status)).Inc()
		m.duration.WithLabelValues(rt, method).Observe(time.Since(began).Seconds())
		if body != nil && body.n > 0 { // the bytes read, not the length a client claims
			m.bytesIn.WithLabelValues(rt).Add(float64(body.n))
		}
		m.bytesOut.WithLabelValues(rt).Add(float64(rec.bytes))
		switch {
		case rec.status == http.StatusConflict:
			m.conflicts.Inc()
		case rec.status == http.StatusTooManyRequests:
			m.limited.Inc()
		case rec.status >= 500:
			m.storeErrors.Inc()
		case rec.status/100 == 2 && r.Method == http.MethodPost && strings.HasSuffix(rt, "/events"):
			m.stores.Inc()
		}
	})
}
