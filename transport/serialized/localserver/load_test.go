package localserver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

// loadDuration is 1.5s in the normal run; SOURCED_LOAD_SECONDS=10 gives the
// issue's ten-second run.
func loadDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SOURCED_LOAD_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return time.Duration(n) * time.Second
	}
	return 1500 * time.Millisecond
}

// TestConcurrentClients: 50 clients on loopback mix load, store (with the
// loaded version as expectedVersion, so conflicts happen) and exists on 10
// aggregates. Afterwards: no 5xx, every acknowledged event is in the history
// exactly once, and each aggregate's version equals its acknowledged stores.
func TestConcurrentClients(t *testing.T) {
	srv := localserver.NewServer(memory.New(), localserver.WithKeys(accessKey, secretKey))
	defer srv.Close()
	const clients, aggregates = 50, 10
	ids := make([]string, aggregates)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	do := func(method, path string, body []byte) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, srv.URL+path, rd)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Serialized-Access-Key", accessKey)
		req.Header.Set("Serialized-Secret-Access-Key", secretKey)
		res, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, b, err
	}

	var (
		requests, fiveXX, conflicts atomic.Int64
		mu                          sync.Mutex
		acked                       = map[string]map[string]bool{} // aggregate -> acknowledged event ids
		ackedStores                 = map[string]int64{}
	)
	deadline := time.Now().Add(loadDuration(t))
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				id := ids[(c+i)%aggregates]
				path := "/aggregates/order/" + id
				version := int64(0)
				status, body, err := do("GET", path, nil)
				requests.Add(1)
				if !assert.NoError(t, err) {
					return
				}
				switch status {
				case 200:
					var lr struct {
						AggregateVersion int64 `json:"aggregateVersion"`
					}
					if !assert.NoError(t, json.Unmarshal(body, &lr)) {
						return
					}
					version = lr.AggregateVersion
				case 404:
				default:
					fiveXX.Add(1)
				}
				eid := uuid.NewString()
				store := fmt.Sprintf(`{"events":[{"eventId":%q,"eventType":"Touched","data":{"client":%d}}],"expectedVersion":%d}`, eid, c, version)
				status, _, err = do("POST", path+"/events", []byte(store))
				requests.Add(1)
				if !assert.NoError(t, err) {
					return
				}
				switch {
				case status == 200:
					mu.Lock()
					if acked[id] == nil {
						acked[id] = map[string]bool{}
					}
					acked[id][eid] = true
					ackedStores[id]++
					mu.Unlock()
				case status == 409:
					conflicts.Add(1)
				case status >= 500:
					fiveXX.Add(1)
				}
				status, _, err = do("HEAD", path, nil)
				requests.Add(1)
				if assert.NoError(t, err) && status >= 500 {
					fiveXX.Add(1)
				}
			}
		}(c)
	}
	wg.Wait()

	lost, doubled := 0, 0
	for _, id := range ids {
		var lr struct {
			AggregateVersion int64 `json:"aggregateVersion"`
			HasMore          bool  `json:"hasMore"`
			Events           []struct {
				EventID string `json:"eventId"`
			} `json:"events"`
		}
		var all []string
		for since := int64(0); ; since = lr.AggregateVersion {
			status, body, err := do("GET", fmt.Sprintf("/aggregates/order/%s?since=%d", id, since), nil)
			require.NoError(t, err)
			if ackedStores[id] == 0 {
				assert.Equal(t, 404, status)
				break
			}
			require.Equal(t, 200, status)
			lr.Events = nil
			require.NoError(t, json.Unmarshal(body, &lr))
			for _, e := range lr.Events {
				all = append(all, e.EventID)
			}
			if !lr.HasMore {
				break
			}
		}
		if ackedStores[id] == 0 {
			continue
		}
		assert.Equal(t, ackedStores[id], lr.AggregateVersion, "one version per acknowledged store")
		seen := map[string]int{}
		for _, eid := range all {
			seen[eid]++
		}
		for eid := range acked[id] {
			switch seen[eid] {
			case 0:
				lost++
			case 1:
			default:
				doubled++
			}
		}
		assert.Len(t, all, len(acked[id]), "nothing stored that was not acknowledged")
	}
	assert.Zero(t, fiveXX.Load(), "5xx responses")
	assert.Zero(t, lost, "lost events")
	assert.Zero(t, doubled, "doubled events")
	total := int64(0)
	for _, n := range ackedStores {
		total += n
	}
	t.Logf("%d clients, %s: %d requests (%.0f/s), %d stores acknowledged, %d conflicts, 5xx=%d, lost=%d, doubled=%d",
		clients, loadDuration(t), requests.Load(), float64(requests.Load())/loadDuration(t).Seconds(), total, conflicts.Load(), fiveXX.Load(), lost, doubled)
}
