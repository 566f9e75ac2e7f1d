// Package transporttest is the conformance suite every transport passes,
// ours and yours. It checks a transport.Transport against the contract of
// the Serialized Aggregates API: data round trips intact, paging by
// batches, version arithmetic, optimistic concurrency under many writers,
// exists, both delete flows, bulk atomicity, tenant isolation and input
// validation. A transport that implements transport.Feeder also proves its
// feed: commit order, every batch exactly once and whole, an exclusive since,
// paging, type feeds and AllTypes, disjoint and complete partitions that
// keep each aggregate's order, the event-type filter, heads and overviews,
// bulk stores, deletes (numbers never reused), tenants, bad input refused
// without waiting, long-polling reads that wake on commit and end with their
// context, and 32 writers committing while 4 readers tail the feed: each
// reader's sequence equals the final feed's.
//
// Run it from a test of your transport, with a constructor that returns a
// fresh, empty store for every subtest:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transport.Transport {
//			return mystore.Open(t.TempDir())
//		})
//	}
//
// Delete tokens expire after ten minutes. If your transport takes a clock,
// use RunWithClock: the suite gives each transport its own Clock and moves
// it. Otherwise give the suite a way to move time with WithAdvance; without
// either the expiry check is skipped.
package transporttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
)

// Option configures Run.
type Option func(*config)

type config struct {
	advance func(t *testing.T, tr transport.Transport, d time.Duration)
	writers int
	skipBig bool
}

// WithAdvance lets the suite move the clock of the transport under test
// forward by d, to check that delete tokens expire.
func WithAdvance(advance func(t *testing.T, tr transport.Transport, d time.Duration)) Option {
	return func(c *config) { c.advance = advance }
}

// WithWriters sets how many goroutines race on one aggregate (default 16).
func WithWriters(n int) Option {
	return func(c *config) {
		if n > 1 {
			c.writers = n
		}
	}
}

// SkipLarge skips the checks that store more than a thousand batches, for
// transports where that is slow (for example over a real network).
func SkipLarge() Option { return func(c *config) { c.skipBig = true } }

// Run runs the conformance suite. newTransport must return a fresh, empty
// transport for each subtest; closing it is the caller's business
// (t.Cleanup).
func Run(t *testing.T, newTransport func(t *testing.T) transport.Transport, opts ...Option) {
	c := &config{writers: 16}
	for _, o := range opts {
		o(c)
	}
	s := &suite{cfg: c, newT: newTransport}
	t.Run("RoundTrip", s.roundTrip)
	t.Run("EventIDs", s.eventIDs)
	t.Run("EncryptedData", s.encryptedData)
	t.Run("Versions", s.versions)
	t.Run("Paging", s.paging)
	t.Run("PagingBeyondOnePage", s.pagingLarge)
	t.Run("ExpectedVersion", s.expectedVersion)
	t.Run("ConcurrentWriters", s.concurrentWriters)
	t.Run("Exists", s.exists)
	t.Run("DeleteAggregate", s.deleteAggregate)
	t.Run("DeleteType", s.deleteType)
	t.Run("DeleteTokenExpires", s.deleteTokenExpires)
	t.Run("StoreBulk", s.storeBulk)
	t.Run("Tenants", s.tenants)
	t.Run("InvalidInput", s.invalidInput)
	t.Run("Canceled", s.canceled)
	t.Run("List", s.list)
	t.Run("Contract", s.contract)
	probe := newTransport(t)
	if _, ok := probe.(transport.Feeder); ok {
		t.Run("Feed", s.feed)
	}
}

type suite struct {
	cfg  *config
	newT func(t *testing.T) transport.Transport
}

func newRef(typ string) transport.Ref { return transport.Ref{Type: typ, ID: uuid.NewString()} }

func ev(typ string, data string) transport.Event {
	return transport.Event{EventType: typ, Data: json.RawMessage(data)}
}

