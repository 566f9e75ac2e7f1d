package postgres

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

// ReadFeed implements transport.Feeder. Only numbered batches are read
// (see the package doc); a read first makes sure that every batch
// committed before it began has its number (see settle). A read that
// waits wakes when batches get numbers, here or in another process.
func (t *Transport) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	first := true
	return commitsignal.ReadFeed(ctx, &t.signal, q, func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
		var page transport.FeedPage
		var err error
		if first {
			// What committed before this call must be in its answer.
			first = false
			page, err = settled(ctx, t, func(pending string) (transport.FeedPage, bool, error) { return t.readFeed(ctx, q, pending) })
		} else {
			// Woken by a numbering: what is numbered is what is new.
			page, _, err = t.readFeed(ctx, q, "")
		}
		if err != nil {
			return transport.FeedPage{}, 0, failed(op, ref, err, false)
		}
		return page, q.Since, nil
	})
}

// settled runs read, which also tells whether some committed batch has
// no feed number yet (it queues the pending statement, when given, before
// its own); if so, it settles and reads again.
func settled[T any](ctx context.Context, t *Transport, read func(pending string) (T, bool, error)) (T, error) {
	v, pending, err := read(t.q.pendingNow)
	if err != nil || !pending {
		return v, err
	}
	if err := t.settle(ctx); err != nil {
		return v, err
	}
	v, _, err = read("")
	return v, err
}

// sendWithPending sends b as one read-only transaction with one snapshot
// (so a page and its head agree), after the pending statement when there
// is one, and reads that statement's answer. The caller reads b's results
// and closes them.
func (t *Transport) sendWithPending(ctx context.Context, b *pgx.Batch, pendingSQL string) (pgx.BatchResults, bool, error) {
	head := []*pgx.QueuedQuery{{SQL: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"}}
	if pendingSQL != "" {
		head = append(head, &pgx.QueuedQuery{SQL: pendingSQL})
	}
	b.QueuedQueries = append(head, b.QueuedQueries...)
	b.Queue("COMMIT")
	res := t.pool.SendBatch(ctx, b)
	if _, err := res.Exec(); err != nil {
		_ = res.Close()
		return nil, false, err
	}
	var pending bool
	if pendingSQL != "" {
		if err := res.QueryRow().Scan(&pending); err != nil {
			_ = res.Close()
			return nil, false, err
		}
	}
	return res, pending, nil
}

func (t *Transport) readFeed(ctx context.Context, q transport.FeedQuery, pendingSQL string) (transport.FeedPage, bool, error) {
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
	res, pending, err := t.sendWithPending(ctx, batch, pendingSQL)
	if err != nil {
		return page, false, err
	}
	defer res.Close()
	rows, err := res.Query()
	if err != nil {
		return page, false, err
	}
	var e transport.FeedEntry
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&e.Sequence, &e.AggregateType, &e.AggregateID, &e.Version, &e.Stored, &data}, func() error {
		if len(page.Entries) == limit {
			page.HasMore = true
			return nil
		}
		e.Events = nil
		if err := json.Unmarshal(data, &e.Events); err != nil {
			return err
		}
		page.Entries = append(page.Entries, e)
		return nil
	})
	if err != nil {
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
	head, err := settled(ctx, t, func(pendingSQL string) (int64, bool, error) {
		b := &pgx.Batch{}
		if feed.Type == transport.AllTypes {
			b.Queue(t.q.headAll, feed.Tenant)
		} else {
			b.Queue(t.q.headType, feed.Tenant, feed.Type)
		}
		res, pending, err := t.sendWithPending(ctx, b, pendingSQL)
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
	infos, err := settled(ctx, t, func(pendingSQL string) ([]transport.FeedInfo, bool, error) {
		b := &pgx.Batch{}
		b.Queue(t.q.overview, tenant)
		res, pending, err := t.sendWithPending(ctx, b, pendingSQL)
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
