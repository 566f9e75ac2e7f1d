package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// downStore fails every read the way a PostgreSQL store does when its
// database is gone, with internals in the error.
type downStore struct{ *memory.Transport }

const internals = `dial tcp 10.1.2.3:5432: user "alice" database "shop": connection refused`

func (downStore) FeedOverview(context.Context, string) ([]transport.FeedInfo, error) {
	return nil, &transport.Error{Op: "feed overview", Kind: transport.ErrUnavailable, Messages: []string{internals}}
}

func (downStore) FeedHead(context.Context, transport.Scope) (int64, error) {
	return 0, &transport.Error{Op: "feed head", Kind: transport.ErrUnavailable, Messages: []string{internals}}
}

func (d downStore) ReadFeed(context.Context, transport.FeedQuery) (transport.FeedPage, error) {
	return transport.FeedPage{}, &transport.Error{Op: "read feed", Kind: transport.ErrUnavailable, Messages: []string{internals}}
}

func TestStoreFailuresShowNoInternals(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	c, err := console.New(downStore{memory.New()}, console.WithLogger(zap.New(core)))
	require.NoError(t, err)
	for _, path := range []string{"/console/", "/console/feed", "/console/api/feed?since=recent", "/console/api/feed?since=3",
		"/console/aggregates/order/" + uuid.NewString()} {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/"+strings.TrimPrefix(path, "/"), nil))
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, path)
		assert.NotContains(t, rec.Body.String(), "alice", path)
		assert.NotContains(t, rec.Body.String(), "10.1.2.3", path)
		assert.Contains(t, rec.Body.String(), "unavailable", path)
	}
	require.NotZero(t, logs.Len())
	assert.Contains(t, logs.All()[0].ContextMap()["error"], "alice", "the cause is in the log")
	assert.Equal(t, zapcore.WarnLevel, logs.All()[0].Level)
}

func TestSignInIsThrottledPerAddress(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	f := newFixture(t, console.WithLogger(zap.New(core)))
	for i := 0; i < 5; i++ {
		assert.Equal(t, http.StatusUnauthorized, f.signIn(t, accessKey, "guess").StatusCode)
	}
	assert.Equal(t, http.StatusUnauthorized, f.signIn(t, accessKey, "guess").StatusCode, "the sixth failure locks the address out")
	resp := f.signIn(t, accessKey, secretKey)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "locked out: even the right keys wait")
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))

	f.now = f.now.Add(2 * time.Second)
	assert.Equal(t, http.StatusUnauthorized, f.signIn(t, accessKey, "guess").StatusCode)
	f.now = f.now.Add(time.Second)
	assert.Equal(t, http.StatusTooManyRequests, f.signIn(t, accessKey, secretKey).StatusCode, "each failure doubles the lockout")
	f.now = f.now.Add(2 * time.Second)
	f.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	assert.Equal(t, http.StatusSeeOther, f.signIn(t, accessKey, secretKey).StatusCode, "after the lockout the right keys work")

	warned := logs.FilterMessageSnippet("console sign-in refused").FilterLevelExact(zapcore.WarnLevel).Len()
	assert.GreaterOrEqual(t, warned, 7, "refused sign-ins are logged at Warn")
}

func TestSignInAndOutRefuseOtherOrigins(t *testing.T) {
	f := newFixture(t)
	f.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	post := func(path, origin string, form url.Values) int {
		req, err := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := f.client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	keys := url.Values{"access_key": {accessKey}, "secret_key": {secretKey}}
	assert.Equal(t, http.StatusForbidden, post("/console/login", "https://evil.example", keys))
	assert.Equal(t, http.StatusSeeOther, post("/console/login", f.srv.URL, keys))
	assert.Equal(t, http.StatusForbidden, post("/console/logout", "https://evil.example", nil), "a cross-site post does not sign out")
	code, _ := f.get(t, "/console/")
	assert.Equal(t, http.StatusOK, code, "still signed in")
	assert.Equal(t, http.StatusSeeOther, post("/console/logout", f.srv.URL, nil))
	code, _ = f.get(t, "/console/")
	assert.Equal(t, http.StatusSeeOther, code, "signed out")
}

func TestSecureCookieBehindATLSProxy(t *testing.T) {
	for _, secure := range []bool{false, true} {
		var opts []console.Option
		if secure {
			opts = append(opts, console.WithSecureCookie())
		}
		f := newFixture(t, opts...)
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
		assert.Equal(t, secure, ck.Secure)
	}
}

func TestAssetsAreNotListed(t *testing.T) {
	f := newFixture(t)
	code, body := f.get(t, "/console/assets/")
	assert.Equal(t, http.StatusNotFound, code)
	assert.NotContains(t, body, "live.js")
	code, _ = f.get(t, "/console/assets/live.js")
	assert.Equal(t, http.StatusOK, code)
}

func TestKeylessConsoleAnswersLoopbackAndItsOwnOriginOnly(t *testing.T) {
	c, err := console.New(memory.New())
	require.NoError(t, err)
	serve := func(target, origin string) int {
		req := httptest.NewRequest("GET", target, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		return rec.Code
	}
	assert.Equal(t, http.StatusOK, serve("http://localhost:8080/console/", ""))
	assert.Equal(t, http.StatusMisdirectedRequest, serve("http://rebound.evil.example:8080/console/", ""), "DNS rebinding")
	assert.Equal(t, http.StatusForbidden, serve("http://127.0.0.1:8080/console/api/feed?since=recent", "https://evil.example"))
	open, err := console.New(memory.New(), console.WithAnyHost())
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, httptest.NewRequest("GET", "http://console.internal/console/", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
}

func TestLiveFeedAndHistoryAreBoundedInBytes(t *testing.T) {
	f := newFixture(t)
	f.signIn(t, accessKey, secretKey)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	big := json.RawMessage(`"` + strings.Repeat("z", 400<<10) + `"`)
	for i := 0; i < 6; i++ {
		f.store(t, ref, transport.Event{EventType: "Big", Data: big})
	}
	code, body := f.get(t, "/console/api/feed?since=0")
	require.Equal(t, http.StatusOK, code)
	var v struct {
		Entries []struct {
			Sequence int64
			Events   []struct{ Data string }
		}
		Next int64
	}
	require.NoError(t, json.Unmarshal([]byte(body), &v))
	assert.Equal(t, 2, len(v.Entries), "1 MiB of data per answer at most")
	assert.EqualValues(t, 2, v.Next, "the next poll goes on after the last entry sent")
	assert.Less(t, len(body), 1<<20)
	assert.Contains(t, v.Entries[0].Events[0].Data, "bytes in all", "a long value is shown cut, with its length")

	code, body = f.get(t, "/console/aggregates/order/"+ref.ID)
	require.Equal(t, http.StatusOK, code)
	assert.Less(t, len(body), 1<<20, "a history page is bounded too")
	assert.Contains(t, body, "later batches")
}
