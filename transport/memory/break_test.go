package memory_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// mixCase returns id with its letters in upper case where mask says so.
func mixCase(id string, mask uint64) string {
	b := []byte(id)
	for i, c := range b {
		if c >= 'a' && c <= 'f' && mask&(1<<(i%64)) != 0 {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// deepCopyEvents copies events with their Data, keeping nil apart from empty.
func deepCopyEvents(es []transport.Event) []transport.Event {
	out := make([]transport.Event, len(es))
	for i, e := range es {
		out[i] = e
		if e.Data != nil {
			out[i].Data = append([]byte{}, e.Data...)
		}
	}
	return out
}

func requireSameEvents(t *testing.T, want, got []transport.Event, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		require.Equal(t, want[i].EventID, got[i].EventID, msg)
		require.Equal(t, want[i].EventType, got[i].EventType, msg)
		require.Equal(t, want[i].EncryptedData, got[i].EncryptedData, msg)
		require.Equal(t, want[i].Data == nil, got[i].Data == nil, "%s: event %d nil Data", msg, i)
		require.True(t, bytes.Equal(want[i].Data, got[i].Data), "%s: event %d data", msg, i)
	}
}

// randomEvents makes a batch whose size falls on either side of the arena's
// 512-byte limit and of its 8 KB blocks, with nil, empty and non-empty Data
// and EncryptedData.
func randomEvents(rng *rand.Rand) []transport.Event {
	n := 1 + rng.IntN(3)
	es := make([]transport.Event, n)
	for i := range es {
		e := &es[i]
		e.EventID = uuid.NewString()
		e.EventType = []string{"abc", "OrderPlaced", "X-y_z"}[rng.IntN(3)]
		switch rng.IntN(5) {
		case 0:
			e.Data = nil
		case 1:
			e.Data = []byte{}
		case 2:
			e.Data = []byte(`{"n":1}`)
		case 3:
			e.Data = []byte(fmt.Sprintf(`"%s"`, strings.Repeat("a", 400+rng.IntN(200))))
		default:
			e.Data = []byte(fmt.Sprintf(`"%s"`, strings.Repeat("b", 8000+rng.IntN(500))))
		}
		if rng.IntN(2) == 0 {
			e.EncryptedData = strings.Repeat("z", rng.IntN(600))
		}
	}
	return es
}

// heldPage is a page read earlier with a deep copy taken then: whatever the
// store does afterwards (deletes, positions reused, re-creates), the page
// must still read the same.
type heldPage struct {
	page []transport.Event
	copy []transport.Event
	what string
}

// TestAgainstAModel stores, appends, bulk-stores, deletes single aggregates
// and whole types, and re-creates the same ids, over two tenants, two types
// and ids differing only in case; after every round every aggregate's
// history, List and every feed are exactly the model's, and every page read
// earlier still reads as it did.
func TestAgainstAModel(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	rng := rand.New(rand.NewPCG(20, 26))
	tenants := []string{"", uuid.NewString()}
	types := []string{"order", "item"}
	var ids []string
	for range 12 {
		base := uuid.NewString()
		for _, id := range []string{base, strings.ToUpper(base), mixCase(base, rng.Uint64())} {
			// mixCase changes no letter (or all) when its mask misses the
			// id's letters (or covers them): the model would list it twice.
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	type feedEntry struct {
		seq     int64
		ref     transport.Ref
		version int64
		events  []transport.Event
	}
	model := map[transport.Ref][][]transport.Event{}
	feeds := map[string][]feedEntry{} // per tenant, live entries
	heads := map[string]int64{}       // per tenant
	var held []heldPage

	randomRef := func() transport.Ref {
		return transport.Ref{Tenant: tenants[rng.IntN(2)], Type: types[rng.IntN(2)], ID: ids[rng.IntN(len(ids))]}
	}
	record := func(ref transport.Ref, es []transport.Event) {
		model[ref] = append(model[ref], deepCopyEvents(es))
		heads[ref.Tenant]++
		feeds[ref.Tenant] = append(feeds[ref.Tenant], feedEntry{seq: heads[ref.Tenant], ref: ref, version: int64(len(model[ref])), events: deepCopyEvents(es)})
	}
	forget := func(match func(transport.Ref) bool) {
		for ref := range model {
			if match(ref) {
				delete(model, ref)
			}
		}
		for tn, es := range feeds {
			feeds[tn] = slices.DeleteFunc(es, func(e feedEntry) bool { return match(e.ref) })
		}
	}
	del := func(target transport.DeleteTarget) {
		tok, err := tr.RequestDelete(ctx, target)
		require.NoError(t, err)
		require.NoError(t, tr.ConfirmDelete(ctx, target, tok))
	}

	check := func(round int) {
		for _, h := range held {
			requireSameEvents(t, h.copy, h.page, fmt.Sprintf("round %d: a page held since %s", round, h.what))
		}
		for _, tn := range tenants {
			for _, typ := range types {
				var want []string
				for _, id := range ids {
					ref := transport.Ref{Tenant: tn, Type: typ, ID: id}
					hist, live := model[ref]
					ok, err := tr.Exists(ctx, ref)
					require.NoError(t, err)
					require.Equal(t, live, ok, "round %d: exists %v", round, ref)
					page, err := tr.Load(ctx, ref, 0, 0)
					if !live {
						require.ErrorIs(t, err, transport.ErrNotFound, "round %d: %v", round, ref)
						continue
					}
					require.NoError(t, err)
					want = append(want, id)
					var all []transport.Event
					for _, b := range hist {
						all = append(all, b...)
					}
					require.Equal(t, int64(len(hist)), page.Version)
					requireSameEvents(t, all, page.Events, fmt.Sprintf("round %d: load %v", round, ref))
					if rng.IntN(4) == 0 {
						held = append(held, heldPage{page: page.Events, copy: deepCopyEvents(page.Events), what: fmt.Sprintf("round %d load %v", round, ref)})
					}
				}
				slices.Sort(want)
				var got []string
				for skip := 0; ; {
					lp, err := tr.List(ctx, transport.Scope{Tenant: tn, Type: typ}, skip, 5)
					require.NoError(t, err)
					for _, a := range lp.Aggregates {
						got = append(got, a.AggregateID)
						require.Equal(t, int64(len(model[transport.Ref{Tenant: tn, Type: typ, ID: a.AggregateID}])), a.AggregateVersion)
					}
					skip += len(lp.Aggregates)
					if !lp.HasMore {
						break
					}
				}
				require.Equal(t, want, got, "round %d: list %s/%s", round, tn, typ)
			}
			for _, feed := range append([]string{transport.AllTypes}, types...) {
				var want []feedEntry
				for _, e := range feeds[tn] {
					if feed == transport.AllTypes || e.ref.Type == feed {
						want = append(want, e)
					}
				}
				var got []transport.FeedEntry
				for since := int64(0); ; {
					fp, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Tenant: tn, Type: feed}, Since: since, Limit: 7})
					require.NoError(t, err)
					got = append(got, fp.Entries...)
					if len(fp.Entries) > 0 {
						since = fp.Entries[len(fp.Entries)-1].Sequence
					}
					if !fp.HasMore {
						break
					}
				}
				require.Equal(t, len(want), len(got), "round %d: feed %s/%s", round, tn, feed)
				for i := range want {
					require.Equal(t, want[i].seq, got[i].Sequence)
					require.Equal(t, want[i].ref.ID, got[i].AggregateID)
					require.Equal(t, want[i].ref.Type, got[i].AggregateType)
					require.Equal(t, want[i].version, got[i].Version)
					requireSameEvents(t, want[i].events, got[i].Events, fmt.Sprintf("round %d: feed entry %d", round, want[i].seq))
					if rng.IntN(8) == 0 {
						held = append(held, heldPage{page: got[i].Events, copy: deepCopyEvents(got[i].Events), what: fmt.Sprintf("round %d feed %d", round, want[i].seq)})
					}
				}
			}
		}
	}

	for round := range 40 {
		for range 30 {
			switch op := rng.IntN(20); {
			case op < 10:
				ref := randomRef()
				es := randomEvents(rng)
				v := int64(len(model[ref]))
				require.NoError(t, tr.Store(ctx, ref, es, transport.Exactly(v)), "store %v", ref)
				record(ref, es)
			case op < 13:
				tn, typ := tenants[rng.IntN(2)], types[rng.IntN(2)]
				var batches []transport.Batch
				for _, i := range rng.Perm(len(ids))[:1+rng.IntN(4)] {
					ref := transport.Ref{Tenant: tn, Type: typ, ID: ids[i]}
					batches = append(batches, transport.Batch{AggregateID: ids[i], Events: randomEvents(rng), Expected: transport.Exactly(int64(len(model[ref])))})
				}
				require.NoError(t, tr.StoreBulk(ctx, transport.Scope{Tenant: tn, Type: typ}, batches))
				for _, b := range batches {
					record(transport.Ref{Tenant: tn, Type: typ, ID: b.AggregateID}, b.Events)
				}
			case op < 19:
				ref := randomRef()
				del(transport.DeleteAggregate(ref))
				forget(func(r transport.Ref) bool { return r == ref })
			default:
				tn, typ := tenants[rng.IntN(2)], types[rng.IntN(2)]
				del(transport.DeleteTarget{Tenant: tn, Type: typ, AllOfType: true})
				forget(func(r transport.Ref) bool { return r.Tenant == tn && r.Type == typ })
			}
		}
		check(round)
	}
}

// TestAppendingToReturnedDataLeavesTheStoreAlone appends to and rewrites
// the caller's own slices: the Data of a returned event has no room past
// its end (an append copies, so neither the next event nor a neighbouring
// batch in the same arena block changes), and what Store was given is
// copied.
func TestAppendingToReturnedDataLeavesTheStoreAlone(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	other := transport.Ref{Type: "order", ID: uuid.NewString()}
	in := []transport.Event{{EventType: "abc", Data: []byte(`{"a":1}`)}, {EventType: "abc", Data: []byte{}}}
	require.NoError(t, tr.Store(ctx, ref, in, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, other, []transport.Event{{EventType: "abc", Data: []byte(`2`)}}, transport.MustNotExist))
	in[0].Data[1] = 'X' // the caller's own bytes
	page, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	var grown [][]byte
	for i := range page.Events {
		grown = append(grown, append(page.Events[i].Data, `xxxx`...))
	}
	require.Len(t, grown, 2)
	page.Events[0].EventType = "changed"
	again, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(again.Events[0].Data))
	require.Equal(t, "abc", again.Events[0].EventType)
	require.NotNil(t, again.Events[1].Data)
	require.Empty(t, again.Events[1].Data)
	require.Len(t, again.Events[0].EventID, 36)
	o, err := tr.Load(ctx, other, 0, 0)
	require.NoError(t, err)
	require.Equal(t, `2`, string(o.Events[0].Data))
}

