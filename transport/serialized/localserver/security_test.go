package localserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// serve runs one request through h as a client on loopback would send it,
// with the given host and headers (pairs).
func serve(h http.Handler, method, target, host, body string, headers ...string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	req.Host = host
	req.RemoteAddr = "127.0.0.1:50000"
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestKeylessAcceptsLoopbackHostsAndOwnOriginOnly(t *testing.T) {
	h := localserver.NewHandler(memory.New())
	path := "/aggregates/order/" + uuid.NewString()
	body := `{"events":` + events("OrderPlaced") + `}`
	for _, host := range []string{"localhost", "localhost:8080", "127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "LOCALHOST:1"} {
		assert.Equal(t, 404, serve(h, "HEAD", path, host, "").Code, host)
	}
	for _, host := range []string{"evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1:8080", ""} {
		assert.Equal(t, http.StatusMisdirectedRequest, serve(h, "GET", path, host, "").Code, "DNS rebinding: host %q", host)
		assert.Equal(t, http.StatusMisdirectedRequest, serve(h, "POST", path+"/events", host, body, "Content-Type", "application/json").Code, host)
	}
	// A page of another site posting through the developer's browser.
	for _, origin := range []string{"https://evil.example", "http://localhost:9999", "null", "http://127.0.0.1:8080/x"} {
		rec := serve(h, "POST", path+"/events", "127.0.0.1:8080", body, "Content-Type", "application/json", "Origin", origin)
		assert.Equal(t, http.StatusForbidden, rec.Code, origin)
	}
	rec := serve(h, "POST", path+"/events", "127.0.0.1:8080", body, "Content-Type", "text/plain", "Origin", "https://evil.example")
	assert.Equal(t, http.StatusForbidden, rec.Code)
	rec = serve(h, "POST", path+"/events", "127.0.0.1:8080", body, "Content-Type", "text/plain")
	assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code, "the no-preflight content type of a cross-site form")
	assert.Equal(t, 404, serve(h, "GET", path, "127.0.0.1:8080", "").Code, "nothing was stored")

	rec = serve(h, "POST", path+"/events", "127.0.0.1:8080", body, "Content-Type", "application/json", "Origin", "http://127.0.0.1:8080")
	assert.Equal(t, 200, rec.Code, "the server's own origin: %s", rec.Body)

	// -insecure-no-keys: any host, as asked.
	open := localserver.NewHandler(memory.New(), localserver.WithAnyHost())
	assert.Equal(t, 404, serve(open, "HEAD", path, "server.internal:8080", "").Code)
	// With keys the host does not matter: the keys are the check.
	keyed := localserver.NewHandler(memory.New(), localserver.WithKeys(accessKey, secretKey))
	assert.Equal(t, 404, serve(keyed, "HEAD", path, "api.example.com", "", "Serialized-Access-Key", accessKey, "Serialized-Secret-Access-Key", secretKey).Code)
}

func TestRequestsWithoutKeysDoNotSpendTheKeyedBudget(t *testing.T) {
	h := localserver.NewHandler(memory.New(), localserver.WithKeys(accessKey, secretKey),
		localserver.WithRateLimit(3, time.Minute), localserver.WithUnauthenticatedRateLimit(2, time.Minute))
	path := "/aggregates/order/" + uuid.NewString()
	keys := []string{"Serialized-Access-Key", accessKey, "Serialized-Secret-Access-Key", secretKey}
	for i := 0; i < 2; i++ {
		rec := serve(h, "HEAD", path, "api", "")
		assert.Equal(t, 401, rec.Code)
		assert.Empty(t, remainingOf(rec), "a 401 tells nothing of the traffic")
	}
	for i := 0; i < 20; i++ {
		rec := serve(h, "HEAD", path, "api", "", "Serialized-Access-Key", "guess")
		assert.Equal(t, 429, rec.Code, "the unauthenticated budget is spent")
		assert.Empty(t, remainingOf(rec))
	}
	for i := 0; i < 3; i++ {
		rec := serve(h, "HEAD", path, "api", "", keys...)
		require.Equal(t, 404, rec.Code, "the keyed client keeps its whole budget")
		assert.Equal(t, []string{"2", "1", "0"}[i], remainingOf(rec))
	}
	assert.Equal(t, 429, serve(h, "HEAD", path, "api", "", keys...).Code)
}

