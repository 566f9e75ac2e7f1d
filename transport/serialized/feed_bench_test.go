package serialized_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
	"github.com/sourced-go/sourced/transport/transporttest"
)

// BenchmarkFeedCatchUpHTTP reads a feed of 20,000 one-event batches from
// the local server over loopback, in pages of 1000, through this client
// (ReadFeed), beside the floor: a bare net/http GET of the same pages
// decoded with encoding/json into a plain struct.
func BenchmarkFeedCatchUpHTTP(b *testing.B) {
	const batches = 20_000
	backend := memory.New()
	ctx := context.Background()
	refs := make([]transport.Ref, 500)
	for i := range refs {
		refs[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	for i := range batches {
		data := []byte(fmt.Sprintf(`{"orderId":"o-%d","amount":%d,"currency":"EUR"}`, i, i%500))
		if err := backend.Store(ctx, refs[i%len(refs)], []transport.Event{{EventType: "OrderPaid", Data: data}}, transport.Any); err != nil {
			b.Fatal(err)
		}
	}
	srv := localserver.NewServer(backend, localserver.WithKeys(testAccess, testSecret), localserver.WithRateLimit(1<<30, time.Minute))
	b.Cleanup(srv.Close)

	b.Run("floor=net/http", func(b *testing.B) {
		type page struct {
			Entries []struct {
				SequenceNumber int64  `json:"sequenceNumber"`
				AggregateID    string `json:"aggregateId"`
				Timestamp      int64  `json:"timestamp"`
				FeedName       string `json:"feedName"`
				Events         []struct {
					EventID   string          `json:"eventId"`
					EventType string          `json:"eventType"`
					Data      json.RawMessage `json:"data"`
				} `json:"events"`
			} `json:"entries"`
			HasMore bool `json:"hasMore"`
		}
		client := &http.Client{}
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			for since := int64(0); ; {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/feeds/_all?since="+strconv.FormatInt(since, 10)+"&limit=1000", nil)
				req.Header.Set("Serialized-Access-Key", testAccess)
				req.Header.Set("Serialized-Secret-Access-Key", testSecret)
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
				var p page
				if err := json.Unmarshal(body, &p); err != nil {
					b.Fatal(err)
				}
				n += len(p.Entries)
				if !p.HasMore {
					break
				}
				since = p.Entries[len(p.Entries)-1].SequenceNumber
			}
			if n != batches {
				b.Fatalf("read %d", n)
			}
		}
		b.ReportMetric(float64(batches*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("client", func(b *testing.B) {
		client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			n, err := transporttest.CountFeed(ctx, client, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Limit: 1000})
			if err != nil || n != batches {
				b.Fatalf("read %d: %v", n, err)
			}
		}
		b.ReportMetric(float64(batches*b.N)/b.Elapsed().Seconds(), "entries/s")
	})
}
