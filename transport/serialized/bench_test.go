package serialized_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

type tally struct{ N int }
type Counted struct {
	By int `json:"by"`
}

var tallies = aggregate.MustNew[tally]("tally", aggregate.On(func(s *tally, e Counted) { s.N += e.By }))

func count(r *aggregate.Root[tally]) error { return r.Record(Counted{By: 1}) }

// roundTripChunk is how many fresh aggregates the round-trip benchmark
// keeps in the local server's store at a time.
const roundTripChunk = 1000

// BenchmarkUpdateRoundTrip is repository.Update (a GET then a POST) through
// this client to the local server on loopback, beside a floor measured in
// the same run: a bare net/http GET then POST to a trivial handler. Each
// iteration updates a fresh aggregate of one event, so the load stays one
// small page. The server runs in the benchmark's process, so its store is
// emptied and reseeded every roundTripChunk iterations, off the clock: the
// heap the garbage collector marks stays the same whatever b.N is, as a
// remote server's would, instead of growing with every iteration.
func BenchmarkUpdateRoundTrip(b *testing.B) {
	ctx := context.Background()
	b.Run("repository+serialized+localserver", func(b *testing.B) {
		backend := memory.New()
		// A long run sends more than the default 100,000 requests a
		// minute: the limiter still counts each one, and never says no.
		srv := localserver.NewServer(backend, localserver.WithKeys(testAccess, testSecret),
			localserver.WithRateLimit(1<<30, time.Minute))
		defer srv.Close()
		client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret))
		if err != nil {
			b.Fatal(err)
		}
		repo := repository.New(client, tallies)
		ids := make([]string, roundTripChunk)
		reseed := func() {
			all := transport.DeleteAllOfType(transport.Scope{Type: "tally"})
			tok, err := backend.RequestDelete(ctx, all)
			if err == nil {
				err = backend.ConfirmDelete(ctx, all, tok)
			}
			if err != nil {
				b.Fatal(err)
			}
			for i := range ids {
				ids[i] = uuid.NewString()
				err := backend.Store(ctx, transport.Ref{Type: "tally", ID: ids[i]},
					[]transport.Event{{EventType: "Counted", Data: []byte(`{"by":1}`)}}, transport.MustNotExist)
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%roundTripChunk == 0 {
				b.StopTimer()
				reseed()
				b.StartTimer()
			}
			if _, err := repo.Update(ctx, ids[i%roundTripChunk], count); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor-net/http-GET+POST", func(b *testing.B) {
		body := []byte(page)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.Method == http.MethodGet {
				_, _ = w.Write(body)
			}
		}))
		defer srv.Close()
		hc := &http.Client{}
		post := []byte(`{"events":[{"eventId":"2c3cf88c-ee88-427e-818a-ab0267511c84","eventType":"Counted","data":{"by":1}}],"expectedVersion":1}`)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, err := hc.Get(srv.URL + "/aggregates/tally/x")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			res, err = hc.Post(srv.URL+"/aggregates/tally/x/events", "application/json", bytes.NewReader(post))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
