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

// ourSide is repository.Update through this client to the local server.
type ourSide struct {
	ctx     context.Context
	backend *memory.Transport
	srv     *localserver.Server
	repo    *repository.Repository[tally]
	ids     []string
}

func newOurSide(b *testing.B) *ourSide {
	backend := memory.New()
	// A long run sends more than the default 100,000 requests a minute:
	// the limiter still counts each one, and never says no.
	srv := localserver.NewServer(backend, localserver.WithKeys(testAccess, testSecret),
		localserver.WithRateLimit(1<<30, time.Minute))
	b.Cleanup(srv.Close)
	client, err := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys(testAccess, testSecret))
	if err != nil {
		b.Fatal(err)
	}
	return &ourSide{ctx: context.Background(), backend: backend, srv: srv,
		repo: repository.New(client, tallies), ids: make([]string, roundTripChunk)}
}

// prepare readies iteration i: every roundTripChunk iterations it empties
// the store and seeds a fresh chunk of one-event aggregates, off the clock.
func (o *ourSide) prepare(b *testing.B, i int) {
	if i%roundTripChunk != 0 {
		return
	}
	b.StopTimer()
	defer b.StartTimer()
	all := transport.DeleteAllOfType(transport.Scope{Type: "tally"})
	tok, err := o.backend.RequestDelete(o.ctx, all)
	if err == nil {
		err = o.backend.ConfirmDelete(o.ctx, all, tok)
	}
	if err != nil {
		b.Fatal(err)
	}
	for k := range o.ids {
		o.ids[k] = uuid.NewString()
		err := o.backend.Store(o.ctx, transport.Ref{Type: "tally", ID: o.ids[k]},
			[]transport.Event{{EventType: "Counted", Data: []byte(`{"by":1}`)}}, transport.MustNotExist)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func (o *ourSide) update(b *testing.B, i int) {
	if _, err := o.repo.Update(o.ctx, o.ids[i%roundTripChunk], count); err != nil {
		b.Fatal(err)
	}
}

// floorSide is a bare net/http GET then POST to a trivial handler.
type floorSide struct {
	url  string
	hc   *http.Client
	post []byte
}

func newFloorSide(b *testing.B) *floorSide {
	body := []byte(page)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	}))
	b.Cleanup(srv.Close)
	return &floorSide{url: srv.URL, hc: &http.Client{},
		post: []byte(`{"events":[{"eventId":"2c3cf88c-ee88-427e-818a-ab0267511c84","eventType":"Counted","data":{"by":1}}],"expectedVersion":1}`)}
}

func (f *floorSide) getPost(b *testing.B) {
	res, err := f.hc.Get(f.url + "/aggregates/tally/x")
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	res, err = f.hc.Post(f.url+"/aggregates/tally/x/events", "application/json", bytes.NewReader(f.post))
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// BenchmarkUpdateRoundTrip is repository.Update (a GET then a POST) through
// this client to the local server on loopback, beside a floor measured in
// the same run: a bare net/http GET then POST to a trivial handler. Each
// iteration updates a fresh aggregate of one event, so the load stays one
// small page. The server runs in the benchmark's process, so its store is
// emptied and reseeded every roundTripChunk iterations, off the clock: the
// heap the garbage collector marks stays the same whatever b.N is, as a
// remote server's would, instead of growing with every iteration.
//
// The first two sub-benchmarks give each side's ns, bytes and allocations
// per op. The third alternates the two, one op each, and reports each
// side's mean time and their ratio: both see the same moment of the
// machine, so the ratio holds still on a machine whose speed drifts, where
// the ratio of two separate runs can move by a third.
func BenchmarkUpdateRoundTrip(b *testing.B) {
	b.Run("repository+serialized+localserver", func(b *testing.B) {
		ours := newOurSide(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ours.prepare(b, i)
			ours.update(b, i)
		}
	})
	b.Run("floor-net/http-GET+POST", func(b *testing.B) {
		floor := newFloorSide(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			floor.getPost(b)
		}
	})
	b.Run("interleaved", func(b *testing.B) {
		ours, floor := newOurSide(b), newFloorSide(b)
		var oursTime, floorTime time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ours.prepare(b, i)
			t0 := time.Now()
			ours.update(b, i)
			t1 := time.Now()
			floor.getPost(b)
			oursTime += t1.Sub(t0)
			floorTime += time.Since(t1)
		}
		b.ReportMetric(float64(oursTime.Nanoseconds())/float64(b.N), "ours-ns/op")
		b.ReportMetric(float64(floorTime.Nanoseconds())/float64(b.N), "floor-ns/op")
		b.ReportMetric(float64(oursTime)/float64(floorTime), "ratio")
	})
}