// TestListAgainstAModelAcrossChunks lists a scope of a few thousand ids
// (several of List's 512-id chunks, splits and rebuilds) while ids are
// created, deleted and re-created between Lists: every page is the
// model's slice of the sorted live ids.
func TestListAgainstAModelAcrossChunks(t *testing.T) {
	ctx := context.Background()
	tr := memory.New()
	rng := rand.New(rand.NewPCG(5, 12))
	scope := transport.Scope{Type: "order"}
	var pool []string
	for range 3000 {
		id := uuid.NewString()
		if rng.IntN(4) == 0 {
			id = mixCase(id, rng.Uint64())
		}
		pool = append(pool, id)
	}
	live := map[string]bool{}
	ev := []transport.Event{{EventType: "abc"}}
	for round := range 30 {
		for range 50 + rng.IntN(400) {
			id := pool[rng.IntN(len(pool))]
			ref := transport.Ref{Type: "order", ID: id}
			if live[id] && rng.IntN(2) == 0 {
				tok, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
				require.NoError(t, err)
				require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), tok))
				delete(live, id)
				continue
			}
			require.NoError(t, tr.Store(ctx, ref, ev, transport.Any))
			live[id] = true
		}
		var want []string
		for id := range live {
			want = append(want, id)
		}
		slices.Sort(want)
		for range 5 {
			skip, limit := rng.IntN(len(want)+2), 1+rng.IntN(700)
			lp, err := tr.List(ctx, scope, skip, limit)
			require.NoError(t, err)
			var got []string
			for _, a := range lp.Aggregates {
				got = append(got, a.AggregateID)
			}
			end := min(len(want), skip+limit)
			var exp []string
			if skip < len(want) {
				exp = want[skip:end]
			}
			require.Equal(t, exp, got, "round %d: skip %d limit %d", round, skip, limit)
			require.Equal(t, end < len(want), lp.HasMore, "round %d", round)
		}
	}
}