func TestUnprocessableNamesNoGoType(t *testing.T) {
	a := newAPI(t)
	path := "/aggregates/order/" + uuid.NewString() + "/events"
	for _, body := range []string{`"text"`, `[1]`, `{"events":"x"}`, `{"events":[{"eventType":1}]}`, `{"events":[`, `nul`} {
		r := a.do("POST", path, body)
		assert.Equal(t, 422, r.status, body)
		assert.NotContains(t, r.body, "Go ", body)
		assert.NotContains(t, r.body, "wire.", body)
		assert.NotContains(t, r.body, "transport.", body)
	}
	r := a.do("POST", "/aggregates/order/events", `{"batches":[{"aggregateId":1}]}`)
	assert.Equal(t, 422, r.status)
	assert.NotContains(t, r.body, "wire.")
	assert.Contains(t, r.body, "batches.aggregateId must be a string")
}

func TestETagNamesTenantAndContent(t *testing.T) {
	a := newAPI(t)
	id := uuid.NewString()
	path := "/aggregates/order/" + id
	tenantA, tenantB := uuid.NewString(), uuid.NewString()
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":[{"eventType":"OrderPlaced","data":{"a":1}}]}`, "Serialized-Tenant-Id", tenantA).status)
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":[{"eventType":"OrderPlaced","data":{"a":1}}]}`, "Serialized-Tenant-Id", tenantB).status)
	ra := a.do("GET", path, "", "Serialized-Tenant-Id", tenantA)
	rb := a.do("GET", path, "", "Serialized-Tenant-Id", tenantB)
	require.Equal(t, 200, ra.status)
	assert.NotEqual(t, ra.header.Get("ETag"), rb.header.Get("ETag"), "same version, other tenant")
	assert.Equal(t, 200, a.do("GET", path, "", "Serialized-Tenant-Id", tenantB, "If-None-Match", ra.header.Get("ETag")).status,
		"tenant B never gets a 304 for tenant A's page")
	assert.Equal(t, 304, a.do("GET", path, "", "Serialized-Tenant-Id", tenantA, "If-None-Match", ra.header.Get("ETag")).status)
	for _, r := range []resp{ra, rb} {
		assert.Equal(t, "private, no-store", r.header.Get("Cache-Control"))
		assert.Contains(t, r.header.Get("Vary"), "Serialized-Tenant-Id")
		assert.Contains(t, r.header.Get("Vary"), "Serialized-Access-Key")
	}

	// Deleted and recreated at the same version with other content: another ETag.
	tok := a.do("DELETE", path, "", "Serialized-Tenant-Id", tenantA)
	var d struct{ DeleteToken string }
	require.NoError(t, json.Unmarshal([]byte(tok.body), &d))
	require.Equal(t, 204, a.do("DELETE", path+"?deleteToken="+d.DeleteToken, "", "Serialized-Tenant-Id", tenantA).status)
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":[{"eventType":"OrderPlaced","data":{"a":2}}]}`, "Serialized-Tenant-Id", tenantA).status)
	assert.Equal(t, 200, a.do("GET", path, "", "Serialized-Tenant-Id", tenantA, "If-None-Match", ra.header.Get("ETag")).status)
}

func TestRequestLogTruncatesUntrustedValues(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := localserver.NewHandler(memory.New(), localserver.WithKeys(accessKey, secretKey), localserver.WithLogger(zap.New(core)))
	long := strings.Repeat("a", 60<<10)
	rec := serve(h, "GET", "/aggregates/"+long, "api", "", "Serialized-Tenant-Id", long)
	assert.Equal(t, 401, rec.Code)
	req := httptest.NewRequest("GET", "/feeds", nil)
	req.Method = strings.Repeat("M", 1000)
	h.ServeHTTP(httptest.NewRecorder(), req)
	require.Equal(t, 2, logs.Len())
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok {
				assert.LessOrEqual(t, len(s), httpguard.MaxLogValue+len("…"), "field %s", k)
			}
		}
	}
	assert.Equal(t, "other", logs.All()[1].ContextMap()["method"])
	assert.Equal(t, "192.0.2.1", logs.All()[1].ContextMap()["remote"], "the client's address is logged")
}