func store(t *testing.T, tr transport.Transport, ref transport.Ref, exp transport.ExpectedVersion, events ...transport.Event) {
	t.Helper()
	require.NoError(t, tr.Store(context.Background(), ref, events, exp))
}

// loadAll pages through the whole history with the given page size.
func loadAll(t *testing.T, tr transport.Transport, ref transport.Ref, limit int) ([]transport.Event, int64) {
	t.Helper()
	var all []transport.Event
	since := int64(0)
	for {
		p, err := tr.Load(context.Background(), ref, since, limit)
		require.NoError(t, err)
		all = append(all, p.Events...)
		require.GreaterOrEqual(t, p.Version, since)
		if !p.HasMore {
			return all, p.Version
		}
		require.Greater(t, p.Version, since, "a page with hasMore must advance")
		since = p.Version
	}
}

func (s *suite) roundTrip(t *testing.T) {
	tr := s.newT(t)
	ref := newRef("order")
	in := []transport.Event{
		ev("OrderPlaced", `{"orderId":"o-1","amount":1200,"lines":[{"sku":"a","qty":2}],"note":"åäö \"q\""}`),
		ev("PaymentReceived", `{"amount":200}`),
		ev("Empty-Event_2", `{}`),
	}
	store(t, tr, ref, transport.MustNotExist, in...)
	p, err := tr.Load(context.Background(), ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(1), p.Version)
	assert.False(t, p.HasMore)
	require.Len(t, p.Events, len(in))
	for i := range in {
		assert.Equal(t, in[i].EventType, p.Events[i].EventType)
		assert.JSONEq(t, string(in[i].Data), string(p.Events[i].Data))
	}
}

func (s *suite) eventIDs(t *testing.T) {
	tr := s.newT(t)
	ref := newRef("order")
	given := uuid.NewString()
	e1 := ev("OrderPlaced", `{"n":1}`)
	e1.EventID = given
	store(t, tr, ref, transport.Any, e1, ev("OrderPlaced", `{"n":2}`))
	all, _ := loadAll(t, tr, ref, 0)
	require.Len(t, all, 2)
	assert.Equal(t, given, all[0].EventID, "a given eventId is kept")
	assert.NoError(t, transport.ValidateID(all[1].EventID), "a missing eventId is assigned as a UUID")
	assert.NotEqual(t, all[0].EventID, all[1].EventID)
}

func (s *suite) encryptedData(t *testing.T) {
	tr := s.newT(t)
	ref := newRef("secret-doc")
	big := strings.Repeat("Zm9vYmFy", transport.MaxEncryptedData/8+1)[:transport.MaxEncryptedData] // exactly at the limit
	require.Equal(t, transport.MaxEncryptedData, len(big))
	e := ev("DocumentSealed", `{"v":1}`)
	e.EncryptedData = big
	small := ev("DocumentSealed", `{"v":2}`)
	small.EncryptedData = "opaque+/=\u00e9"
	store(t, tr, ref, transport.Any, e, small)
	all, _ := loadAll(t, tr, ref, 0)
	require.Len(t, all, 2)
	assert.True(t, all[0].EncryptedData == big, "encryptedData comes back byte for byte")
	assert.Equal(t, small.EncryptedData, all[1].EncryptedData)

	tooBig := ev("DocumentSealed", `{}`)
	tooBig.EncryptedData = big + "!"
	err := tr.Store(context.Background(), ref, []transport.Event{tooBig}, transport.Any)
	assert.ErrorIs(t, err, transport.ErrInvalid)
	_, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(1), v, "a rejected batch stores nothing")
}

