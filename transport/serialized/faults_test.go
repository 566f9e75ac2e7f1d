package serialized_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized"
)

// script is an httptest server that answers each request with the next
// step; it counts the requests that reached it.
type script struct {
	srv   *httptest.Server
	hits  atomic.Int64
	steps []func(w http.ResponseWriter, r *http.Request)
	last  atomic.Pointer[http.Request]
}

func newScript(t *testing.T, steps ...func(w http.ResponseWriter, r *http.Request)) *script {
	t.Helper()
	s := &script{steps: steps}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		s.last.Store(r)
		i := int(n - 1)
		if i >= len(s.steps) {
			i = len(s.steps) - 1
		}
		s.steps[i](w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *script) client(t *testing.T, opts ...serialized.Option) *serialized.Client {
	t.Helper()
	c, err := serialized.New(append([]serialized.Option{serialized.WithBaseURL(s.srv.URL),
		serialized.WithKeys(testAccess, testSecret), zeroRetry(3)}, opts...)...)
	require.NoError(t, err)
	return c
}

func status(code int, body string, headers ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

const page = `{"aggregateId":"x","aggregateType":"order","aggregateVersion":1,"events":[{"eventId":"2c3cf88c-ee88-427e-818a-ab0267511c84","eventType":"OrderPlaced","data":{}}],"hasMore":false}`

// hangUp closes the connection without answering, after reading the request.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// truncated promises more body than it sends, then closes.
func truncated(w http.ResponseWriter, _ *http.Request) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n" + page[:40])
	_ = buf.Flush()
	_ = conn.Close()
}

func ref() transport.Ref { return transport.Ref{Type: "order", ID: uuid.NewString()} }

var oneEvent = []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{}`)}}

func TestStatusMapping(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		step  func(w http.ResponseWriter, r *http.Request)
		kind  error
		check func(t *testing.T, e *transport.Error)
	}{
		{"401", status(401, `{"code":401,"message":"bad keys"}`), transport.ErrUnauthorized, nil},
		{"422", status(422, `{"errors":["events[0].eventType is missing","too many events"]}`), transport.ErrInvalid,
			func(t *testing.T, e *transport.Error) {
				assert.Equal(t, []string{"events[0].eventType is missing", "too many events"}, e.Messages)
				assert.Equal(t, 422, e.StatusCode)
			}},
		{"400", status(400, ``), transport.ErrInvalid, nil},
		{"404", status(404, ``), transport.ErrNotFound, nil},
		{"409", status(409, ``), transport.ErrConflict, func(t *testing.T, e *transport.Error) {
			assert.Equal(t, transport.Exactly(3), e.Expected)
			assert.Contains(t, e.Error(), "expected version 3")
		}},
		{"429", status(429, `{"code":429,"message":"slow down"}`, "Serialized-RateLimit-Limit", "100",
			"Serialized-RateLimit-Remaining", "0", "Serialized-RateLimit-Reset", "1900000000"), transport.ErrRateLimited,
			func(t *testing.T, e *transport.Error) {
				require.NotNil(t, e.RateLimit)
				assert.Equal(t, transport.RateLimit{Limit: 100, Remaining: 0, Reset: time.Unix(1900000000, 0)}, *e.RateLimit)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newScript(t, c.step)
			r := ref()
			err := s.client(t, zeroRetry(1), serialized.WithMaxRateLimitWait(0)).Store(ctx, r, oneEvent, transport.Exactly(3))
			require.ErrorIs(t, err, c.kind)
			var e *transport.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, r.ID, e.AggregateID)
			assert.Contains(t, err.Error(), "order/"+r.ID)
			if c.check != nil {
				c.check(t, e)
			}
		})
	}
}

func TestGetRetriedAfter429And503(t *testing.T) {
	s := newScript(t,
		status(429, `{"code":429,"message":"slow down"}`, "Serialized-RateLimit-Reset", "0"),
		status(503, ``),
		status(500, ``),
		status(200, page))
	p, err := s.client(t).Load(context.Background(), ref(), 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Version)
	assert.Equal(t, int64(4), s.hits.Load())
}

func TestRateLimitResetIsHonoured(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newScript(t,
		status(429, ``, "Serialized-RateLimit-Reset", strconv.FormatInt(now.Add(30*time.Millisecond).Unix(), 10)),
		status(200, page))
	// The clock says the reset is 1s away at most; the wait is bounded to 50ms.
	c := s.client(t, serialized.WithClock(func() time.Time { return now.Add(-time.Second) }),
		serialized.WithMaxRateLimitWait(50*time.Millisecond))
	began := time.Now()
	_, err := c.Load(context.Background(), ref(), 0, 0)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(began), 50*time.Millisecond, "waited for the window to reset (bounded)")
}

func TestStoreRetriedOnlyWhenCertainlyNotTaken(t *testing.T) {
	ctx := context.Background()
	t.Run("429 then ok", func(t *testing.T) {
		s := newScript(t, status(429, ``), status(200, ``))
		require.NoError(t, s.client(t).Store(ctx, ref(), oneEvent, transport.Any))
		assert.Equal(t, int64(2), s.hits.Load())
	})
	t.Run("408 then ok", func(t *testing.T) {
		s := newScript(t, status(408, ``), status(200, ``))
		require.NoError(t, s.client(t).Store(ctx, ref(), oneEvent, transport.Any))
		assert.Equal(t, int64(2), s.hits.Load(), "the server gave up waiting for the request: it took nothing")
	})
	t.Run("500 is ambiguous", func(t *testing.T) {
		s := newScript(t, status(500, ``), status(200, ``))
		err := s.client(t).Store(ctx, ref(), oneEvent, transport.Any)
		assert.ErrorIs(t, err, transport.ErrAmbiguous)
		assert.Equal(t, int64(1), s.hits.Load(), "never resent blindly")
	})
	t.Run("connection closed after sending is ambiguous", func(t *testing.T) {
		s := newScript(t, hangUp, status(200, ``))
		err := s.client(t).Store(ctx, ref(), oneEvent, transport.Any)
		assert.ErrorIs(t, err, transport.ErrAmbiguous)
		assert.Equal(t, int64(1), s.hits.Load())
	})
	t.Run("timeout after sending is ambiguous", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s := newScript(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		err := s.client(t, serialized.WithTimeout(50*time.Millisecond)).Store(ctx, ref(), oneEvent, transport.Any)
		assert.ErrorIs(t, err, transport.ErrAmbiguous)
		assert.Equal(t, int64(1), s.hits.Load())
	})
	t.Run("connection refused is retried", func(t *testing.T) {
		s := newScript(t, status(200, ``))
		url := s.srv.URL
		s.srv.Close() // nothing listens any more
		c, err := serialized.New(serialized.WithBaseURL(url), serialized.WithKeys(testAccess, testSecret), zeroRetry(2))
		require.NoError(t, err)
		err = c.Store(ctx, ref(), oneEvent, transport.Any)
		assert.ErrorIs(t, err, transport.ErrUnavailable, "refused before sending: safe to retry, and reported as unavailable")
		assert.NotErrorIs(t, err, transport.ErrAmbiguous)
	})
}

func TestBrokenResponses(t *testing.T) {
	ctx := context.Background()
	t.Run("malformed JSON", func(t *testing.T) {
		s := newScript(t, status(200, `{"aggregateVersion":`))
		_, err := s.client(t).Load(ctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
		assert.ErrorContains(t, err, "malformed response")
	})
	t.Run("truncated body is retried", func(t *testing.T) {
		s := newScript(t, truncated, status(200, page))
		p, err := s.client(t).Load(ctx, ref(), 0, 0)
		require.NoError(t, err)
		assert.Len(t, p.Events, 1)
		assert.Equal(t, int64(2), s.hits.Load())
	})
	t.Run("reset every time", func(t *testing.T) {
		s := newScript(t, hangUp)
		_, err := s.client(t).Load(ctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
		assert.Equal(t, int64(4), s.hits.Load(), "one try and three retries")
	})
	t.Run("slow response times out", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s := newScript(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		_, err := s.client(t, serialized.WithTimeout(30*time.Millisecond), zeroRetry(1)).Load(ctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
	})
	t.Run("the attempt bound holds under a later caller deadline", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s := newScript(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := s.client(t, serialized.WithTimeout(30*time.Millisecond), zeroRetry(1)).Load(cctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
		assert.NoError(t, cctx.Err(), "each attempt ended at its own bound, long before the caller's")
		assert.LessOrEqual(t, s.hits.Load(), int64(2), "one try and one retry")
	})
	t.Run("a sooner caller deadline ends the attempt", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		s := newScript(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		_, err := s.client(t, serialized.WithTimeout(time.Hour), zeroRetry(1)).Load(cctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
		assert.ErrorIs(t, cctx.Err(), context.DeadlineExceeded)
		assert.LessOrEqual(t, s.hits.Load(), int64(1), "no retry once the caller's time is up")
	})
	t.Run("oversized response", func(t *testing.T) {
		s := newScript(t, status(200, `{"events":[`+strings.Repeat(" ", 4096)+`]}`))
		_, err := s.client(t, serialized.WithMaxResponseBytes(1024)).Load(ctx, ref(), 0, 0)
		assert.ErrorIs(t, err, transport.ErrUnavailable)
		assert.ErrorContains(t, err, "over 1024 bytes")
	})
	t.Run("caller cancels", func(t *testing.T) {
		s := newScript(t, status(503, ``))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := s.client(t).Load(cctx, ref(), 0, 0)
		assert.ErrorIs(t, err, context.Canceled)
	})
}

func TestWireFormat(t *testing.T) {
	ctx := context.Background()
	var bodies []string
	tenant := uuid.NewString()
	r := transport.Ref{Tenant: tenant, Type: "order", ID: uuid.NewString()}
	for _, exp := range []transport.ExpectedVersion{transport.Any, transport.Exactly(0), transport.Exactly(7)} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			b, _ := io.ReadAll(req.Body)
			bodies = append(bodies, string(b))
			assert.Equal(t, tenant, req.Header.Get("Serialized-Tenant-Id"))
			assert.Equal(t, testAccess, req.Header.Get("Serialized-Access-Key"))
			assert.Equal(t, testSecret, req.Header.Get("Serialized-Secret-Access-Key"))
			assert.Equal(t, "application/json", req.Header.Get("Content-Type"))
			assert.Equal(t, "/aggregates/order/"+r.ID+"/events", req.URL.Path)
		}))
		cc, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret))
		require.NoError(t, err)
		require.NoError(t, cc.Store(ctx, r, oneEvent, exp))
		srv.Close()
	}
	require.Len(t, bodies, 3)
	assert.NotContains(t, bodies[0], "expectedVersion", "Any sends no expectedVersion")
	assert.Contains(t, bodies[1], `"expectedVersion":0`, "0 is sent, not dropped")
	assert.Contains(t, bodies[2], `"expectedVersion":7`)
}

func TestNoRequestForBadInput(t *testing.T) {
	ctx := context.Background()
	s := newScript(t, status(200, page))
	c := s.client(t)
	bad := transport.Ref{Type: "Order", ID: "nope"}
	_, err := c.Load(ctx, bad, 0, 0)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	assert.ErrorIs(t, c.Store(ctx, ref(), []transport.Event{{EventType: "x"}}, transport.Any), transport.ErrInvalid)
	assert.ErrorIs(t, c.Store(ctx, ref(), nil, transport.Any), transport.ErrInvalid)
	assert.ErrorIs(t, c.Store(ctx, ref(), oneEvent, transport.Exactly(-2)), transport.ErrInvalid)
	_, err = c.Exists(ctx, bad)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = c.RequestDelete(ctx, transport.DeleteTarget{Type: "order"})
	assert.ErrorIs(t, err, transport.ErrInvalid)
	assert.ErrorIs(t, c.StoreBulk(ctx, transport.Scope{Type: "order"}, nil), transport.ErrInvalid)
	assert.ErrorIs(t, c.ConfirmDelete(ctx, transport.DeleteAggregate(ref()), ""), transport.ErrBadDeleteToken)
	_, err = c.List(ctx, transport.Scope{Type: "order"}, -1, 0)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	assert.Equal(t, int64(0), s.hits.Load(), "nothing was sent")
}

func TestConfiguration(t *testing.T) {
	for _, u := range []string{"ftp://x", "not a url", "http://", "https://user:pw@api.example.com",
		"https://api.example.com?x=1", "https://api.example.com/?", "https://api.example.com#top"} {
		_, err := serialized.New(serialized.WithBaseURL(u))
		assert.Error(t, err, u)
		if err != nil {
			assert.NotContains(t, err.Error(), "pw", "credentials in a URL are not echoed")
		}
	}
	c, err := serialized.New()
	require.NoError(t, err)
	assert.Equal(t, serialized.DefaultBaseURL, c.BaseURL())
	c, err = serialized.New(serialized.WithBaseURL("http://127.0.0.1:8080/prefix/"))
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:8080/prefix", c.BaseURL(), "a path is kept, its trailing slash dropped")

	_, err = serialized.New(serialized.WithEnv(func(string) string { return "" }))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY not set")
	env := map[string]string{"SERIALIZED_ACCESS_KEY": testAccess, "SERIALIZED_SECRET_ACCESS_KEY": testSecret, "SERIALIZED_BASE_URL": "http://127.0.0.1:9"}
	c, err = serialized.New(serialized.WithEnv(func(k string) string { return env[k] }))
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:9", c.BaseURL())
}

// No key value may appear in a log line, an error string, or a printed
// Client.
func TestSecretsNeverLeak(t *testing.T) {
	var logs bytes.Buffer
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(&logs), zapcore.DebugLevel))
	s := newScript(t, status(401, `{"code":401,"message":"unauthorized"}`), status(503, ``), hangUp, status(429, ``), status(500, ``), status(422, `{"errors":["bad"]}`))
	c := s.client(t, serialized.WithLogger(log), zeroRetry(5), serialized.WithMaxRateLimitWait(0))
	ctx := context.Background()
	var errs []string
	for i := 0; i < 4; i++ {
		if _, err := c.Load(ctx, ref(), 0, 0); err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		}
		if err := c.Store(ctx, ref(), oneEvent, transport.Exactly(1)); err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		}
		if err := c.ConfirmDelete(ctx, transport.DeleteAggregate(ref()), "tok-"+testSecret); err != nil {
			errs = append(errs, err.Error())
		}
	}
	require.NotEmpty(t, errs)
	printed := fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c)
	for _, secret := range []string{testAccess, testSecret} {
		assert.NotContains(t, logs.String(), secret)
		assert.NotContains(t, strings.Join(errs, "\n"), secret)
		assert.NotContains(t, printed, secret)
	}
	assert.Contains(t, logs.String(), "retrying", "the logs did capture the failures")
	assert.Contains(t, printed, "****")
}

func TestErrorsAreTransportErrors(t *testing.T) {
	s := newScript(t, status(418, ``))
	_, err := s.client(t).Load(context.Background(), ref(), 0, 0)
	var e *transport.Error
	require.True(t, errors.As(err, &e))
	assert.Equal(t, 418, e.StatusCode)
}

func TestBaseURLPathAndQuery(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RequestURI()
		_, _ = w.Write([]byte(strings.Replace(page, `"aggregateVersion":1`, `"aggregateVersion":4`, 1)))
	}))
	defer srv.Close()
	c, err := serialized.New(serialized.WithBaseURL(srv.URL+"/prefix/"), serialized.WithKeys(testAccess, testSecret))
	require.NoError(t, err)
	r := ref()
	_, err = c.Load(context.Background(), r, 3, 20)
	require.NoError(t, err)
	assert.Equal(t, "/prefix/aggregates/"+r.Type+"/"+r.ID+"?since=3&limit=20", got)
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var reached atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = w.Write([]byte(page))
	}))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer srv.Close()
	c, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret))
	require.NoError(t, err)
	_, err = c.Load(context.Background(), ref(), 0, 0)
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, http.StatusFound, te.StatusCode)
	assert.ErrorContains(t, err, "redirect")
	assert.Zero(t, reached.Load(), "the keys never travel to where a redirect points")
}
