package transporttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// RunFeed runs the feed checks alone against a transport that implements
// transport.Feeder. Run calls it for every such transport.
func RunFeed(t *testing.T, newTransport func(t *testing.T) transport.Transport, opts ...Option) {
	c := &config{writers: 16}
	for _, o := range opts {
		o(c)
	}
	s := &suite{cfg: c, newT: newTransport}
	s.feed(t)
}

func (s *suite) feed(t *testing.T) {
	t.Run("Order", s.feedOrder)
	t.Run("Paging", s.feedPaging)
	t.Run("TypeFeeds", s.feedTypes)
	t.Run("Partitions", s.feedPartitions)
	t.Run("Filter", s.feedFilter)
	t.Run("HeadAndOverview", s.feedHeadOverview)
	t.Run("Bulk", s.feedBulk)
	t.Run("Delete", s.feedDelete)
	t.Run("Tenants", s.feedTenants)
	t.Run("InvalidInput", s.feedInvalid)
	t.Run("Wait", s.feedWait)
	t.Run("ConcurrentTail", s.feedConcurrentTail)
	t.Run("Contract", s.feedContract)
}

// newFeeder returns a fresh transport and its Feeder.
func (s *suite) newFeeder(t *testing.T) (transport.Transport, transport.Feeder) {
	t.Helper()
	tr := s.newT(t)
	f, ok := tr.(transport.Feeder)
	require.True(t, ok, "the transport under test does not implement transport.Feeder")
	return tr, f
}

// readFeed pages through a whole feed query with the given page size and
// checks each page's shape on the way.
func readFeed(t *testing.T, f transport.Feeder, q transport.FeedQuery) []transport.FeedEntry {
	t.Helper()
	var all []transport.FeedEntry
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100_000, "the feed never ends")
		p, err := f.ReadFeed(context.Background(), q)
		require.NoError(t, err)
		if q.Limit > 0 {
			require.LessOrEqual(t, len(p.Entries), q.Limit, "a page holds at most limit entries")
		}
		for _, e := range p.Entries {
			require.Greater(t, e.Sequence, q.Since, "since is exclusive and entries ascend")
			q.Since = e.Sequence
			require.LessOrEqual(t, e.Sequence, p.Head, "no entry beyond the head it reports")
		}
		all = append(all, p.Entries...)
		if !p.HasMore {
			return all
		}
		require.NotEmpty(t, p.Entries, "a page that says hasMore must hold entries")
	}
}

type batchKey struct {
	id      string
	version int64
}

func (s *suite) feedOrder(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	empty, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	assert.Empty(t, empty.Entries)
	assert.False(t, empty.HasMore)
	assert.Zero(t, empty.Head)

	a, b := newRef("order"), newRef("order")
	var want []transport.FeedEntry
	put := func(ref transport.Ref, version int64, events ...transport.Event) {
		store(t, tr, ref, transport.Exactly(version-1), events...)
		want = append(want, transport.FeedEntry{AggregateType: ref.Type, AggregateID: ref.ID, Version: version, Events: events})
	}
	put(a, 1, ev("OrderPlaced", `{"n":1}`), ev("OrderNoted", `{"note":"åäö \"q\""}`))
	put(b, 1, ev("OrderPlaced", `{"n":2}`))
	put(a, 2, ev("OrderPaid", `{"amount":12}`))
	put(b, 2, ev("OrderPaid", `{}`), ev("OrderShipped", `null`), ev("OrderNoted", `[1,2]`))

	got := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, got, len(want), "every batch once")
	for i, e := range got {
		w := want[i]
		assert.Equal(t, w.AggregateType, e.AggregateType, "entry %d", i)
		assert.Equal(t, w.AggregateID, e.AggregateID, "entry %d: feed order is commit order", i)
		if e.Version != 0 {
			assert.Equal(t, w.Version, e.Version, "entry %d", i)
		}
		assert.False(t, e.Stored.IsZero(), "entry %d has its store time", i)
		require.Len(t, e.Events, len(w.Events), "entry %d is whole", i)
		for j := range e.Events {
			assert.Equal(t, w.Events[j].EventType, e.Events[j].EventType)
			assert.JSONEq(t, string(w.Events[j].Data), string(e.Events[j].Data))
			assert.NotEmpty(t, e.Events[j].EventID)
		}
		if i > 0 {
			assert.Greater(t, e.Sequence, got[i-1].Sequence)
		}
	}
	assert.Positive(t, got[0].Sequence)

	// The feed holds the same events Load returns.
	events, _ := loadAll(t, tr, a, 0)
	assert.Equal(t, events[0].EventID, got[0].Events[0].EventID)
	assert.Equal(t, events[2].EventID, got[2].Events[0].EventID)

	// since is exclusive.
	p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: got[1].Sequence})
	require.NoError(t, err)
	require.Len(t, p.Entries, 2)
	assert.Equal(t, got[2].Sequence, p.Entries[0].Sequence)
	p, err = f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: got[3].Sequence})
	require.NoError(t, err)
	assert.Empty(t, p.Entries)
	assert.False(t, p.HasMore)
	assert.Equal(t, got[3].Sequence, p.Head)
	p, err = f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: got[3].Sequence + 1000})
	require.NoError(t, err)
	assert.Empty(t, p.Entries, "a since beyond the head reads nothing")
}