func (s *suite) versions(t *testing.T) {
	tr := s.newT(t)
	ref := newRef("order")
	sizes := []int{1, 3, 1, transport.MaxBatchEvents, 2}
	total := 0
	for i, n := range sizes {
		batch := make([]transport.Event, n)
		for j := range batch {
			batch[j] = ev("Counted", fmt.Sprintf(`{"batch":%d,"i":%d}`, i, j))
		}
		store(t, tr, ref, transport.Exactly(int64(i)), batch...)
		total += n
		_, v := loadAll(t, tr, ref, 0)
		assert.Equal(t, int64(i+1), v, "the version rises by one per batch, whatever its size")
	}
	all, _ := loadAll(t, tr, ref, 0)
	require.Len(t, all, total)
	k := 0
	for i, n := range sizes {
		for j := 0; j < n; j++ {
			assert.JSONEq(t, fmt.Sprintf(`{"batch":%d,"i":%d}`, i, j), string(all[k].Data), "events keep their order")
			k++
		}
	}
}

func (s *suite) paging(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	for i := 0; i < 10; i++ {
		store(t, tr, ref, transport.Exactly(int64(i)), ev("Counted", fmt.Sprintf(`{"v":%d}`, i+1)), ev("Counted", fmt.Sprintf(`{"v":%d}`, i+1)))
	}
	p, err := tr.Load(ctx, ref, 0, 3)
	require.NoError(t, err)
	assert.Equal(t, int64(3), p.Version)
	assert.True(t, p.HasMore)
	assert.Len(t, p.Events, 6, "limit counts batches, not events")

	p, err = tr.Load(ctx, ref, 3, 3)
	require.NoError(t, err)
	require.Len(t, p.Events, 6)
	assert.JSONEq(t, `{"v":4}`, string(p.Events[0].Data), "since is exclusive")
	assert.Equal(t, int64(6), p.Version)

	p, err = tr.Load(ctx, ref, 8, 5)
	require.NoError(t, err)
	assert.Equal(t, int64(10), p.Version)
	assert.False(t, p.HasMore)
	assert.Len(t, p.Events, 4)

	p, err = tr.Load(ctx, ref, 10, 0)
	require.NoError(t, err, "loading after the last batch is an empty page, not an error")
	assert.Empty(t, p.Events)
	assert.Equal(t, int64(10), p.Version)
	assert.False(t, p.HasMore)

	for _, limit := range []int{1, 4, 7, 0} {
		all, v := loadAll(t, tr, ref, limit)
		assert.Len(t, all, 20, "limit %d", limit)
		assert.Equal(t, int64(10), v)
	}
}

func (s *suite) pagingLarge(t *testing.T) {
	if s.cfg.skipBig {
		t.Skip("SkipLarge")
	}
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	const n = transport.MaxLimit + 5
	for i := 0; i < n; i++ {
		store(t, tr, ref, transport.Exactly(int64(i)), ev("Counted", fmt.Sprintf(`{"v":%d}`, i+1)))
	}
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Len(t, p.Events, transport.DefaultLimit, "the default limit is 1000 batches")
	assert.Equal(t, int64(transport.DefaultLimit), p.Version)
	assert.True(t, p.HasMore)

	p, err = tr.Load(ctx, ref, 0, transport.MaxLimit+500)
	require.NoError(t, err)
	assert.Len(t, p.Events, transport.MaxLimit, "a limit over the maximum is capped")

	p, err = tr.Load(ctx, ref, p.Version, 0)
	require.NoError(t, err)
	assert.Len(t, p.Events, 5)
	assert.Equal(t, int64(n), p.Version)
	assert.False(t, p.HasMore)
	assert.JSONEq(t, fmt.Sprintf(`{"v":%d}`, transport.MaxLimit+1), string(p.Events[0].Data))
}