func TestRequestLogBelievesForwardedForFromTrustedProxiesOnly(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	proxies, err := httpguard.ParsePrefixes("10.0.0.0/8")
	require.NoError(t, err)
	h := localserver.NewHandler(memory.New(), localserver.WithKeys(accessKey, secretKey), localserver.WithLogger(zap.New(core)),
		localserver.WithTrustedProxies(proxies...))
	for _, peer := range []string{"10.1.2.3:4000", "198.51.100.7:4000"} {
		req := httptest.NewRequest("GET", "/feeds", nil)
		req.RemoteAddr = peer
		req.Header.Set("X-Forwarded-For", "203.0.113.9, 10.9.9.9")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	require.Equal(t, 2, logs.Len())
	assert.Equal(t, "203.0.113.9", logs.All()[0].ContextMap()["remote"], "from a trusted proxy: the forwarded client")
	assert.Equal(t, true, logs.All()[0].ContextMap()["forwarded"])
	assert.Equal(t, "198.51.100.7", logs.All()[1].ContextMap()["remote"], "anyone else's header is not believed")
}

// bigFeed answers every feed read with ten 1 MiB batches, as a store that
// does not bound its pages would.
type bigFeed struct {
	transport.Transport
	transport.Feeder
}

func (b bigFeed) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	data := json.RawMessage(`"` + strings.Repeat("x", 1<<20) + `"`)
	p := transport.FeedPage{Head: 10}
	for i := int64(1); i <= 10; i++ {
		p.Entries = append(p.Entries, transport.FeedEntry{Sequence: i, AggregateType: "order", AggregateID: uuid.NewString(), Version: 1,
			Stored: time.Unix(1, 0), Events: []transport.Event{{EventType: "Big", Data: data}}})
	}
	return p, nil
}

func TestFeedPagesAreBoundedInBytesAndStreamed(t *testing.T) {
	m := memory.New()
	srv := localserver.NewServer(bigFeed{Transport: m, Feeder: m}, localserver.WithKeys(accessKey, secretKey))
	t.Cleanup(srv.Close)
	a := &api{t: t, url: srv.URL}
	r := a.do("GET", "/feeds/order?limit=1000", "")
	require.Equal(t, 200, r.status)
	var body feedBody
	require.NoError(t, json.Unmarshal([]byte(r.body), &body))
	assert.Equal(t, 3, len(body.Entries), "no more than MaxPageBytes of events: three 1 MiB events and a bit")
	assert.LessOrEqual(t, len(r.body), transport.MaxPageBytes+64<<10)
	assert.True(t, body.HasMore, "a cut page says there is more")
	assert.Empty(t, r.header.Get("Content-Length"), "a large page is streamed, not built whole")

	// A small answer still carries its length.
	small := a.do("GET", "/aggregates/order/"+uuid.NewString(), "")
	assert.Equal(t, 404, small.status)
	require.Equal(t, 200, a.do("POST", "/aggregates/order/"+uuid.NewString()+"/events", `{"events":`+events("OrderPlaced")+`}`).status)
}

