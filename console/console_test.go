package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

const (
	accessKey = "console-access"
	secretKey = "console-secret-value"
)

// hostile is event data and names that would run as script if the console
// ever put them into the page as HTML.
const hostile = `{"note":"<script>window.pwned=1</script>","html":"<img src=x onerror=\"window.pwned=2\">","b":"<b>bold</b>"}`

type fixture struct {
	tr     *memory.Transport
	srv    *httptest.Server
	client *http.Client
	now    time.Time
}

func newFixture(t *testing.T, opts ...console.Option) *fixture {
	t.Helper()
	f := &fixture{tr: memory.New(), now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	opts = append([]console.Option{console.WithKeys(accessKey, secretKey), console.WithClock(func() time.Time { return f.now }),
		console.WithLiveWait(2 * time.Second)}, opts...)
	c, err := console.New(f.tr, opts...)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	f.client = &http.Client{Jar: jar, Timeout: 10 * time.Second}
	return f
}

func (f *fixture) store(t *testing.T, ref transport.Ref, events ...transport.Event) {
	t.Helper()
	require.NoError(t, f.tr.Store(context.Background(), ref, events, transport.Any))
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := f.client.Get(f.srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (f *fixture) signIn(t *testing.T, access, secret string) *http.Response {
	t.Helper()
	resp, err := f.client.PostForm(f.srv.URL+"/console/login", url.Values{"access_key": {access}, "secret_key": {secret}})
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestNothingShownWithoutSignIn(t *testing.T) {
	f := newFixture(t)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	f.store(t, ref, transport.Event{EventType: "OrderPlaced", Data: json.RawMessage(`{"secret":"hush-7731"}`)})
	for _, p := range []string{"/console/", "/console/types/order", "/console/aggregates/order/" + ref.ID, "/console/feed"} {
		code, body := f.get(t, p)
		assert.Equal(t, http.StatusOK, code, p) // after the redirect
		assert.Contains(t, body, "Sign in", p)
		assert.NotContains(t, body, ref.ID, p)
		assert.NotContains(t, body, "hush-7731", p)
	}
	code, body := f.get(t, "/console/api/feed?since=0")
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.NotContains(t, body, ref.ID)
}

func TestSignInWithWrongKeysIsRefused(t *testing.T) {
	f := newFixture(t)
	resp := f.signIn(t, accessKey, "wrong")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp = f.signIn(t, "", "")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_, body := f.get(t, "/console/")
	assert.Contains(t, body, "Sign in")
}

func TestSessionCookie(t *testing.T) {
	f := newFixture(t)
	f.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp := f.signIn(t, accessKey, secretKey)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			ck = c
		}
	}
	require.NotNil(t, ck)
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	assert.Equal(t, "/console/", ck.Path)
	assert.NotContains(t, ck.Value, secretKey)
	assert.Len(t, ck.Value, 64)

	code, _ := f.get(t, "/console/")
	assert.Equal(t, http.StatusOK, code)

	// Sessions expire.
	f.now = f.now.Add(console.SessionTTL)
	code, _ = f.get(t, "/console/")
	assert.Equal(t, http.StatusSeeOther, code)

	// Signing out ends the session at once.
	f.now = f.now.Add(time.Minute)
	f.signIn(t, accessKey, secretKey)
	code, _ = f.get(t, "/console/")
	require.Equal(t, http.StatusOK, code)
	resp, err := f.client.Post(f.srv.URL+"/console/logout", "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	code, _ = f.get(t, "/console/")
	assert.Equal(t, http.StatusSeeOther, code)
}

func TestPagesShowTheStore(t *testing.T) {
	f := newFixture(t)
	f.signIn(t, accessKey, secretKey)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	f.store(t, ref, transport.Event{EventType: "OrderPlaced", Data: json.RawMessage(`{"total":42}`)})
	f.store(t, ref, transport.Event{EventType: "OrderPaid", Data: json.RawMessage(`{"amount":42}`)}, transport.Event{EventType: "OrderShipped"})
	f.store(t, transport.Ref{Type: "payment", ID: uuid.NewString()}, transport.Event{EventType: "PaymentProcessed"})

	code, body := f.get(t, "/console/")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `href="/console/types/order"`)
	assert.Contains(t, body, `href="/console/types/payment"`)

	code, body = f.get(t, "/console/types/order")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, ref.ID)

	code, body = f.get(t, "/console/types/order?q="+ref.ID[:8])
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, ref.ID)
	code, body = f.get(t, "/console/types/order?q=zzzz")
	require.Equal(t, http.StatusOK, code)
	assert.NotContains(t, body, ref.ID)

	code, body = f.get(t, "/console/aggregates/order/"+ref.ID)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "version 1")
	assert.Contains(t, body, "version 2")
	assert.Contains(t, body, "2 events")
	assert.Contains(t, body, "&#34;total&#34;: 42") // pretty-printed, as text
	assert.Contains(t, body, "OrderShipped")

	code, _ = f.get(t, "/console/aggregates/order/"+uuid.NewString())
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = f.get(t, "/console/aggregates/order/not-a-uuid")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = f.get(t, "/console/?tenant=nope")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = f.get(t, "/console/feed?feed=Bad!")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = f.get(t, "/console/nowhere")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestTenantsStayApart(t *testing.T) {
	f := newFixture(t)
	f.signIn(t, accessKey, secretKey)
	tenant := uuid.NewString()
	ref := transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}
	f.store(t, ref, transport.Event{EventType: "OrderPlaced"})

	_, body := f.get(t, "/console/types/order")
	assert.NotContains(t, body, ref.ID)
	_, body = f.get(t, "/console/types/order?tenant="+tenant)
	assert.Contains(t, body, ref.ID)
	code, _ := f.get(t, "/console/aggregates/order/"+ref.ID)
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = f.get(t, "/console/aggregates/order/"+ref.ID+"?tenant="+tenant)
	assert.Equal(t, http.StatusOK, code)
}