func (s *suite) expectedVersion(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	e := []transport.Event{ev("OrderPlaced", `{}`)}

	err := tr.Store(ctx, ref, e, transport.Exactly(1))
	assert.ErrorIs(t, err, transport.ErrConflict, "expecting 1 on a new aggregate conflicts")
	store(t, tr, ref, transport.MustNotExist, e...)

	err = tr.Store(ctx, ref, e, transport.MustNotExist)
	require.ErrorIs(t, err, transport.ErrConflict, "must-not-exist conflicts once it exists")
	var te *transport.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, ref.ID, te.AggregateID, "the error names the aggregate")
	assert.Equal(t, ref.Type, te.AggregateType)

	assert.ErrorIs(t, tr.Store(ctx, ref, e, transport.Exactly(0)), transport.ErrConflict)
	assert.ErrorIs(t, tr.Store(ctx, ref, e, transport.Exactly(2)), transport.ErrConflict, "a version from the future conflicts")
	store(t, tr, ref, transport.Exactly(1), e...)
	assert.ErrorIs(t, tr.Store(ctx, ref, e, transport.Exactly(1)), transport.ErrConflict, "a stale version conflicts")
	store(t, tr, ref, transport.Any, e...)
	_, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(3), v, "conflicts store nothing")

	assert.ErrorIs(t, tr.Store(ctx, ref, e, transport.Exactly(-1)), transport.ErrInvalid)

	fresh := newRef("order")
	store(t, tr, fresh, transport.Any, e...)
	_, v = loadAll(t, tr, fresh, 0)
	assert.Equal(t, int64(1), v, "Any creates")
}

func (s *suite) concurrentWriters(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("counter")
	store(t, tr, ref, transport.MustNotExist, ev("Started", `{}`))

	const rounds = 8
	writers := s.cfg.writers
	var mu sync.Mutex
	winners := map[int64]string{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				// Everyone reads the current version, then races to write the next.
				_, v := currentVersion(ctx, tr, ref)
				id := uuid.NewString()
				e := transport.Event{EventID: id, EventType: "Incremented", Data: json.RawMessage(fmt.Sprintf(`{"writer":%d}`, w))}
				err := tr.Store(ctx, ref, []transport.Event{e}, transport.Exactly(v))
				switch {
				case err == nil:
					mu.Lock()
					if prev, dup := winners[v+1]; dup {
						errs <- fmt.Errorf("version %d won twice: %s and %s", v+1, prev, id)
					}
					winners[v+1] = id
					mu.Unlock()
				case errors.Is(err, transport.ErrConflict):
				default:
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	all, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(len(winners)+1), v, "one version per successful store")
	require.Len(t, all, len(winners)+1, "no gaps, nothing doubled")
	for ver := int64(2); ver <= v; ver++ {
		assert.Equal(t, winners[ver], all[ver-1].EventID, "version %d holds its winner", ver)
	}
	assert.GreaterOrEqual(t, len(winners), rounds, "progress was made")
}

func currentVersion(ctx context.Context, tr transport.Transport, ref transport.Ref) (bool, int64) {
	since := int64(0)
	for {
		p, err := tr.Load(ctx, ref, since, 0)
		if err != nil {
			return false, 0
		}
		if !p.HasMore {
			return true, p.Version
		}
		since = p.Version
	}
}

func (s *suite) exists(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	ok, err := tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok)
	_, err = tr.Load(ctx, ref, 0, 0)
	assert.ErrorIs(t, err, transport.ErrNotFound, "loading a missing aggregate")
	store(t, tr, ref, transport.Any, ev("OrderPlaced", `{}`))
	ok, err = tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.True(t, ok)
	other := transport.Ref{Type: "invoice", ID: ref.ID}
	ok, err = tr.Exists(ctx, other)
	require.NoError(t, err)
	assert.False(t, ok, "the same id under another type is another aggregate")
}

