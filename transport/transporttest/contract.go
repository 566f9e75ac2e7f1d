package transporttest

// Checks added after the adversarial reviews of the transports: each one
// caught a defect in at least one transport, and any transport could repeat
// it.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

func (s *suite) contract(t *testing.T) {
	t.Run("ExactBytes", s.exactBytes)
	t.Run("InvalidPayloads", s.invalidPayloads)
	t.Run("PagesAreCopies", s.pagesAreCopies)
	t.Run("DeleteRacingStores", s.deleteRacingStores)
	t.Run("AnyUnderContention", s.anyUnderContention)
	t.Run("IndependentAnswers", s.independentAnswers)
	t.Run("BulkInOppositeOrders", s.bulkOppositeOrders)
	t.Run("BulkCap", s.bulkCap)
	t.Run("PageBytes", s.pageBytes)
	t.Run("FailedConfirmKeepsToken", s.failedConfirmKeepsToken)
}

// Payloads that a transport which re-encodes JSON would change.
var exactPayloads = []string{
	`{"a": 1}`,
	`{"html":"<b>&amp;</b>","amp":"a&b"}`,
	"{\"ls\":\"line\u2028separator\u2029paragraph\"}",
	`[1, 2 ,3 ]`,
	`{"big":123456789012345678901234567890,"f":1.50,"e":1E+2}`,
	`{"dup":1,"dup":2}`,
	`{"esc":"\u00e9\ud83d\ude00\"\\\/"}`,
	`{"nul":"\u0000"}`,
	"  {\"padded\":true}\n",
	`"just a string"`,
	`null`,
	`{"nested":{"deep":[{"x":[]}]},"empty":{}}`,
}

// exactBytes: Data and EncryptedData come back byte for byte, from Load and
// from the feed.
func (s *suite) exactBytes(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("payload")
	var in []transport.Event
	for i, d := range exactPayloads {
		e := ev("Payload", d)
		if i%2 == 0 {
			e.EncryptedData = []string{"<b>&amp;</b>", "a\u2028b", "ünïcödé+/=", "\t\r\n\"\\", "\u00e9\U0001F600"}[i/2%5]
		}
		in = append(in, e)
	}
	store(t, tr, ref, transport.MustNotExist, in...)
	got, _ := loadAll(t, tr, ref, 0)
	require.Len(t, got, len(in))
	for i := range in {
		assert.Equal(t, string(in[i].Data), string(got[i].Data), "Load: data of event %d comes back byte for byte", i)
		assert.Equal(t, in[i].EncryptedData, got[i].EncryptedData, "Load: encryptedData of event %d comes back byte for byte", i)
	}
	f, ok := tr.(transport.Feeder)
	if !ok {
		return
	}
	entries := readFeed(t, f, transport.FeedQuery{Feed: transport.Scope{Type: ref.Type}})
	require.Len(t, entries, 1)
	require.Len(t, entries[0].Events, len(in))
	for i := range in {
		assert.Equal(t, string(in[i].Data), string(entries[0].Events[i].Data), "feed: data of event %d comes back byte for byte", i)
		assert.Equal(t, in[i].EncryptedData, entries[0].Events[i].EncryptedData, "feed: encryptedData of event %d", i)
	}
	_ = ctx
}

// invalidPayloads: what one transport refuses, every transport refuses.
func (s *suite) invalidPayloads(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("payload")
	bad := map[string]transport.Event{
		"data not JSON":             ev("Payload", `not json`),
		"data cut short":            ev("Payload", `{`),
		"two JSON values":           ev("Payload", `{} {}`),
		"data not UTF-8":            {EventType: "Payload", Data: json.RawMessage("\"\xff\xfe\"")},
		"encryptedData not UTF-8":   {EventType: "Payload", Data: json.RawMessage(`{}`), EncryptedData: "\xff\xfeciphertext"},
		"encryptedData with a NUL":  {EventType: "Payload", Data: json.RawMessage(`{}`), EncryptedData: "a\x00b"},
		"trailing garbage after {}": ev("Payload", `{}x`),
	}
	for name, e := range bad {
		err := tr.Store(ctx, ref, []transport.Event{ev("Payload", `{}`), e}, transport.Any)
		assert.ErrorIs(t, err, transport.ErrInvalid, name)
		err = tr.StoreBulk(ctx, ref.Scope(), []transport.Batch{{AggregateID: ref.ID, Events: []transport.Event{e}}})
		assert.ErrorIs(t, err, transport.ErrInvalid, "bulk, "+name)
	}
	ok, err := tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok, "nothing of a refused batch is stored")
}

