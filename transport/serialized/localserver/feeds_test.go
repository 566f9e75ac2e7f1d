package localserver_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// storeWithoutFeed hides the memory transport's Feeder.
type storeWithoutFeed struct{ transport.Transport }

type feedBody struct {
	Entries []struct {
		SequenceNumber   int64  `json:"sequenceNumber"`
		AggregateID      string `json:"aggregateId"`
		Timestamp        int64  `json:"timestamp"`
		FeedName         string `json:"feedName"`
		AggregateVersion int64  `json:"aggregateVersion"`
		Events           []struct {
			EventID   string          `json:"eventId"`
			EventType string          `json:"eventType"`
			Data      json.RawMessage `json:"data"`
		} `json:"events"`
	} `json:"entries"`
	HasMore               bool  `json:"hasMore"`
	CurrentSequenceNumber int64 `json:"currentSequenceNumber"`
}

func TestFeedsOverTheWire(t *testing.T) {
	a := newAPI(t)
	id1, id2 := uuid.NewString(), uuid.NewString()
	require.Equal(t, 200, a.do("POST", "/aggregates/order/"+id1+"/events", `{"events":[{"eventType":"OrderPlaced","data":{"n":1}}]}`).status)
	require.Equal(t, 200, a.do("POST", "/aggregates/payment/"+id2+"/events", `{"events":[{"eventType":"PaymentProcessed"},{"eventType":"PaymentNoted"}]}`).status)
	require.Equal(t, 200, a.do("POST", "/aggregates/order/"+id1+"/events", `{"events":[{"eventType":"OrderPaid"}]}`).status)

	r := a.do("GET", "/feeds/_all", "")
	require.Equal(t, 200, r.status, r.body)
	var all feedBody
	require.NoError(t, json.Unmarshal([]byte(r.body), &all))
	require.Len(t, all.Entries, 3)
	assert.Equal(t, int64(3), all.CurrentSequenceNumber)
	assert.Equal(t, "order", all.Entries[0].FeedName)
	assert.Equal(t, "payment", all.Entries[1].FeedName)
	assert.Len(t, all.Entries[1].Events, 2)
	assert.Equal(t, int64(2), all.Entries[2].AggregateVersion)
	assert.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), all.Entries[0].Timestamp)
	assert.JSONEq(t, `{"n":1}`, string(all.Entries[0].Events[0].Data))

	r = a.do("GET", "/feeds/order?since=1&limit=10", "")
	require.Equal(t, 200, r.status)
	var orders feedBody
	require.NoError(t, json.Unmarshal([]byte(r.body), &orders))
	require.Len(t, orders.Entries, 1)
	assert.Equal(t, int64(3), orders.Entries[0].SequenceNumber)

	r = a.do("GET", "/feeds/_all?filterType=PaymentNoted&filterType=Nothing", "")
	require.NoError(t, json.Unmarshal([]byte(r.body), &all))
	require.Len(t, all.Entries, 1)
	assert.Equal(t, id2, all.Entries[0].AggregateID)

	r = a.do("HEAD", "/feeds/order", "")
	assert.Equal(t, 200, r.status)
	assert.Equal(t, "3", r.header.Get("serialized-sequencenumber-current"))
	r = a.do("HEAD", "/feeds/_all", "")
	assert.Equal(t, "3", r.header.Get("Serialized-SequenceNumber-Current"))
	r = a.do("HEAD", "/feeds/invoice", "")
	assert.Equal(t, "0", r.header.Get("Serialized-SequenceNumber-Current"))

	r = a.do("GET", "/feeds", "")
	require.Equal(t, 200, r.status)
	assert.JSONEq(t, `{"feeds":[{"aggregateType":"order","aggregateCount":1,"batchCount":2,"eventCount":2},
		{"aggregateType":"payment","aggregateCount":1,"batchCount":1,"eventCount":2}]}`, r.body)

	// Another tenant sees none of it.
	tenant := uuid.NewString()
	r = a.do("GET", "/feeds/_all", "", "Serialized-Tenant-Id", tenant)
	require.Equal(t, 200, r.status)
	assert.JSONEq(t, `{"entries":[],"hasMore":false,"currentSequenceNumber":0}`, r.body)
}

func TestFeedBadInput(t *testing.T) {
	a := newAPI(t)
	for _, c := range []struct {
		name, method, path string
		want               int
	}{
		{"bad feed name", "GET", "/feeds/Order!", 400},
		{"underscore type", "GET", "/feeds/_none", 400},
		{"bad since", "GET", "/feeds/_all?since=abc", 400},
		{"negative since", "GET", "/feeds/_all?since=-1", 400},
		{"limit over 1000", "GET", "/feeds/_all?limit=1001", 400},
		{"negative limit", "GET", "/feeds/_all?limit=-5", 400},
		{"partition number >= count", "GET", "/feeds/_all?partitionCount=2&partitionNumber=2", 400},
		{"partition number without count", "GET", "/feeds/_all?partitionNumber=1", 400},
		{"huge partition count", "GET", "/feeds/_all?partitionCount=99999999999", 400},
		{"bad filter type", "GET", "/feeds/_all?filterType=a%20b", 400},
		{"wait over 60s", "GET", "/feeds/_all?waitTime=60001", 400},
		{"bad wait", "GET", "/feeds/_all?waitTime=soon", 400},
		{"from and to", "GET", "/feeds/_all?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", 400},
		{"bad head name", "HEAD", "/feeds/Bad!", 400},
		{"bad tenant", "GET", "/feeds/_all", 400},
	} {
		start := time.Now()
		var r resp
		if c.name == "bad tenant" {
			r = a.do(c.method, c.path, "", "Serialized-Tenant-Id", "acme")
		} else {
			r = a.do(c.method, c.path, "")
		}
		assert.Equal(t, c.want, r.status, "%s: %s", c.name, r.body)
		assert.Less(t, time.Since(start), 5*time.Second, c.name)
		if c.method == "GET" {
			assert.True(t, strings.Contains(r.body, "message") || strings.Contains(r.body, "errors"), "%s: a reason is given: %s", c.name, r.body)
		}
	}
	// Without keys: 401, as everywhere.
	req, err := http.NewRequest("GET", a.url+"/feeds/_all", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 401, res.StatusCode)
}

func TestFeedLongPoll(t *testing.T) {
	a := newAPI(t)
	id := uuid.NewString()
	got := make(chan resp, 1)
	go func() { got <- a.do("GET", "/feeds/order?since=0&waitTime=30000", "") }()
	// Whether the read is already waiting or not, it must return this batch.
	require.Equal(t, 200, a.do("POST", "/aggregates/order/"+id+"/events", `{"events":[{"eventType":"OrderPlaced"}]}`).status)
	select {
	case r := <-got:
		require.Equal(t, 200, r.status)
		assert.Contains(t, r.body, id)
	case <-time.After(20 * time.Second):
		t.Fatal("a long-polling read did not answer after a store")
	}
	// An empty wait answers empty once its time is up.
	r := a.do("GET", "/feeds/order?since=1&waitTime=50", "")
	assert.Equal(t, 200, r.status)
	assert.Contains(t, r.body, `"entries":[]`)
}

func TestFeedsNeedAFeeder(t *testing.T) {
	srv := localserver.NewServer(storeWithoutFeed{memory.New()})
	t.Cleanup(srv.Close)
	res, err := http.Get(srv.URL + "/feeds/_all")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 404, res.StatusCode)
}
