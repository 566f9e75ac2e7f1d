package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func scrape(t *testing.T, m *metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	return rec.Body.String()
}

func TestMetricLabelsTakeAClosedSetOfValues(t *testing.T) {
	m := newMetrics()
	h := m.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	odd := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) })
	for i := 0; i < 200; i++ {
		req := httptest.NewRequest("GET", "/aggregates/order/"+strings.Repeat("x", i+1), nil)
		req.Method = "MADEUP" + strings.Repeat("M", i) // a new method each time
		h.ServeHTTP(httptest.NewRecorder(), req)
		req = httptest.NewRequest("GET", "/"+strings.Repeat("p/", i), nil)
		m.wrap(odd).ServeHTTP(httptest.NewRecorder(), req)
	}
	text := scrape(t, m)
	assert.False(t, strings.Contains(text, "MADEUP"), "no made-up method in a label")
	assert.True(t, strings.Contains(text, `sourced_http_requests_total{code="429",method="other",route="/aggregates/{type}/{id}"} 200`))
	assert.True(t, strings.Contains(text, `sourced_http_requests_total{code="5xx",method="GET",route="other"} 200`))
	assert.Less(t, strings.Count(text, "sourced_http_requests_total{"), 5, "a handful of series, not one per request")
}