func (s *suite) feedPaging(t *testing.T) {
	tr, f := s.newFeeder(t)
	n := 23
	if !s.cfg.skipBig {
		n = 1203 // more than one default page
	}
	refs := []transport.Ref{newRef("order"), newRef("order"), newRef("payment")}
	versions := map[string]int64{}
	for i := range n {
		ref := refs[i%len(refs)]
		store(t, tr, ref, transport.Exactly(versions[ref.ID]), ev("Happened", fmt.Sprintf(`{"i":%d}`, i)))
		versions[ref.ID]++
	}
	full := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, full, n)
	for _, limit := range []int{1, 7, 1000} {
		if s.cfg.skipBig && limit == 1 {
			continue
		}
		got := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Limit: limit})
		require.Len(t, got, n, "limit %d", limit)
		for i := range got {
			require.Equal(t, full[i].Sequence, got[i].Sequence, "limit %d entry %d", limit, i)
			var v struct{ I int }
			require.NoError(t, json.Unmarshal(got[i].Events[0].Data, &v))
			require.Equal(t, i, v.I, "limit %d: entry %d in commit order", limit, i)
		}
	}
	p, err := f.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.NoError(t, err)
	assert.Len(t, p.Entries, min(n, transport.DefaultLimit), "limit 0 means the default")
	assert.Equal(t, n > transport.DefaultLimit, p.HasMore)
}

func (s *suite) feedTypes(t *testing.T) {
	tr, f := s.newFeeder(t)
	o1, p1, o2 := newRef("order"), newRef("payment"), newRef("order")
	store(t, tr, o1, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, p1, transport.Any, ev("PaymentProcessed", `{}`))
	store(t, tr, o2, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, p1, transport.Any, ev("PaymentRefunded", `{}`))

	all := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	orders := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	payments := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "payment"}})
	none := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "invoice"}})
	require.Len(t, all, 4)
	require.Len(t, orders, 2)
	require.Len(t, payments, 2)
	assert.Empty(t, none, "an unknown type's feed is empty, not an error")
	assert.Equal(t, []string{o1.ID, o2.ID}, ids(orders))
	assert.Equal(t, []string{p1.ID, p1.ID}, ids(payments))
	for _, e := range orders {
		assert.Equal(t, "order", e.AggregateType)
	}
	assert.Equal(t, "PaymentRefunded", payments[1].Events[0].EventType)
	// A type feed's entries keep their order from the whole feed.
	var fromAll []string
	for _, e := range all {
		if e.AggregateType == "order" {
			fromAll = append(fromAll, e.AggregateID)
		}
	}
	assert.Equal(t, fromAll, ids(orders))
}

func ids(entries []transport.FeedEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.AggregateID
	}
	return out
}

func (s *suite) feedPartitions(t *testing.T) {
	tr, f := s.newFeeder(t)
	refs := make([]transport.Ref, 12)
	for i := range refs {
		refs[i] = newRef("order")
	}
	for round := range 3 {
		for _, ref := range refs {
			store(t, tr, ref, transport.Exactly(int64(round)), ev("Step", fmt.Sprintf(`{"round":%d}`, round)))
		}
	}
	full := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.Len(t, full, 36)
	for count := 2; count <= 4; count++ {
		seen := map[int64]int{}
		for n := range count {
			part := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Partition: transport.Partition{Count: count, Number: n}, Limit: 5})
			last := map[string]int{}
			for _, e := range part {
				seen[e.Sequence]++
				assert.Equal(t, n, transport.PartitionOf(e.AggregateID, count), "entry in its partition")
				var v struct{ Round int }
				require.NoError(t, json.Unmarshal(e.Events[0].Data, &v))
				if r, ok := last[e.AggregateID]; ok {
					assert.Equal(t, r+1, v.Round, "an aggregate's batches keep their order in its partition")
				}
				last[e.AggregateID] = v.Round
			}
		}
		require.Len(t, seen, len(full), "partitions of %d are complete", count)
		for seq, times := range seen {
			assert.Equal(t, 1, times, "partitions of %d are disjoint: sequence %d", count, seq)
		}
	}
	one := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Partition: transport.Partition{Count: 1}})
	assert.Len(t, one, len(full), "one partition is the whole feed")
}