// pagesAreCopies: a caller changing what a read returned changes nothing
// that a later read returns.
func (s *suite) pagesAreCopies(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	first := ev("OrderPlaced", `{"n":1}`)
	first.EncryptedData = "sealed"
	store(t, tr, ref, transport.MustNotExist, first, ev("OrderPaid", `{"n":2}`))
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	require.Len(t, p.Events, 2)
	id := p.Events[0].EventID
	p.Events[0].EventType = "Tampered"
	p.Events[0].EventID = uuid.NewString()
	p.Events[0].EncryptedData = "tampered"
	p.Events[1] = transport.Event{EventType: "Replaced"}
	again, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	require.Len(t, again.Events, 2)
	assert.Equal(t, "OrderPlaced", again.Events[0].EventType, "a loaded page is the caller's")
	assert.Equal(t, id, again.Events[0].EventID)
	assert.Equal(t, "sealed", again.Events[0].EncryptedData)
	assert.Equal(t, "OrderPaid", again.Events[1].EventType)

	f, ok := tr.(transport.Feeder)
	if !ok {
		return
	}
	q := transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}}
	fp, err := f.ReadFeed(ctx, q)
	require.NoError(t, err)
	require.Len(t, fp.Entries, 1)
	fp.Entries[0].AggregateID = uuid.NewString()
	fp.Entries[0].Events[0].EventType = "Tampered"
	fp.Entries[0].Events = fp.Entries[0].Events[:1]
	fp2, err := f.ReadFeed(ctx, q)
	require.NoError(t, err)
	require.Len(t, fp2.Entries, 1)
	assert.Equal(t, ref.ID, fp2.Entries[0].AggregateID, "a feed page is the caller's")
	require.Len(t, fp2.Entries[0].Events, 2)
	assert.Equal(t, "OrderPlaced", fp2.Entries[0].Events[0].EventType)
}