func (s *suite) deleteAggregate(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	a, b := newRef("order"), newRef("order")
	store(t, tr, a, transport.Any, ev("OrderPlaced", `{}`))
	store(t, tr, b, transport.Any, ev("OrderPlaced", `{}`))
	target := transport.DeleteAggregate(a)

	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	require.NotEmpty(t, token)
	ok, err := tr.Exists(ctx, a)
	require.NoError(t, err)
	assert.True(t, ok, "nothing is deleted before the confirmation")

	assert.ErrorIs(t, tr.ConfirmDelete(ctx, target, uuid.NewString()), transport.ErrBadDeleteToken, "unknown token")
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(b), token), transport.ErrBadDeleteToken, "token of another aggregate")
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(a.Scope()), token), transport.ErrBadDeleteToken, "token of one aggregate used for the type")

	require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	_, err = tr.Load(ctx, a, 0, 0)
	assert.ErrorIs(t, err, transport.ErrNotFound)
	ok, err = tr.Exists(ctx, a)
	require.NoError(t, err)
	assert.False(t, ok)
	ok, err = tr.Exists(ctx, b)
	require.NoError(t, err)
	assert.True(t, ok, "other aggregates are untouched")
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, target, token), transport.ErrBadDeleteToken, "a token is used once")

	// A deleted aggregate can be created anew.
	store(t, tr, a, transport.MustNotExist, ev("OrderPlaced", `{}`))
}

func (s *suite) deleteType(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	a, b, other := newRef("order"), newRef("order"), newRef("invoice")
	for _, r := range []transport.Ref{a, b, other} {
		store(t, tr, r, transport.Any, ev("Created", `{}`))
	}
	target := transport.DeleteAllOfType(a.Scope())
	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(other.Scope()), token), transport.ErrBadDeleteToken, "token of another type")
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(a), token), transport.ErrBadDeleteToken, "type token used for one aggregate")
	require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	for _, r := range []transport.Ref{a, b} {
		ok, err := tr.Exists(ctx, r)
		require.NoError(t, err)
		assert.False(t, ok)
	}
	ok, err := tr.Exists(ctx, other)
	require.NoError(t, err)
	assert.True(t, ok, "other types are untouched")
}

func (s *suite) deleteTokenExpires(t *testing.T) {
	if s.cfg.advance == nil {
		t.Skip("no WithAdvance: the transport's clock cannot be moved")
	}
	tr := s.newT(t)
	ctx := context.Background()
	ref := newRef("order")
	store(t, tr, ref, transport.Any, ev("OrderPlaced", `{}`))
	target := transport.DeleteAggregate(ref)

	early, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	s.cfg.advance(t, tr, transport.DeleteTokenTTL-time.Minute)
	late, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	s.cfg.advance(t, tr, 2*time.Minute)
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, target, early), transport.ErrBadDeleteToken, "a token dies after ten minutes")
	ok, err := tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, tr.ConfirmDelete(ctx, target, late), "a younger token still works")
}

func (s *suite) storeBulk(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: a}, []transport.Event{ev("OrderPlaced", `{}`)}, transport.Any))

	err := tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: a, Events: []transport.Event{ev("OrderPaid", `{}`)}, Expected: transport.Exactly(1)},
		{AggregateID: b, Events: []transport.Event{ev("OrderPlaced", `{}`), ev("OrderPaid", `{}`)}, Expected: transport.MustNotExist},
	})
	require.NoError(t, err)
	_, va := loadAll(t, tr, transport.Ref{Type: "order", ID: a}, 0)
	evb, vb := loadAll(t, tr, transport.Ref{Type: "order", ID: b}, 0)
	assert.Equal(t, int64(2), va)
	assert.Equal(t, int64(1), vb)
	assert.Len(t, evb, 2)

	// One conflicting batch: nothing of the call is stored.
	err = tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: c, Events: []transport.Event{ev("OrderPlaced", `{}`)}, Expected: transport.MustNotExist},
		{AggregateID: a, Events: []transport.Event{ev("OrderPaid", `{}`)}, Expected: transport.Exactly(1)},
	})
	assert.ErrorIs(t, err, transport.ErrConflict)
	ok, err := tr.Exists(ctx, transport.Ref{Type: "order", ID: c})
	require.NoError(t, err)
	assert.False(t, ok, "bulk store is all or nothing")

	err = tr.StoreBulk(ctx, scope, []transport.Batch{
		{AggregateID: c, Events: []transport.Event{ev("OrderPlaced", `{}`)}},
		{AggregateID: c, Events: []transport.Event{ev("OrderPlaced", `{}`)}},
	})
	assert.ErrorIs(t, err, transport.ErrInvalid, "ids must be unique in one call")
	assert.ErrorIs(t, tr.StoreBulk(ctx, scope, nil), transport.ErrInvalid, "an empty bulk store")
	assert.ErrorIs(t, tr.StoreBulk(ctx, scope, []transport.Batch{{AggregateID: "nope", Events: []transport.Event{ev("OrderPlaced", `{}`)}}}), transport.ErrInvalid)
	assert.ErrorIs(t, tr.StoreBulk(ctx, scope, []transport.Batch{{AggregateID: c}}), transport.ErrInvalid, "an empty batch")
	ok, err = tr.Exists(ctx, transport.Ref{Type: "order", ID: c})
	require.NoError(t, err)
	assert.False(t, ok)
}