func TestHostileDataRendersAsText(t *testing.T) {
	f := newFixture(t)
	f.signIn(t, accessKey, secretKey)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	f.store(t, ref, transport.Event{EventType: "Script-Evil_1", Data: json.RawMessage(hostile)})
	for _, p := range []string{"/console/", "/console/types/order", "/console/aggregates/order/" + ref.ID, "/console/feed"} {
		code, body := f.get(t, p)
		require.Equal(t, http.StatusOK, code, p)
		assert.NotContains(t, body, "<script>window", p)
		assert.NotContains(t, body, "<img src=x", p)
		assert.NotContains(t, body, "<b>bold", p)
	}
	_, body := f.get(t, "/console/aggregates/order/"+ref.ID)
	assert.Contains(t, body, "&lt;script&gt;window.pwned=1&lt;/script&gt;")

	resp, err := f.client.Get(f.srv.URL + "/console/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
}

func TestLiveFeedAPI(t *testing.T) {
	f := newFixture(t)
	f.signIn(t, accessKey, secretKey)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	f.store(t, ref, transport.Event{EventType: "OrderPlaced"})

	read := func(query string) (int, map[string]any) {
		code, body := f.get(t, "/console/api/feed?"+query)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &v), body)
		return code, v
	}
	code, v := read("since=recent")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, v["entries"], 1)
	assert.EqualValues(t, 1, v["next"])

	// A read at the head waits for the next batch.
	done := make(chan map[string]any, 1)
	go func() {
		resp, err := f.client.Get(f.srv.URL + "/console/api/feed?feed=order&since=1")
		if err != nil {
			done <- nil
			return
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		done <- v
	}()
	f.store(t, ref, transport.Event{EventType: "OrderPaid"})
	select {
	case v := <-done:
		require.NotNil(t, v)
		require.Len(t, v["entries"], 1)
		e := v["entries"].([]any)[0].(map[string]any)
		assert.EqualValues(t, 2, e["sequence"])
		assert.EqualValues(t, 2, e["version"])
	case <-time.After(5 * time.Second):
		t.Fatal("the live read did not answer")
	}

	code, _ = read("since=-4")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = read("since=0&feed=No!")
	assert.Equal(t, http.StatusBadRequest, code)
	code, _ = read("since=0&tenant=x")
	assert.Equal(t, http.StatusBadRequest, code)
}

func TestOpenWithoutKeys(t *testing.T) {
	tr := memory.New()
	c, err := console.New(tr)
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/console/", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.True(t, strings.Contains(rec.Body.String(), "Nothing stored yet"))

	_, err = console.New(nil)
	assert.Error(t, err)
}