// deleteRacingStores: after a confirmed delete nothing of the aggregate
// remains, and a store that was in flight either landed before the delete
// (and was deleted with it) or failed; it never leaves part of a history.
func (s *suite) deleteRacingStores(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	rounds := 40
	if s.cfg.skipBig {
		rounds = 15
	}
	for round := 0; round < rounds; round++ {
		wholeType := round%4 == 3
		typ := "race"
		if wholeType {
			typ = "racetype" + strings.Repeat("x", round%3)
		}
		a, b := newRef(typ), newRef(typ)
		for _, r := range []transport.Ref{a, b} {
			for v := int64(0); v < 3; v++ {
				store(t, tr, r, transport.Exactly(v), ev("Step", `{}`))
			}
		}
		target := transport.DeleteAggregate(a)
		if wholeType {
			target = transport.DeleteAllOfType(a.Scope())
		}
		token, err := tr.RequestDelete(ctx, target)
		require.NoError(t, err)

		start := make(chan struct{})
		var wg sync.WaitGroup
		var single, bulk, del error
		wg.Add(3)
		go func() {
			defer wg.Done()
			<-start
			single = tr.Store(ctx, a, []transport.Event{ev("Step", `{"v":4}`)}, transport.Exactly(3))
		}()
		go func() {
			defer wg.Done()
			<-start
			bulk = tr.StoreBulk(ctx, a.Scope(), []transport.Batch{
				{AggregateID: b.ID, Events: []transport.Event{ev("Step", `{"bulk":1}`)}, Expected: transport.Exactly(3)},
				{AggregateID: a.ID, Events: []transport.Event{ev("Step", `{"bulk":1}`)}, Expected: transport.Exactly(3)},
			})
		}()
		go func() {
			defer wg.Done()
			<-start
			del = tr.ConfirmDelete(ctx, target, token)
		}()
		close(start)
		wg.Wait()
		require.NoError(t, del, "round %d: the delete", round)
		for _, err := range []error{single, bulk} {
			if err != nil {
				assert.ErrorIs(t, err, transport.ErrConflict, "round %d: a store that lost the race to the delete conflicts", round)
			}
		}
		ok, err := tr.Exists(ctx, a)
		require.NoError(t, err)
		assert.False(t, ok, "round %d: nothing of a deleted aggregate remains (single store: %v, bulk: %v)", round, single, bulk)
		_, err = tr.Load(ctx, a, 0, 0)
		assert.ErrorIs(t, err, transport.ErrNotFound, "round %d: a deleted aggregate loads as not found", round)
		if wholeType {
			ok, err := tr.Exists(ctx, b)
			require.NoError(t, err)
			assert.False(t, ok, "round %d: nothing of a deleted type remains", round)
		}
		if f, isFeeder := tr.(transport.Feeder); isFeeder {
			for _, e := range readFeed(t, f, transport.FeedQuery{Feed: a.Scope()}) {
				assert.NotEqual(t, a.ID, e.AggregateID, "round %d: no feed entry of a deleted aggregate", round)
			}
		}
		// The id can start again from nothing.
		store(t, tr, a, transport.MustNotExist, ev("Step", `{"again":1}`))
	}
}

// anyUnderContention: a store with expected version Any never fails for
// want of a version, however many writers race on one aggregate.
func (s *suite) anyUnderContention(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("counter")
	writers, each := s.cfg.writers*2, 10
	if s.cfg.skipBig {
		each = 4
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	scope := ref.Scope()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if w%4 == 3 {
					errs <- tr.StoreBulk(ctx, scope, []transport.Batch{{AggregateID: ref.ID, Events: []transport.Event{ev("Incremented", `{}`)}}})
					continue
				}
				errs <- tr.Store(ctx, ref, []transport.Event{ev("Incremented", `{}`)}, transport.Any)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	assert.Zero(t, failed, "stores with expected version Any that failed (first: %v)", first)
	_, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(writers*each-failed), v)
}

