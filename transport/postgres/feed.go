package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

// ReadFeed implements transport.Feeder. Only numbered batches are read
// (see the package doc); a read first makes sure that every batch
// committed before it began has its number (see settled). A read that
// waits wakes when batches get numbers, here or in another process.
func (t *Transport) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	first := true
	var last transport.FeedQuery
	page, err := commitsignal.ReadFeed(ctx, &t.signal, q, func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
		var page transport.FeedPage
		var err error
		if first {
			// What committed before this call must be in its answer.
			first = false
			page, err = settled(ctx, t, func(p prelude) (transport.FeedPage, bool, error) { return t.readFeed(ctx, q, p) })
		} else {
			// Woken by a numbering: what is numbered is what is new.
			page, _, err = t.readFeed(ctx, q, prelude{})
		}
		if t.afterRead != nil {
			t.afterRead()
		}
		if err != nil {
			return transport.FeedPage{}, 0, failed(op, ref, err, false)
		}
		last = q
		return page, q.Since, nil
	})
	if err != nil || len(page.Entries) > 0 || q.Wait <= 0 || ctx.Err() != nil {
		return page, err
	}
	// The wait ended without a wake-up: a last read, which settles as the
	// first did, so that whatever committed while the read waited is in
	// the answer, however its wake-up went missing.
	page, err = settled(ctx, t, func(p prelude) (transport.FeedPage, bool, error) { return t.readFeed(ctx, last, p) })
	if err != nil {
		return transport.FeedPage{}, failed(op, ref, err, false)
	}
	return page, nil
}

// prelude is what a feed read sends before its own statements, in the
// same round trip.
type prelude struct {
	check  bool // ask whether some committed batch has no number yet
	settle bool // first run the sequencer
}

// settled runs read, which tells whether some committed batch has no feed
// number yet. If one has none, it reads again after a numbering run of its
// own in the same round trip (and again while the backlog takes more than
// one run): the run takes its snapshot after this call began, so what
// committed before the read began is in its answer, whichever process
// stored it. It never waits for another transaction: an open one holds
// back its own batches only, which are not committed yet.
//
// Under a stream of writes the check nearly always finds a batch of the
// last few milliseconds without its number; so once it has, reads settle
// straight away, until a numbering run finds nothing to do.
func settled[T any](ctx context.Context, t *Transport, read func(p prelude) (T, bool, error)) (T, error) {
	var v T
	var err error
	if !t.busy.Load() {
		var pending bool
		v, pending, err = read(prelude{check: true})
		if err != nil || !pending {
			return v, err
		}
		t.busy.Store(true)
	}
	for {
		var more bool
		v, more, err = read(prelude{settle: true})
		if err != nil || !more {
			return v, err
		}
		if err := ctx.Err(); err != nil {
			return v, err
		}
	}
}

// send sends the prelude and b as one round trip, b's statements in one
// read-only transaction with one snapshot (so a page and its head agree),
// and reads the prelude's answers: with check, whether a committed batch
// has no number; with settle, whether the run left more to number. The
// caller reads b's results and closes them.
func (t *Transport) send(ctx context.Context, b *pgx.Batch, p prelude) (res pgx.BatchResults, pending bool, err error) {
	own := b.QueuedQueries
	b.QueuedQueries = nil
	if p.settle {
		t.queueSequencer(b)
	}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	if p.check {
		b.Queue(t.q.pendingNow)
	}
	b.QueuedQueries = append(b.QueuedQueries, own...)
	b.Queue("COMMIT")
	res = t.pool.SendBatch(ctx, b)
	fail := func(err error) (pgx.BatchResults, bool, error) {
		_ = res.Close()
		return nil, false, err
	}
	if p.settle {
		r, err := t.readSequencer(res)
		if err != nil {
			return fail(err)
		}
		t.saw(r)
		if r.numbered == 0 && !r.more {
			t.busy.Store(false) // nothing was waiting: check first again
		}
		pending = r.more
	}
	if _, err := res.Exec(); err != nil { // BEGIN
		return fail(err)
	}
	if p.check {
		if err := res.QueryRow().Scan(&pending); err != nil {
			return fail(err)
		}
	}
	return res, pending, nil
}

