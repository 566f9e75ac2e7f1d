package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// stamp is what every stored event carries: its aggregate and version, so
// a reader can tell an event of another aggregate or version.
type stamp struct {
	ID  string `json:"id"`
	V   int64  `json:"v"`
	Pad string `json:"pad,omitempty"`
}

// TestConcurrentStoresDeletesAndReads runs writers (each owns its ids:
// creates, appends, deletes and re-creates them, small and large batches)
// beside readers that load, list and read the feeds at once; every event a
// reader gets names the aggregate and version it was read as, and no
// reader sees a feed head fall.
func TestConcurrentStoresDeletesAndReads(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	const writers, readers, ops = 4, 4, 300
	var all []string
	owned := make([][]string, writers)
	for w := range owned {
		for range 40 {
			id := uuid.NewString()
			if len(all)%3 == 0 {
				id = strings.ToUpper(id)
			}
			owned[w] = append(owned[w], id)
			all = append(all, id)
		}
	}
	types := []string{"order", "item"}
	check := func(what, id string, v int64, es []transport.Event) {
		for _, e := range es {
			var s stamp
			if !assert.NoError(t, json.Unmarshal(e.Data, &s), what) {
				return
			}
			assert.Equal(t, id, s.ID, what)
			assert.Equal(t, v, s.V, what)
		}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			versions := map[transport.Ref]int64{}
			for range ops {
				ref := transport.Ref{Type: types[rng.IntN(2)], ID: owned[w][rng.IntN(len(owned[w]))]}
				if rng.IntN(5) == 0 {
					tok, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
					assert.NoError(t, err)
					assert.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), tok))
					delete(versions, ref)
					continue
				}
				v := versions[ref] + 1
				pad := strings.Repeat("p", rng.IntN(2)*(300+rng.IntN(600)))
				var es []transport.Event
				for range 1 + rng.IntN(3) {
					data, _ := json.Marshal(stamp{ID: ref.ID, V: v, Pad: pad})
					es = append(es, transport.Event{EventType: "Stamped", Data: data})
				}
				if !assert.NoError(t, tr.Store(ctx, ref, es, transport.Exactly(v-1))) {
					return
				}
				versions[ref] = v
			}
		}()
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 8))
			heads := map[string]int64{}
			for range ops {
				typ := types[rng.IntN(2)]
				switch rng.IntN(4) {
				case 0:
					ref := transport.Ref{Type: typ, ID: all[rng.IntN(len(all))]}
					page, err := tr.Load(ctx, ref, 0, 0)
					if err != nil {
						assert.ErrorIs(t, err, transport.ErrNotFound)
						continue
					}
					// Versions rise by one from batch to batch, from 1.
					v := int64(0)
					for _, e := range page.Events {
						var s stamp
						if !assert.NoError(t, json.Unmarshal(e.Data, &s)) {
							return
						}
						if s.V == v+1 {
							v++
						}
						check(fmt.Sprintf("load %v", ref), ref.ID, v, []transport.Event{e})
					}
					assert.Equal(t, page.Version, v, "load %v", ref)
				case 1:
					lp, err := tr.List(ctx, transport.Scope{Type: typ}, rng.IntN(20), 10)
					assert.NoError(t, err)
					for _, a := range lp.Aggregates {
						assert.Positive(t, a.AggregateVersion)
					}
				default:
					feed := []string{transport.AllTypes, typ}[rng.IntN(2)]
					fp, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: feed}, Since: int64(rng.IntN(200)), Limit: 50})
					assert.NoError(t, err)
					assert.GreaterOrEqual(t, fp.Head, heads[feed], "feed head of %s fell", feed)
					heads[feed] = fp.Head
					for _, e := range fp.Entries {
						check(fmt.Sprintf("feed entry %d", e.Sequence), e.AggregateID, e.Version, e.Events)
					}
					h, err := tr.FeedHead(ctx, transport.Scope{Type: feed})
					assert.NoError(t, err)
					assert.GreaterOrEqual(t, h, heads[feed], "feed head of %s fell", feed)
					heads[feed] = h
				}
			}
		}()
	}
	wg.Wait()
	require.False(t, t.Failed())
}