// independentAnswers: stores running at once each get their own answer (a
// transport that commits several callers' batches together must keep them
// apart): a conflicting store or bulk store among good ones fails alone,
// with nothing of it stored, and every good one is stored whole, once.
func (s *suite) independentAnswers(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	scope := transport.Scope{Type: "answer"}
	rounds, writers := 6, max(s.cfg.writers*2, 8)
	if s.cfg.skipBig {
		rounds = 3
	}
	type outcome struct {
		ids  []string // aggregates it wrote to
		bad  bool     // meant to conflict
		err  error
		bulk bool
	}
	existing := transport.Ref{Type: scope.Type, ID: uuid.NewString()}
	store(t, tr, existing, transport.MustNotExist, ev("Answered", `{"n":0}`))
	var all []outcome
	for r := 0; r < rounds; r++ {
		out := make([]outcome, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range out {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				o := outcome{ids: []string{uuid.NewString()}}
				<-start
				switch w % 4 {
				case 0: // a conflict: expects a version the new aggregate does not have
					o.bad = true
					o.err = tr.Store(ctx, transport.Ref{Type: scope.Type, ID: o.ids[0]}, []transport.Event{ev("Answered", `{"bad":true}`)}, transport.Exactly(5))
				case 1: // a bulk store whose second batch conflicts with the aggregate stored before the round
					o.bad, o.bulk = true, true
					o.ids = append(o.ids, existing.ID)
					o.err = tr.StoreBulk(ctx, scope, []transport.Batch{
						{AggregateID: o.ids[0], Events: []transport.Event{ev("Answered", `{"bad":true}`)}},
						{AggregateID: existing.ID, Expected: transport.MustNotExist, Events: []transport.Event{ev("Answered", `{"bad":true}`)}},
					})
					o.ids = o.ids[:1]
				case 2: // a good bulk store of two new aggregates
					o.bulk = true
					o.ids = append(o.ids, uuid.NewString())
					o.err = tr.StoreBulk(ctx, scope, []transport.Batch{
						{AggregateID: o.ids[0], Expected: transport.MustNotExist, Events: []transport.Event{ev("Answered", `{"good":1}`)}},
						{AggregateID: o.ids[1], Expected: transport.MustNotExist, Events: []transport.Event{ev("Answered", `{"good":2}`), ev("Answered", `{"good":3}`)}},
					})
				default: // a good store
					o.err = tr.Store(ctx, transport.Ref{Type: scope.Type, ID: o.ids[0]}, []transport.Event{ev("Answered", `{"good":0}`)}, transport.MustNotExist)
				}
				out[w] = o
			}(w)
		}
		close(start)
		wg.Wait()
		all = append(all, out...)
	}
	good := 1 // the aggregate stored before the rounds
	for i, o := range all {
		if o.bad {
			assert.ErrorIs(t, o.err, transport.ErrConflict, "store %d (bulk %v), meant to conflict", i, o.bulk)
		} else {
			assert.NoError(t, o.err, "store %d (bulk %v) beside conflicting ones", i, o.bulk)
		}
		for _, id := range o.ids {
			ok, err := tr.Exists(ctx, transport.Ref{Type: scope.Type, ID: id})
			require.NoError(t, err)
			assert.Equal(t, !o.bad, ok, "store %d (bulk %v, meant to conflict %v): aggregate %s stored", i, o.bulk, o.bad, id)
			if !o.bad {
				good++
			}
		}
	}
	_, v := loadAll(t, tr, existing, 0)
	assert.Equal(t, int64(1), v, "the aggregate the bad bulk stores named is unchanged")
	f, ok := tr.(transport.Feeder)
	if !ok {
		return
	}
	entries := readFeed(t, f, transport.FeedQuery{Feed: scope})
	assert.Len(t, entries, good, "feed entries: one per good batch, none of a failed store")
	seen := map[string]bool{}
	for _, e := range entries {
		assert.False(t, seen[e.AggregateID], "aggregate %s twice in the feed", e.AggregateID)
		seen[e.AggregateID] = true
		for _, x := range e.Events {
			assert.NotContains(t, string(x.Data), "bad", "an event of a failed store reached the feed")
		}
	}
}