func (s *suite) tenants(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	id := uuid.NewString()
	t1, t2 := uuid.NewString(), uuid.NewString()
	r0 := transport.Ref{Type: "order", ID: id}
	r1 := transport.Ref{Tenant: t1, Type: "order", ID: id}
	r2 := transport.Ref{Tenant: t2, Type: "order", ID: id}

	store(t, tr, r1, transport.MustNotExist, ev("OrderPlaced", `{"tenant":1}`))
	for _, r := range []transport.Ref{r0, r2} {
		ok, err := tr.Exists(ctx, r)
		require.NoError(t, err)
		assert.False(t, ok, "another tenant sees nothing")
		_, err = tr.Load(ctx, r, 0, 0)
		assert.ErrorIs(t, err, transport.ErrNotFound)
	}
	store(t, tr, r2, transport.MustNotExist, ev("OrderPlaced", `{"tenant":2}`), ev("OrderPaid", `{}`))
	store(t, tr, r0, transport.MustNotExist, ev("OrderPlaced", `{"tenant":0}`))
	e1, v1 := loadAll(t, tr, r1, 0)
	e2, v2 := loadAll(t, tr, r2, 0)
	assert.Equal(t, int64(1), v1)
	assert.Equal(t, int64(1), v2)
	require.Len(t, e1, 1)
	require.Len(t, e2, 2)
	assert.JSONEq(t, `{"tenant":1}`, string(e1[0].Data))
	assert.JSONEq(t, `{"tenant":2}`, string(e2[0].Data))

	// A delete in one tenant leaves the others alone, and tokens do not cross.
	tok, err := tr.RequestDelete(ctx, transport.DeleteAllOfType(r1.Scope()))
	require.NoError(t, err)
	assert.ErrorIs(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(r2.Scope()), tok), transport.ErrBadDeleteToken)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAllOfType(r1.Scope()), tok))
	for r, want := range map[transport.Ref]bool{r0: true, r1: false, r2: true} {
		ok, err := tr.Exists(ctx, r)
		require.NoError(t, err)
		assert.Equal(t, want, ok, "tenant %q", r.Tenant)
	}

	if l, ok := tr.(transport.Lister); ok {
		page, err := l.List(ctx, r2.Scope(), 0, 0)
		require.NoError(t, err)
		require.Len(t, page.Aggregates, 1)
		assert.Equal(t, int64(1), page.Aggregates[0].AggregateVersion)
	}
}