func TestLoadIsStreamedAndSmallLoadsKeepTheirLength(t *testing.T) {
	a := newAPI(t)
	id := uuid.NewString()
	path := "/aggregates/order/" + id
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":`+events("OrderPlaced")+`}`).status)
	r := a.do("GET", path, "")
	require.Equal(t, 200, r.status)
	assert.NotEmpty(t, r.header.Get("Content-Length"))
	big := `{"events":[{"eventType":"Big","data":"` + strings.Repeat("y", 1<<20) + `"}]}`
	for i := 0; i < 3; i++ {
		require.Equal(t, 200, a.do("POST", path+"/events", big).status)
	}
	r = a.do("GET", path, "")
	require.Equal(t, 200, r.status)
	assert.Empty(t, r.header.Get("Content-Length"), "streamed")
	var got struct {
		AggregateVersion int64
		Events           []transport.Event
		HasMore          bool
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Equal(t, int64(4), got.AggregateVersion)
	assert.Len(t, got.Events, 4)
}

// remainingOf reads the header as written: its name is not in Go's
// canonical form, so Header.Get does not find it in a recorder.
func remainingOf(rec *httptest.ResponseRecorder) string {
	//lint:ignore SA1008 the server writes the name as the API spells it
	if v := rec.Header()["Serialized-RateLimit-Remaining"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func TestLoadAndFeedWriteDataByteForByte(t *testing.T) {
	a := newAPI(t)
	path := "/aggregates/order/" + uuid.NewString()
	data := `{"html": "<b>&amp;</b>", "ls": "` + "\u2028" + `", "n": [1, 2 ,3 ]}`
	st := a.do("POST", path+"/events", `{"events":[{"eventType":"Noted","data":`+data+`}]}`)
	require.Equal(t, 200, st.status, st.body)
	r := a.do("GET", path, "")
	require.Equal(t, 200, r.status)
	assert.Contains(t, r.body, `"data":`+data, "not compacted, not re-escaped")
	assert.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"))
	r = a.do("GET", "/feeds/order", "")
	require.Equal(t, 200, r.status)
	assert.Contains(t, r.body, `"data":`+data)
}

// wholeLoads answers every Load with every batch, as a store that does not
// bound its pages would.
type wholeLoads struct{ *memory.Transport }

func (w wholeLoads) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	if limit == 1 {
		return w.Transport.Load(ctx, ref, since, 1)
	}
	var out transport.Page
	for v := since; ; v++ {
		p, err := w.Transport.Load(ctx, ref, v, 1)
		if err != nil || len(p.Events) == 0 {
			return out, err
		}
		out.Events, out.Version = append(out.Events, p.Events...), p.Version
	}
}

func TestLoadPagesAreBoundedInBytes(t *testing.T) {
	m := memory.New()
	srv := localserver.NewServer(wholeLoads{m}, localserver.WithKeys(accessKey, secretKey))
	t.Cleanup(srv.Close)
	a := &api{t: t, url: srv.URL}
	path := "/aggregates/order/" + uuid.NewString()
	big := `{"events":[{"eventType":"Big","data":"` + strings.Repeat("y", 1<<20) + `"}]}`
	for i := 0; i < 6; i++ {
		require.Equal(t, 200, a.do("POST", path+"/events", big).status)
	}
	var got struct {
		AggregateVersion int64
		Events           []transport.Event
		HasMore          bool
	}
	r := a.do("GET", path, "")
	require.Equal(t, 200, r.status)
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Equal(t, 3, len(got.Events), "three 1 MiB batches fit in MaxPageBytes, four do not")
	assert.Equal(t, int64(3), got.AggregateVersion)
	assert.True(t, got.HasMore)
	r = a.do("GET", path+"?since=3", "")
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Equal(t, 3, len(got.Events))
	assert.Equal(t, int64(6), got.AggregateVersion)
	assert.False(t, got.HasMore)
}

// A refusal must not wait for a body it will never read: a client without
// keys (or with a body the server refuses) that promises a large body and
// sends it a byte at a time would otherwise hold its connection, and get
// no answer, for the whole read timeout. httptest's server has no read
// timeout, so without the fix these answers never come.
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	keyed := httptest.NewServer(localserver.NewHandler(memory.New(), localserver.WithKeys("a", "b")))
	defer keyed.Close()
	keyless := httptest.NewServer(localserver.NewHandler(memory.New()))
	defer keyless.Close()
	path := "/aggregates/order/" + uuid.NewString() + "/events"
	for _, c := range []struct {
		name, addr, host, ctype, want string
	}{
		{"no keys", keyed.Listener.Addr().String(), "127.0.0.1", "application/json", "401"},
		{"other host", keyless.Listener.Addr().String(), "evil.example", "application/json", "421"},
		{"not JSON", keyless.Listener.Addr().String(), "127.0.0.1", "text/plain", "415"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.addr)
			require.NoError(t, err)
			defer conn.Close()
			_, err = io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: "+c.host+"\r\nContent-Type: "+c.ctype+
				"\r\nContent-Length: 100000\r\n\r\n{") // and the rest never
			require.NoError(t, err)
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err, "the refusal comes at once")
			assert.Equal(t, c.want, strconv.Itoa(resp.StatusCode))
			assert.True(t, resp.Close, "and the connection closes")
		})
	}
}

// A write says application/json once: two Content-Type headers that may
// disagree (the first JSON, the second not) are refused, whatever order.
func TestWritesSayJSONOnce(t *testing.T) {
	h := localserver.NewHandler(memory.New())
	body := `{"events":` + events("OrderPlaced") + `}`
	for _, types := range [][]string{{"application/json", "text/plain"}, {"text/plain", "application/json"}, {"application/json", "application/json"}} {
		req := httptest.NewRequest("POST", "/aggregates/order/"+uuid.NewString()+"/events", strings.NewReader(body))
		req.Host, req.RemoteAddr = "127.0.0.1:8080", "127.0.0.1:50000"
		for _, ct := range types {
			req.Header.Add("Content-Type", ct)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code, types)
	}
	rec := serve(h, "POST", "/aggregates/order/"+uuid.NewString()+"/events", "127.0.0.1:8080", body, "Content-Type", "application/JSON; charset=UTF-8")
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
}