// bulkOppositeOrders: two bulk stores naming the same aggregates in opposite
// orders, again and again, never fail against each other.
func (s *suite) bulkOppositeOrders(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	scope := transport.Scope{Type: "pair"}
	x, y := uuid.NewString(), uuid.NewString()
	rounds := 30
	if s.cfg.skipBig {
		rounds = 10
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for g, order := range [][]string{{x, y}, {y, x}} {
		wg.Add(1)
		go func(g int, order []string) {
			defer wg.Done()
			for i := 0; i < rounds && errs[g] == nil; i++ {
				batches := make([]transport.Batch, len(order))
				for j, id := range order {
					batches[j] = transport.Batch{AggregateID: id, Events: []transport.Event{ev("Paired", `{}`)}}
				}
				errs[g] = tr.StoreBulk(ctx, scope, batches)
			}
		}(g, order)
	}
	wg.Wait()
	for g, err := range errs {
		assert.NoError(t, err, "bulk store %d", g)
	}
	for _, id := range []string{x, y} {
		_, v := loadAll(t, tr, transport.Ref{Type: scope.Type, ID: id}, 0)
		assert.Equal(t, int64(2*rounds), v)
	}
}

// bulkCap: a bulk store takes at most MaxBulkBatches batches.
func (s *suite) bulkCap(t *testing.T) {
	tr := s.newT(t)
	scope := transport.Scope{Type: "order"}
	batches := make([]transport.Batch, transport.MaxBulkBatches+1)
	for i := range batches {
		batches[i] = transport.Batch{AggregateID: uuid.NewString(), Events: []transport.Event{ev("OrderPlaced", `{}`)}}
	}
	err := tr.StoreBulk(context.Background(), scope, batches)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	ok, err := tr.Exists(context.Background(), transport.Ref{Type: scope.Type, ID: batches[0].AggregateID})
	require.NoError(t, err)
	assert.False(t, ok)
}

// bigEvent returns an event whose data is a JSON string of about n bytes.
func bigEvent(n int, fill byte) transport.Event {
	return ev("Big", `"`+strings.Repeat(string(fill), n-2)+`"`)
}

func pageBytes(events []transport.Event) int {
	n := 0
	for i := range events {
		n += transport.EventBytes(&events[i])
	}
	return n
}

// pageBytes: a page of Load or ReadFeed stops before it passes
// MaxPageBytes (unless its first batch alone does), says HasMore, and
// paging still reads every batch whole.
func (s *suite) pageBytes(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("blob")
	const batches = 10
	size := transport.MaxPageBytes / 4 // about four batches a page
	for i := 0; i < batches; i++ {
		store(t, tr, ref, transport.Exactly(int64(i)), bigEvent(size, byte('a'+i)))
	}
	huge := newRef("blob")
	store(t, tr, huge, transport.MustNotExist, bigEvent(transport.MaxPageBytes+1024, 'h'))
	store(t, tr, huge, transport.Exactly(1), ev("Small", `{}`))

	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.LessOrEqual(t, pageBytes(p.Events), transport.MaxPageBytes, "a page stays within MaxPageBytes")
	assert.NotZero(t, len(p.Events))
	assert.True(t, p.HasMore, "a page cut by bytes says there is more")
	assert.Less(t, p.Version, int64(batches))
	all, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(batches), v)
	require.Equal(t, batches, len(all), "paging by bytes loses no batch")
	for i, e := range all {
		assert.Equal(t, size, len(e.Data))
		assert.Equal(t, byte('a'+i), e.Data[1], "batch %d in order", i)
	}

	p, err = tr.Load(ctx, huge, 0, 0)
	require.NoError(t, err)
	require.Equal(t, 1, len(p.Events), "a batch over the bound comes alone, whole")
	assert.Equal(t, transport.MaxPageBytes+1024, len(p.Events[0].Data))
	assert.True(t, p.HasMore)
	assert.Equal(t, int64(1), p.Version)

	f, ok := tr.(transport.Feeder)
	if !ok {
		return
	}
	fp, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: ref.Scope()})
	require.NoError(t, err)
	n := 0
	for _, e := range fp.Entries {
		n += pageBytes(e.Events)
	}
	assert.LessOrEqual(t, n, transport.MaxPageBytes, "a feed page stays within MaxPageBytes")
	assert.True(t, fp.HasMore, "a feed page cut by bytes says there is more")
	entries := readFeed(t, f, transport.FeedQuery{Feed: ref.Scope()})
	assert.Equal(t, batches+2, len(entries), "paging the feed by bytes loses no batch")
}

// failedConfirmKeepsToken: a ConfirmDelete that fails before deleting
// anything leaves its token usable.
func (s *suite) failedConfirmKeepsToken(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	store(t, tr, ref, transport.Any, ev("OrderPlaced", `{}`))
	target := transport.DeleteAggregate(ref)
	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	ended, cancel := context.WithCancel(ctx)
	cancel()
	err = tr.ConfirmDelete(ended, target, token)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled), "a confirm with an ended context fails with it: %v", err)
	ok, err := tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.True(t, ok, "a failed confirm deletes nothing")
	require.NoError(t, tr.ConfirmDelete(ctx, target, token), "the token still works after a failed confirm")
}