func (s *suite) invalidInput(t *testing.T) {
	tr := s.newT(t)
	ctx := context.Background()
	good := newRef("order")
	okEvents := []transport.Event{ev("OrderPlaced", `{}`)}
	tooMany := make([]transport.Event, transport.MaxBatchEvents+1)
	for i := range tooMany {
		tooMany[i] = ev("OrderPlaced", `{}`)
	}
	badRefs := map[string]transport.Ref{
		"bad type":   {Type: "Order", ID: good.ID},
		"short type": {Type: "o", ID: good.ID},
		"bad id":     {Type: "order", ID: "42"},
		"empty id":   {Type: "order"},
		"bad tenant": {Tenant: "acme", Type: "order", ID: good.ID},
	}
	check := func(what string, err error) {
		t.Helper()
		require.Error(t, err, what)
		assert.ErrorIs(t, err, transport.ErrInvalid, what)
		var te *transport.Error
		assert.ErrorAs(t, err, &te, what)
	}
	for name, r := range badRefs {
		_, err := tr.Load(ctx, r, 0, 0)
		check("load, "+name, err)
		check("store, "+name, tr.Store(ctx, r, okEvents, transport.Any))
		_, err = tr.Exists(ctx, r)
		check("exists, "+name, err)
		_, err = tr.RequestDelete(ctx, transport.DeleteAggregate(r))
		check("request delete, "+name, err)
		check("confirm delete, "+name, tr.ConfirmDelete(ctx, transport.DeleteAggregate(r), uuid.NewString()))
	}
	check("empty batch", tr.Store(ctx, good, nil, transport.Any))
	check("too many events", tr.Store(ctx, good, tooMany, transport.Any))
	check("bad event type", tr.Store(ctx, good, []transport.Event{ev("x", `{}`)}, transport.Any))
	check("bad event id", tr.Store(ctx, good, []transport.Event{{EventID: "1", EventType: "OrderPlaced"}}, transport.Any))
	_, err := tr.RequestDelete(ctx, transport.DeleteTarget{Type: "order"})
	check("delete target without id", err)
	check("bulk with bad scope", tr.StoreBulk(ctx, transport.Scope{Type: "BAD"}, []transport.Batch{{AggregateID: good.ID, Events: okEvents}}))
	ok, err := tr.Exists(ctx, good)
	require.NoError(t, err)
	assert.False(t, ok, "nothing was stored by rejected calls")
	require.NoError(t, tr.Store(ctx, good, tooMany[:transport.MaxBatchEvents], transport.Any), "a full batch is fine")
}

func (s *suite) canceled(t *testing.T) {
	tr := s.newT(t)
	ref := newRef("order")
	store(t, tr, ref, transport.Any, ev("OrderPlaced", `{}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tr.Load(ctx, ref, 0, 0)
	assert.ErrorIs(t, err, context.Canceled)
	err = tr.Store(ctx, ref, []transport.Event{ev("OrderPaid", `{}`)}, transport.Any)
	assert.ErrorIs(t, err, context.Canceled)
	_, v := loadAll(t, tr, ref, 0)
	assert.Equal(t, int64(1), v, "a canceled store stores nothing")
}

func (s *suite) list(t *testing.T) {
	tr := s.newT(t)
	l, ok := tr.(transport.Lister)
	if !ok {
		t.Skip("the transport does not implement transport.Lister")
	}
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	page, err := l.List(ctx, scope, 0, 0)
	require.NoError(t, err)
	assert.Empty(t, page.Aggregates)
	assert.False(t, page.HasMore)

	ids := make([]string, 5)
	for i := range ids {
		ids[i] = uuid.NewString()
		r := transport.Ref{Type: "order", ID: ids[i]}
		for v := 0; v <= i; v++ {
			store(t, tr, r, transport.Any, ev("Touched", `{}`))
		}
	}
	store(t, tr, newRef("invoice"), transport.Any, ev("Touched", `{}`))
	byID := map[string]int64{}
	for i, id := range ids {
		byID[id] = int64(i + 1)
	}
	page, err = l.List(ctx, scope, 0, 3)
	require.NoError(t, err)
	require.Len(t, page.Aggregates, 3)
	assert.True(t, page.HasMore)
	rest, err := l.List(ctx, scope, 3, 3)
	require.NoError(t, err)
	require.Len(t, rest.Aggregates, 2)
	assert.False(t, rest.HasMore)
	all := append(page.Aggregates, rest.Aggregates...)
	for i, a := range all {
		if i > 0 {
			assert.Less(t, all[i-1].AggregateID, a.AggregateID, "ordered by id")
		}
		assert.Equal(t, "order", a.AggregateType)
		assert.Equal(t, byID[a.AggregateID], a.AggregateVersion)
	}
}
