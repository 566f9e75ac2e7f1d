package postgres

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

// ReadFeed implements transport.Feeder. Only numbered batches are read
// (see the package doc); a read that waits wakes when batches get numbers,
// here or in another process.
func (t *Transport) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	return commitsignal.ReadFeed(ctx, &t.signal, q, func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
		page, err := t.readFeed(ctx, q)
		if err != nil {
			return transport.FeedPage{}, 0, failed(op, ref, err, false)
		}
		return page, q.Since, nil
	})
}

func (t *Transport) readFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
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
	res := t.pool.SendBatch(ctx, batch)
	defer res.Close()
	rows, err := res.Query()
	if err != nil {
		return page, err
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
		return page, err
	}
	if err := res.QueryRow().Scan(&page.Head); err != nil {
		return page, err
	}
	return page, nil
}

// FeedHead implements transport.Feeder.
func (t *Transport) FeedHead(ctx context.Context, feed transport.Scope) (int64, error) {
	const op = "feed head"
	ref := transport.Ref{Tenant: feed.Tenant, Type: feed.Type}
	if err := transport.CheckFeedHead(feed); err != nil {
		return 0, err
	}
	var head int64
	var err error
	if feed.Type == transport.AllTypes {
		err = t.pool.QueryRow(ctx, t.q.headAll, feed.Tenant).Scan(&head)
	} else {
		err = t.pool.QueryRow(ctx, t.q.headType, feed.Tenant, feed.Type).Scan(&head)
	}
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
	rows, err := t.pool.Query(ctx, t.q.overview, tenant)
	if err != nil {
		return nil, failed(op, ref, err, false)
	}
	infos := []transport.FeedInfo{}
	var i transport.FeedInfo
	_, err = pgx.ForEachRow(rows, []any{&i.AggregateType, &i.Aggregates, &i.Batches, &i.Events}, func() error {
		infos = append(infos, i)
		return nil
	})
	if err != nil {
		return nil, failed(op, ref, err, false)
	}
	return infos, nil
}
