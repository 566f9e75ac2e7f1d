package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// modelEntry is what the model knows of one feed entry.
type modelEntry struct {
	seq     int64
	typ, id string
	version int64
	live    bool
}

// TestFeedBlocksAgainstAModel stores, deletes single aggregates and whole
// types across several feed blocks (deletes that empty blocks, then more
// stores), and after every round pages every feed with odd limits and from
// odd starting points: the entries are exactly the model's live ones.
func TestFeedBlocksAgainstAModel(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	rng := rand.New(rand.NewPCG(4096, 28))
	types := []string{"alpha", "beta", "gamma"}
	var model []modelEntry
	versions := map[transport.Ref]int64{}
	var refs []transport.Ref
	entriesOf := map[transport.Ref][]int{}
	del := func(target transport.DeleteTarget) {
		tok, err := tr.RequestDelete(ctx, target)
		require.NoError(t, err)
		require.NoError(t, tr.ConfirmDelete(ctx, target, tok))
		for r := range versions {
			if r.Type == target.Type && (target.AllOfType || r.ID == target.ID) {
				for _, i := range entriesOf[r] {
					model[i].live = false
				}
				delete(entriesOf, r)
				delete(versions, r)
			}
		}
	}
	check := func(round int) {
		for _, feed := range append([]string{transport.AllTypes}, types...) {
			var want []int64
			for _, e := range model {
				if e.live && (feed == transport.AllTypes || e.typ == feed) {
					want = append(want, e.seq)
				}
			}
			since := int64(0)
			if len(model) > 0 && rng.IntN(2) == 0 {
				since = int64(rng.IntN(len(model)))
				var rest []int64
				for _, s := range want {
					if s > since {
						rest = append(rest, s)
					}
				}
				want = rest
			}
			limit := 1 + rng.IntN(transport.MaxLimit)
			var got []int64
			for {
				p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: feed}, Since: since, Limit: limit})
				require.NoError(t, err)
				for _, e := range p.Entries {
					m := model[e.Sequence-1]
					require.Equal(t, m.typ, e.AggregateType)
					require.Equal(t, m.id, e.AggregateID)
					require.Equal(t, m.version, e.Version)
					require.Equal(t, fmt.Sprintf(`{"s":%d}`, e.Sequence), string(e.Events[0].Data))
					got = append(got, e.Sequence)
					since = e.Sequence
				}
				if !p.HasMore {
					break
				}
				require.NotEmpty(t, p.Entries)
			}
			require.Equal(t, want, got, "round %d, feed %q", round, feed)
			head, err := tr.FeedHead(ctx, transport.Scope{Type: feed})
			require.NoError(t, err)
			if feed == transport.AllTypes {
				require.Equal(t, int64(len(model)), head)
			}
		}
	}
	for round := range 12 {
		n := 1000 + rng.IntN(4000)
		for range n {
			var ref transport.Ref
			if len(refs) > 0 && rng.IntN(3) > 0 {
				ref = refs[rng.IntN(len(refs))]
			} else {
				ref = transport.Ref{Type: types[rng.IntN(len(types))], ID: uuid.NewString()}
				refs = append(refs, ref)
			}
			v := versions[ref]
			seq := int64(len(model) + 1)
			require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "Noted", Data: []byte(fmt.Sprintf(`{"s":%d}`, seq))}}, transport.Exactly(v)))
			versions[ref] = v + 1
			entriesOf[ref] = append(entriesOf[ref], len(model))
			model = append(model, modelEntry{seq: seq, typ: ref.Type, id: ref.ID, version: v + 1, live: true})
		}
		switch round % 4 {
		case 1: // delete every aggregate but the newest few: whole blocks empty
			keep := map[transport.Ref]bool{}
			for _, r := range refs[max(0, len(refs)-5):] {
				keep[r] = true
			}
			for r := range versions {
				if !keep[r] {
					del(transport.DeleteAggregate(r))
				}
			}
		case 2:
			del(transport.DeleteTarget{Type: types[rng.IntN(len(types))], AllOfType: true})
		case 3:
			for range 50 {
				r := refs[rng.IntN(len(refs))]
				if _, ok := versions[r]; ok {
					del(transport.DeleteAggregate(r))
				}
			}
		}
		check(round)
	}
}