func (s *suite) feedFilter(t *testing.T) {
	tr, f := s.newFeeder(t)
	a, b := newRef("order"), newRef("order")
	store(t, tr, a, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, b, transport.Any, ev("OrderPlaced", `{}`), ev("OrderPaid", `{"amount":3}`))
	store(t, tr, a, transport.Any, ev("OrderShipped", `{}`))
	store(t, tr, a, transport.Any, ev("OrderPaid", `{"amount":5}`))
	for range 5 {
		store(t, tr, b, transport.Any, ev("OrderNoted", `{}`))
	}

	paid := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, EventTypes: []string{"OrderPaid"}, Limit: 1})
	require.Len(t, paid, 2)
	assert.Equal(t, b.ID, paid[0].AggregateID)
	require.Len(t, paid[0].Events, 2, "a kept entry is whole")
	assert.Equal(t, "OrderPlaced", paid[0].Events[0].EventType)
	assert.Equal(t, a.ID, paid[1].AggregateID)

	either := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, EventTypes: []string{"OrderShipped", "OrderPaid"}})
	assert.Len(t, either, 3)
	nothing := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, EventTypes: []string{"OrderLost"}})
	assert.Empty(t, nothing)
}

func (s *suite) feedHeadOverview(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	head := func(feed string) int64 {
		t.Helper()
		h, err := f.FeedHead(ctx, transport.Scope{Type: feed})
		require.NoError(t, err)
		return h
	}
	assert.Zero(t, head(transport.AllTypes))
	assert.Zero(t, head("order"))
	infos, err := f.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, infos)

	o1, o2, p1 := newRef("order"), newRef("order"), newRef("payment")
	store(t, tr, o1, transport.Any, ev("Added1", `{}`), ev("Added2", `{}`))
	store(t, tr, o2, transport.Any, ev("Added1", `{}`))
	store(t, tr, o1, transport.Any, ev("Added3", `{}`))
	store(t, tr, p1, transport.Any, ev("Paid1", `{}`))
	all := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, all, 4)
	assert.Equal(t, all[3].Sequence, head(transport.AllTypes))
	assert.Equal(t, all[2].Sequence, head("order"))
	assert.Equal(t, all[3].Sequence, head("payment"))
	assert.Zero(t, head("invoice"))

	infos, err = f.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []transport.FeedInfo{
		{AggregateType: "order", Aggregates: 2, Batches: 3, Events: 4},
		{AggregateType: "payment", Aggregates: 1, Batches: 1, Events: 1},
	}, infos)

	p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	assert.Equal(t, head("order"), p.Head, "a page reports its feed's head")
}

func (s *suite) feedBulk(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	a, b := uuid.NewString(), uuid.NewString()
	require.NoError(t, tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: a, Events: []transport.Event{ev("OrderPlaced", `{"n":1}`)}, Expected: transport.MustNotExist},
		{AggregateID: b, Events: []transport.Event{ev("OrderPlaced", `{"n":2}`), ev("OrderPaid", `{}`)}, Expected: transport.MustNotExist},
	}))
	// A failed bulk store leaves no entry.
	err := tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: uuid.NewString(), Events: []transport.Event{ev("OrderPlaced", `{}`)}},
		{AggregateID: a, Events: []transport.Event{ev("OrderPaid", `{}`)}, Expected: transport.MustNotExist},
	})
	require.ErrorIs(t, err, transport.ErrConflict)
	got := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, got, 2)
	assert.ElementsMatch(t, []string{a, b}, ids(got))
	for _, e := range got {
		if e.AggregateID == b {
			assert.Len(t, e.Events, 2)
		}
	}
}