func (s *suite) feedContract(t *testing.T) {
	t.Run("HeadNeverFalls", s.feedHeadNeverFalls)
	t.Run("StoredNeverGoesBack", s.feedStoredNeverGoesBack)
}

// feedHeadNeverFalls: deleting the newest batches leaves the head where it
// was (numbers are never reused), and a read past the last readable entry
// says there is nothing more.
func (s *suite) feedHeadNeverFalls(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	kept, gone, other := newRef("order"), newRef("order"), newRef("invoice")
	store(t, tr, kept, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, other, transport.Any, ev("InvoiceSent", `{}`))
	store(t, tr, gone, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, gone, transport.Any, ev("OrderPaid", `{}`))
	all := transport.Scope{Type: transport.AllTypes}
	orders := transport.Scope{Type: "order"}
	headAll, err := f.FeedHead(ctx, all)
	require.NoError(t, err)
	headOrders, err := f.FeedHead(ctx, orders)
	require.NoError(t, err)

	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(gone))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(gone), token))
	for feed, before := range map[transport.Scope]int64{all: headAll, orders: headOrders} {
		h, err := f.FeedHead(ctx, feed)
		require.NoError(t, err)
		assert.Equal(t, before, h, "feed %s: deleting the newest batches does not lower the head", feed.Type)
		entries := readFeed(t, f, transport.FeedQuery{Feed: feed})
		require.NotEmpty(t, entries)
		p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: feed, Since: entries[len(entries)-1].Sequence})
		require.NoError(t, err)
		assert.Empty(t, p.Entries)
		assert.False(t, p.HasMore, "feed %s: a read past the last entry says there is no more", feed.Type)
		assert.Equal(t, before, p.Head, "feed %s: the page's head does not fall either", feed.Type)
	}

	token, err = tr.RequestDelete(ctx, transport.DeleteAllOfType(orders))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(orders), token))
	h, err := f.FeedHead(ctx, orders)
	require.NoError(t, err)
	assert.Equal(t, headOrders, h, "a type delete does not lower the type's head")
	h, err = f.FeedHead(ctx, all)
	require.NoError(t, err)
	assert.Equal(t, headAll, h, "a type delete does not lower the head of every type")
	p, err := f.ReadFeed(ctx, transport.FeedQuery{Feed: orders})
	require.NoError(t, err)
	assert.Empty(t, p.Entries)
	assert.False(t, p.HasMore)

	store(t, tr, kept, transport.MustNotExist, ev("OrderPlaced", `{}`))
	h, err = f.FeedHead(ctx, orders)
	require.NoError(t, err)
	assert.Greater(t, h, headAll, "a new batch is numbered above every number given before")
}

// feedStoredNeverGoesBack: the stored times of one aggregate's batches never
// go backwards in version order, however many writers race.
func (s *suite) feedStoredNeverGoesBack(t *testing.T) {
	tr, f := s.newFeeder(t)
	ctx := context.Background()
	ref := newRef("counter")
	writers, each := s.cfg.writers, 20
	if s.cfg.skipBig {
		each = 5
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				assert.NoError(t, tr.Store(ctx, ref, []transport.Event{ev("Incremented", `{}`)}, transport.Any))
			}
		}()
	}
	wg.Wait()
	entries := readFeed(t, f, transport.FeedQuery{Feed: ref.Scope()})
	require.Len(t, entries, writers*each)
	for i := 1; i < len(entries); i++ {
		if entries[i].Version != 0 {
			assert.Greater(t, entries[i].Version, entries[i-1].Version)
		}
		assert.False(t, entries[i].Stored.Before(entries[i-1].Stored),
			"batch %d stored at %s, before batch %d at %s", i, entries[i].Stored, i-1, entries[i-1].Stored)
	}
}