func (t *Transport) readFeed(ctx context.Context, q transport.FeedQuery, p prelude) (transport.FeedPage, bool, error) {
	limit := transport.PageLimit(q.Limit)
	types := q.EventTypes
	if types == nil {
		types = []string{}
	}
	count, number := 0, 0
	if q.Partition.Count > 1 {
		count, number = q.Partition.Count, q.Partition.Number
	}
	page := transport.FeedPage{Entries: []transport.FeedEntry{}}
	batch := &pgx.Batch{}
	if q.Feed.Type == transport.AllTypes {
		batch.Queue(t.q.feedAll, q.Feed.Tenant, q.Since, limit+1, count, number, types)
		batch.Queue(t.q.headAll, q.Feed.Tenant)
	} else {
		batch.Queue(t.q.feedType, q.Feed.Tenant, q.Since, limit+1, count, number, types, q.Feed.Type)
		batch.Queue(t.q.headType, q.Feed.Tenant, q.Feed.Type)
	}
	res, pending, err := t.send(ctx, batch, p)
	if err != nil {
		return page, false, err
	}
	defer res.Close()
	rows, err := res.Query()
	if err != nil {
		return page, false, err
	}
	var e transport.FeedEntry
	var payload, legacy []byte
	size := 0
	_, err = pgx.ForEachRow(rows, []any{&e.Sequence, &e.AggregateType, &e.AggregateID, &e.Version, &e.Stored, &payload, &legacy}, func() error {
		if len(page.Entries) == limit {
			page.HasMore = true
			return errPageFull
		}
		var err error
		if e.Events, err = decodePayload(nil, payload, legacy); err != nil {
			return err
		}
		payload, legacy = nil, nil // the entry keeps them
		for i := range e.Events {
			size += transport.EventBytes(&e.Events[i])
		}
		if len(page.Entries) > 0 && size > transport.MaxPageBytes {
			page.HasMore = true
			return errPageFull
		}
		page.Entries = append(page.Entries, e)
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return page, false, err
	}
	if err := res.QueryRow().Scan(&page.Head); err != nil {
		return page, false, err
	}
	return page, pending, nil
}

// FeedHead implements transport.Feeder.
func (t *Transport) FeedHead(ctx context.Context, feed transport.Scope) (int64, error) {
	const op = "feed head"
	ref := transport.Ref{Tenant: feed.Tenant, Type: feed.Type}
	if err := transport.CheckFeedHead(feed); err != nil {
		return 0, err
	}
	head, err := settled(ctx, t, func(p prelude) (int64, bool, error) {
		b := &pgx.Batch{}
		if feed.Type == transport.AllTypes {
			b.Queue(t.q.headAll, feed.Tenant)
		} else {
			b.Queue(t.q.headType, feed.Tenant, feed.Type)
		}
		res, pending, err := t.send(ctx, b, p)
		if err != nil {
			return 0, false, err
		}
		defer res.Close()
		var head int64
		return head, pending, res.QueryRow().Scan(&head)
	})
	if err != nil {
		return 0, failed(op, ref, err, false)
	}
	return head, nil
}

// FeedOverview implements transport.Feeder.
func (t *Transport) FeedOverview(ctx context.Context, tenant string) ([]transport.FeedInfo, error) {
	const op = "feed overview"
	ref := transport.Ref{Tenant: tenant}
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return nil, err
	}
	infos, err := settled(ctx, t, func(p prelude) ([]transport.FeedInfo, bool, error) {
		b := &pgx.Batch{}
		b.Queue(t.q.overview, tenant)
		res, pending, err := t.send(ctx, b, p)
		if err != nil {
			return nil, false, err
		}
		defer res.Close()
		rows, err := res.Query()
		if err != nil {
			return nil, false, err
		}
		infos := []transport.FeedInfo{}
		var i transport.FeedInfo
		_, err = pgx.ForEachRow(rows, []any{&i.AggregateType, &i.Aggregates, &i.Batches, &i.Events}, func() error {
			infos = append(infos, i)
			return nil
		})
		return infos, pending, err
	})
	if err != nil {
		return nil, failed(op, ref, err, false)
	}
	return infos, nil
}