func (s *suite) feedDelete(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	gone, kept := newRef("order"), newRef("order")
	store(t, tr, gone, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, kept, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, gone, transport.Any, ev("OrderPaid", `{}`))
	before := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, before, 3)

	target := transport.DeleteAggregate(gone)
	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	after := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, after, 1, "a deleted aggregate's entries leave the feed")
	assert.Equal(t, kept.ID, after[0].AggregateID)
	assert.Equal(t, before[1].Sequence, after[0].Sequence, "the others keep their numbers")

	// Numbers are never given out again, not even after a delete.
	store(t, tr, gone, transport.MustNotExist, ev("OrderPlaced", `{}`))
	again := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: before[2].Sequence})
	require.Len(t, again, 1)
	assert.Greater(t, again[0].Sequence, before[2].Sequence)

	typeTarget := transport.DeleteAllOfType(transport.Scope{Type: "order"})
	token, err = tr.RequestDelete(ctx, typeTarget)
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, typeTarget, token))
	assert.Empty(t, readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}}))
	infos, err := f.FeedOverview(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, infos)
}

func (s *suite) feedTenants(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	t1, t2 := uuid.NewString(), uuid.NewString()
	r1 := transport.Ref{Tenant: t1, Type: "order", ID: uuid.NewString()}
	r2 := transport.Ref{Tenant: t2, Type: "order", ID: uuid.NewString()}
	r0 := newRef("order")
	store(t, tr, r1, transport.Any, ev("OrderPlaced", `{"t":1}`))
	store(t, tr, r2, transport.Any, ev("OrderPlaced", `{"t":2}`))
	store(t, tr, r2, transport.Any, ev("OrderPaid", `{"t":2}`))
	store(t, tr, r0, transport.Any, ev("OrderPlaced", `{"t":0}`))

	for _, c := range []struct {
		tenant string
		want   []string
	}{{t1, []string{r1.ID}}, {t2, []string{r2.ID, r2.ID}}, {"", []string{r0.ID}}, {uuid.NewString(), nil}} {
		for _, feed := range []string{transport.AllTypes, "order"} {
			got := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Tenant: c.tenant, Type: feed}})
			assert.Equal(t, c.want, nilIfEmpty(ids(got)), "tenant %q feed %s", c.tenant, feed)
			h, err := f.FeedHead(ctx, transport.Scope{Tenant: c.tenant, Type: feed})
			require.NoError(t, err)
			if len(got) == 0 {
				assert.Zero(t, h)
			} else {
				assert.Equal(t, got[len(got)-1].Sequence, h)
			}
		}
		infos, err := f.FeedOverview(ctx, c.tenant)
		require.NoError(t, err)
		if c.want == nil {
			assert.Empty(t, infos)
		} else {
			require.Len(t, infos, 1)
			assert.Equal(t, int64(len(c.want)), infos[0].Batches)
		}
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func (s *suite) feedInvalid(t *testing.T) {
	_, f := s.newFeeder(t)
	ctx := context.Background()
	all := transport.Scope{Type: transport.AllTypes}
	for name, q := range map[string]transport.FeedQuery{
		"bad feed name":         {Feed: transport.Scope{Type: "Order!"}},
		"empty feed name":       {Feed: transport.Scope{}},
		"bad tenant":            {Feed: transport.Scope{Tenant: "acme", Type: transport.AllTypes}},
		"negative since":        {Feed: all, Since: -1},
		"negative limit":        {Feed: all, Limit: -1},
		"limit over 1000":       {Feed: all, Limit: transport.MaxLimit + 1},
		"partition >= count":    {Feed: all, Partition: transport.Partition{Count: 2, Number: 2}},
		"negative partition":    {Feed: all, Partition: transport.Partition{Count: 2, Number: -1}},
		"negative count":        {Feed: all, Partition: transport.Partition{Count: -3}},
		"number without count":  {Feed: all, Partition: transport.Partition{Number: 1}},
		"bad event type filter": {Feed: all, EventTypes: []string{"no spaces allowed"}},
		"wait over 60s":         {Feed: all, Wait: transport.MaxFeedWait + time.Millisecond},
		"negative wait":         {Feed: all, Wait: -time.Second},
	} {
		start := time.Now()
		_, err := f.ReadFeed(ctx, q)
		assert.ErrorIs(t, err, transport.ErrInvalid, name)
		assert.Less(t, time.Since(start), 5*time.Second, "%s: refused without waiting", name)
	}
	_, err := f.FeedHead(ctx, transport.Scope{Type: "Bad Type"})
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = f.FeedHead(ctx, transport.Scope{Tenant: "x", Type: "order"})
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, err = f.FeedOverview(ctx, "not-a-uuid")
	assert.ErrorIs(t, err, transport.ErrInvalid)
}

