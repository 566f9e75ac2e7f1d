package localserver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
	"github.com/sourced-go/sourced/transport/transporttest"
)

const (
	accessKey = "test-access-key"
	secretKey = "test-secret-key"
)

type api struct {
	t   *testing.T
	url string
	clk *transporttest.Clock
}

func newAPI(t *testing.T, opts ...localserver.Option) *api {
	t.Helper()
	clk := transporttest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := localserver.NewServer(memory.New(memory.WithClock(clk.Now)),
		append([]localserver.Option{localserver.WithKeys(accessKey, secretKey)}, opts...)...)
	t.Cleanup(srv.Close)
	return &api{t: t, url: srv.URL, clk: clk}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (a *api) do(method, path, body string, headers ...string) resp {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	require.NoError(a.t, err)
	req.Header.Set("Serialized-Access-Key", accessKey)
	req.Header.Set("Serialized-Secret-Access-Key", secretKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(a.t, err)
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}
}

func events(types ...string) string {
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf(`{"eventType":%q,"data":{"n":%d}}`, t, i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestStoreLoadRoundTrip(t *testing.T) {
	a := newAPI(t)
	id := uuid.NewString()
	path := "/aggregates/order/" + id
	eid := uuid.NewString()
	r := a.do("POST", path+"/events", `{"events":[{"eventId":"`+eid+`","eventType":"OrderPlaced","data":{"amount":1000},"encryptedData":"c2VjcmV0"}],"expectedVersion":0}`)
	require.Equal(t, 200, r.status, r.body)
	assert.Empty(t, r.body, "a store answers with an empty body")

	r = a.do("GET", path, "")
	require.Equal(t, 200, r.status)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Equal(t, id, got["aggregateId"])
	assert.Equal(t, "order", got["aggregateType"])
	assert.Equal(t, float64(1), got["aggregateVersion"])
	assert.Equal(t, false, got["hasMore"])
	evs := got["events"].([]any)
	require.Len(t, evs, 1)
	e := evs[0].(map[string]any)
	assert.Equal(t, eid, e["eventId"])
	assert.Equal(t, "OrderPlaced", e["eventType"])
	assert.Equal(t, map[string]any{"amount": float64(1000)}, e["data"])
	assert.Equal(t, "c2VjcmV0", e["encryptedData"])

	// The Java sample sends expectedVersion as a string.
	r = a.do("POST", path+"/events", `{"events":`+events("OrderPaid")+`,"expectedVersion":"1"}`)
	assert.Equal(t, 200, r.status, r.body)
	// Absent expectedVersion: no check.
	r = a.do("POST", path+"/events", `{"events":`+events("OrderNoted", "OrderNoted")+`}`)
	assert.Equal(t, 200, r.status, r.body)

	r = a.do("GET", path+"?since=1&limit=1", "")
	require.Equal(t, 200, r.status)
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	assert.Equal(t, float64(2), got["aggregateVersion"])
	assert.Equal(t, true, got["hasMore"])
	assert.Len(t, got["events"], 1)
}

func TestStatusCodes(t *testing.T) {
	a := newAPI(t)
	id := uuid.NewString()
	path := "/aggregates/order/" + id
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":`+events("OrderPlaced")+`,"expectedVersion":0}`).status)

	cases := []struct {
		name, method, path, body string
		headers                  []string
		want                     int
	}{
		{"no keys", "GET", path, "", []string{"Serialized-Access-Key", "", "Serialized-Secret-Access-Key", ""}, 401},
		{"wrong secret", "GET", path, "", []string{"Serialized-Secret-Access-Key", "nope"}, 401},
		{"bad type", "GET", "/aggregates/Order/" + id, "", nil, 400},
		{"bad id", "GET", "/aggregates/order/42", "", nil, 400},
		{"bad tenant", "GET", path, "", []string{"Serialized-Tenant-Id", "acme"}, 400},
		{"bad since", "GET", path + "?since=-1", "", nil, 400},
		{"bad limit", "GET", path + "?limit=x", "", nil, 400},
		{"missing", "GET", "/aggregates/order/" + uuid.NewString(), "", nil, 404},
		{"other tenant", "GET", path, "", []string{"Serialized-Tenant-Id", uuid.NewString()}, 404},
		{"conflict", "POST", path + "/events", `{"events":` + events("OrderPaid") + `,"expectedVersion":0}`, nil, 409},
		{"stale", "POST", path + "/events", `{"events":` + events("OrderPaid") + `,"expectedVersion":5}`, nil, 409},
		{"bad json", "POST", path + "/events", `{"events":[`, nil, 422},
		{"empty body", "POST", path + "/events", ``, []string{"Content-Type", "application/json"}, 422},
		{"no content type", "POST", path + "/events", `{"events":` + events("OrderPaid") + `}`, []string{"Content-Type", ""}, 415},
		{"text/plain", "POST", path + "/events", `{"events":` + events("OrderPaid") + `}`, []string{"Content-Type", "text/plain"}, 415},
		{"bulk text/plain", "POST", "/aggregates/order/events", `{"batches":[]}`, []string{"Content-Type", "text/plain;charset=utf-8"}, 415},
		{"json with charset", "POST", path + "/events", `{"events":` + events("OrderPaid") + `,"expectedVersion":1}`, []string{"Content-Type", "application/json; charset=utf-8"}, 200},
		{"trailing garbage", "POST", path + "/events", `{"events":` + events("OrderPaid") + `} {}`, nil, 422},
		{"no events", "POST", path + "/events", `{"events":[]}`, nil, 422},
		{"missing eventType", "POST", path + "/events", `{"events":[{"data":{}}]}`, nil, 422},
		{"bad eventType", "POST", path + "/events", `{"events":[{"eventType":"a b c"}]}`, nil, 422},
		{"bad eventId", "POST", path + "/events", `{"events":[{"eventType":"OrderPaid","eventId":"x"}]}`, nil, 422},
		{"negative expected", "POST", path + "/events", `{"events":` + events("OrderPaid") + `,"expectedVersion":-1}`, nil, 422},
		{"bad expected", "POST", path + "/events", `{"events":` + events("OrderPaid") + `,"expectedVersion":"one"}`, nil, 422},
		{"too long encryptedData", "POST", path + "/events", `{"events":[{"eventType":"OrderPaid","encryptedData":"` + strings.Repeat("x", transport.MaxEncryptedData+1) + `"}]}`, nil, 422},
		{"store bad type", "POST", "/aggregates/ORDER/" + id + "/events", `{"events":` + events("OrderPaid") + `}`, nil, 400},
		{"wrong method", "PUT", path, "", nil, 405},
		{"unknown route", "GET", "/projections", "", nil, 404},
		{"head exists", "HEAD", path, "", nil, 200},
		{"head missing", "HEAD", "/aggregates/order/" + uuid.NewString(), "", nil, 404},
		{"head bad id", "HEAD", "/aggregates/order/x", "", nil, 400},
		{"unknown token", "DELETE", path + "?deleteToken=" + uuid.NewString(), "", nil, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := a.do(c.method, c.path, c.body, c.headers...)
			assert.Equal(t, c.want, r.status, r.body)
			if c.want == 401 {
				assert.Empty(t, r.header.Get("Serialized-RateLimit-Limit"), "no rate-limit headers without keys")
				assert.Empty(t, r.header.Get("Serialized-RateLimit-Remaining"))
				assert.Empty(t, r.header.Get("Serialized-RateLimit-Reset"))
			} else {
				assert.NotEmpty(t, r.header.Get("Serialized-RateLimit-Limit"), "rate-limit headers on every keyed response")
				assert.NotEmpty(t, r.header.Get("Serialized-RateLimit-Remaining"))
				assert.NotEmpty(t, r.header.Get("Serialized-RateLimit-Reset"))
			}
			if c.want == 422 {
				var body struct{ Errors []string }
				require.NoError(t, json.Unmarshal([]byte(r.body), &body), r.body)
				assert.NotEmpty(t, body.Errors, "422 carries an errors array")
			}
			if c.want == 405 {
				assert.NotEmpty(t, r.header.Get("Allow"))
			}
			if c.method == "HEAD" {
				assert.Empty(t, r.body)
			}
		})
	}
	// Nothing of the rejected stores landed.
	r := a.do("GET", path, "")
	assert.Contains(t, r.body, `"aggregateVersion":2`)
}

func TestTooManyEventsAndBodyBound(t *testing.T) {
	a := newAPI(t, localserver.WithMaxBodyBytes(64<<10))
	path := "/aggregates/order/" + uuid.NewString() + "/events"
	many := make([]string, transport.MaxBatchEvents+1)
	for i := range many {
		many[i] = "OrderNoted"
	}
	assert.Equal(t, 422, a.do("POST", path, `{"events":`+events(many...)+`}`).status)
	assert.Equal(t, 200, a.do("POST", path, `{"events":`+events(many[1:]...)+`}`).status, "a full batch is fine")
	big := `{"events":[{"eventType":"OrderNoted","data":{"s":"` + strings.Repeat("x", 70<<10) + `"}}]}`
	assert.Equal(t, 413, a.do("POST", path, big).status)
}

func TestETag(t *testing.T) {
	a := newAPI(t)
	path := "/aggregates/order/" + uuid.NewString()
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":`+events("OrderPlaced")+`}`).status)
	r := a.do("GET", path, "")
	etag := r.header.Get("ETag")
	require.NotEmpty(t, etag)
	assert.Equal(t, 304, a.do("GET", path, "", "If-None-Match", etag).status)
	require.Equal(t, 200, a.do("POST", path+"/events", `{"events":`+events("OrderPaid")+`}`).status)
	assert.Equal(t, 200, a.do("GET", path, "", "If-None-Match", etag).status, "a new version changes the ETag")
}

func TestDeleteFlows(t *testing.T) {
	a := newAPI(t)
	id, other := uuid.NewString(), uuid.NewString()
	for _, x := range []string{id, other} {
		require.Equal(t, 200, a.do("POST", "/aggregates/order/"+x+"/events", `{"events":`+events("OrderPlaced")+`}`).status)
	}
	r := a.do("DELETE", "/aggregates/order/"+id, "")
	require.Equal(t, 200, r.status)
	var tok struct{ DeleteToken string }
	require.NoError(t, json.Unmarshal([]byte(r.body), &tok))
	require.NotEmpty(t, tok.DeleteToken)
	assert.Equal(t, 200, a.do("HEAD", "/aggregates/order/"+id, "").status, "nothing deleted yet")
	assert.Equal(t, 403, a.do("DELETE", "/aggregates/order/"+other+"?deleteToken="+tok.DeleteToken, "").status, "token of another aggregate")
	assert.Equal(t, 403, a.do("DELETE", "/aggregates/order?deleteToken="+tok.DeleteToken, "").status, "token of one aggregate for the type")
	assert.Equal(t, 204, a.do("DELETE", "/aggregates/order/"+id+"?deleteToken="+tok.DeleteToken, "").status)
	assert.Equal(t, 404, a.do("GET", "/aggregates/order/"+id, "").status)
	assert.Equal(t, 200, a.do("HEAD", "/aggregates/order/"+other, "").status)

	r = a.do("DELETE", "/aggregates/order", "")
	require.Equal(t, 200, r.status)
	require.NoError(t, json.Unmarshal([]byte(r.body), &tok))
	a.clk.Advance(transport.DeleteTokenTTL + time.Second)
	assert.Equal(t, 403, a.do("DELETE", "/aggregates/order?deleteToken="+tok.DeleteToken, "").status, "an expired token")
	r = a.do("DELETE", "/aggregates/order", "")
	require.NoError(t, json.Unmarshal([]byte(r.body), &tok))
	assert.Equal(t, 204, a.do("DELETE", "/aggregates/order?deleteToken="+tok.DeleteToken, "").status)
	assert.Equal(t, 404, a.do("HEAD", "/aggregates/order/"+other, "").status)
}

func TestBulkAndList(t *testing.T) {
	a := newAPI(t)
	x, y := uuid.NewString(), uuid.NewString()
	body := fmt.Sprintf(`{"batches":[{"aggregateId":%q,"events":%s,"expectedVersion":0},{"aggregateId":%q,"events":%s}]}`, x, events("OrderPlaced"), y, events("OrderPlaced", "OrderPaid"))
	require.Equal(t, 200, a.do("POST", "/aggregates/order/events", body).status)
	assert.Equal(t, 409, a.do("POST", "/aggregates/order/events", body).status, "x exists now: nothing of the batch is stored")
	dup := fmt.Sprintf(`{"batches":[{"aggregateId":%q,"events":%s},{"aggregateId":%q,"events":%s}]}`, x, events("A01"), x, events("A01"))
	assert.Equal(t, 422, a.do("POST", "/aggregates/order/events", dup).status)
	assert.Equal(t, 422, a.do("POST", "/aggregates/order/events", `{"batches":[]}`).status)

	r := a.do("GET", "/aggregates/order?limit=1", "")
	require.Equal(t, 200, r.status)
	var list struct {
		Aggregates []struct {
			AggregateID      string `json:"aggregateId"`
			AggregateType    string `json:"aggregateType"`
			AggregateVersion int64  `json:"aggregateVersion"`
			LastUpdatedAt    int64  `json:"lastUpdatedAt"`
		} `json:"aggregates"`
		HasMore bool `json:"hasMore"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	require.Len(t, list.Aggregates, 1)
	assert.True(t, list.HasMore)
	assert.Equal(t, int64(1), list.Aggregates[0].AggregateVersion)
	assert.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), list.Aggregates[0].LastUpdatedAt)
}

func TestRateLimit(t *testing.T) {
	a := newAPI(t, localserver.WithRateLimit(3, time.Minute))
	path := "/aggregates/order/" + uuid.NewString()
	var remaining []string
	for i := 0; i < 3; i++ {
		r := a.do("HEAD", path, "")
		assert.Equal(t, 404, r.status)
		remaining = append(remaining, r.header.Get("Serialized-RateLimit-Remaining"))
	}
	assert.Equal(t, []string{"2", "1", "0"}, remaining)
	r := a.do("GET", path, "")
	require.Equal(t, 429, r.status)
	assert.JSONEq(t, `{"code":429,"message":"rate limit exceeded"}`, r.body)
	assert.Equal(t, "3", r.header.Get("Serialized-RateLimit-Limit"))
	reset, err := strconv.ParseInt(r.header.Get("Serialized-RateLimit-Reset"), 10, 64)
	require.NoError(t, err)
	assert.Greater(t, reset, time.Now().Unix()-5, "reset is in epoch seconds")
}

func TestOpenWithoutKeys(t *testing.T) {
	srv := httptest.NewServer(localserver.NewHandler(memory.New()))
	defer srv.Close()
	res, err := http.Head(srv.URL + "/aggregates/order/" + uuid.NewString())
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 404, res.StatusCode, "without WithKeys any request is accepted")
}

func ExampleNewServer() {
	srv := localserver.NewServer(memory.New(), localserver.WithKeys("my-key", "my-secret"))
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/aggregates/payment/2c3cf88c-ee88-427e-818a-ab0267511c84/events",
		strings.NewReader(`{"events":[{"eventType":"PaymentProcessed","data":{"paymentMethod":"CARD","amount":1000,"currency":"SEK"}}],"expectedVersion":0}`))
	req.Header.Set("Serialized-Access-Key", "my-key")
	req.Header.Set("Serialized-Secret-Access-Key", "my-secret")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.StatusCode)
	// Output: 200
}