func (s *suite) feedWait(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	ref := newRef("order")
	store(t, tr, ref, transport.Any, ev("OrderPlaced", `{}`))
	head, err := f.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)

	// Nothing new: the read waits out its bound and answers empty.
	p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: head, Wait: 50 * time.Millisecond})
	require.NoError(t, err)
	assert.Empty(t, p.Entries)

	// A batch committed while a read waits ends the wait with that batch.
	type answer struct {
		p   transport.FeedPage
		err error
	}
	got := make(chan answer, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: head, Wait: 30 * time.Second})
		got <- answer{p, err}
	}()
	<-started
	// Other types' batches and filtered-out ones do not end an order read.
	store(t, tr, ref, transport.Any, ev("OrderPaid", `{}`))
	select {
	case a := <-got:
		require.NoError(t, a.err)
		require.Len(t, a.p.Entries, 1)
		assert.Equal(t, "OrderPaid", a.p.Entries[0].Events[0].EventType)
	case <-time.After(20 * time.Second):
		t.Fatal("a waiting read did not wake when a batch committed")
	}

	// Ending ctx ends a wait.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadFeed(cctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: head + 1, Wait: 30 * time.Second})
		done <- err
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("canceling ctx did not end a waiting read")
	}
}

func (s *suite) feedConcurrentTail(t *testing.T) {
	tr, f := s.newFeeder(t)
	writers, perWriter, readers := 32, 12, 4
	if s.cfg.skipBig {
		perWriter = 4
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shared := newRef("counter") // contended: writers race with Exactly versions
	var (
		wg      sync.WaitGroup
		stored  sync.WaitGroup
		mu      sync.Mutex
		commits int
	)
	tails := make([][]batchKey, readers)
	errs := make(chan error, writers+readers)
	writersDone := make(chan struct{})
	for r := range readers {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			since := int64(0)
			for {
				p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since, Limit: 7, Wait: 200 * time.Millisecond})
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("reader %d: %w", r, err)
					}
					return
				}
				for _, e := range p.Entries {
					if e.Sequence <= since {
						errs <- fmt.Errorf("reader %d: sequence %d after %d", r, e.Sequence, since)
						return
					}
					since = e.Sequence
					tails[r] = append(tails[r], batchKey{e.AggregateID, e.Sequence})
				}
				if len(p.Entries) == 0 {
					select {
					case <-writersDone:
						return
					default:
					}
				}
			}
		}(r)
	}
	for w := range writers {
		stored.Add(1)
		go func(w int) {
			defer stored.Done()
			own := newRef("order")
			for i := range perWriter {
				var err error
				if i%3 == 2 {
					_, v := currentVersion(ctx, tr, shared)
					err = tr.Store(ctx, shared, []transport.Event{ev("Incremented", fmt.Sprintf(`{"w":%d}`, w))}, transport.Exactly(v))
				} else {
					err = tr.Store(ctx, own, []transport.Event{ev("Happened", fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))}, transport.Exactly(int64(i-i/3)))
				}
				switch {
				case err == nil:
					mu.Lock()
					commits++
					mu.Unlock()
				case errors.Is(err, transport.ErrConflict) && i%3 == 2:
				default:
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
		}(w)
	}
	stored.Wait()
	close(writersDone)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	full := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.Len(t, full, commits, "every committed batch is in the feed once")
	want := make([]batchKey, len(full))
	for i, e := range full {
		want[i] = batchKey{e.AggregateID, e.Sequence}
	}
	for r, got := range tails {
		require.Equal(t, want, got, "reader %d saw exactly the final feed: nothing skipped, nothing out of order", r)
	}
}

// CountFeed pages through a whole feed query, from q.Since on, and returns
// how many entries it holds: what a benchmark of a catch-up reads.
func CountFeed(ctx context.Context, f transport.Feeder, q transport.FeedQuery) (int, error) {
	n := 0
	for {
		p, err := f.ReadFeed(ctx, q)
		if err != nil {
			return n, err
		}
		n += len(p.Entries)
		if !p.HasMore || len(p.Entries) == 0 {
			return n, nil
		}
		q.Since = p.Entries[len(p.Entries)-1].Sequence
	}
}
