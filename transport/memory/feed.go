package memory

import (
	"context"
	"sort"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

// feedLog is one tenant's feed: every stored batch in commit order. Entries
// are appended under the transport's write lock, so sequence order is commit
// order and a reader can never see a number before a lower one.
type feedLog struct {
	entries []transport.FeedEntry
	last    int64            // the last sequence number given out
	heads   map[string]int64 // per aggregate type
}

func (t *Transport) feedLocked(tenant string) *feedLog {
	f := t.feeds[tenant]
	if f == nil {
		f = &feedLog{heads: make(map[string]int64)}
		t.feeds[tenant] = f
	}
	return f
}

// recordLocked adds the batch just appended to s to its tenant's feed.
func (t *Transport) recordLocked(ref transport.Ref, s *stream) {
	f := t.feedLocked(ref.Tenant)
	f.last++
	v := s.version()
	from := 0
	if v > 1 {
		from = s.ends[v-2]
	}
	end := s.ends[v-1]
	f.entries = append(f.entries, transport.FeedEntry{
		Sequence: f.last, AggregateType: ref.Type, AggregateID: ref.ID, Version: v,
		Stored: s.updated, Events: s.events[from:end:end],
	})
	f.heads[ref.Type] = f.last
}

// forgetLocked drops the deleted aggregates' entries from the feed.
func (t *Transport) forgetLocked(target transport.DeleteTarget) {
	f := t.feeds[target.Tenant]
	if f == nil {
		return
	}
	kept := f.entries[:0]
	for _, e := range f.entries {
		if e.AggregateType == target.Type && (target.AllOfType || e.AggregateID == target.ID) {
			continue
		}
		kept = append(kept, e)
	}
	clear(f.entries[len(kept):])
	f.entries = kept
}

// ReadFeed implements transport.Feeder. An empty read with q.Wait waits for
// the next commit without polling.
func (t *Transport) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	limit := transport.PageLimit(q.Limit)
	return commitsignal.ReadFeed(ctx, &t.signal, q, func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
		if err := canceled(ctx, op, ref); err != nil {
			return transport.FeedPage{}, 0, err
		}
		page, scanned := t.readFeed(q, limit)
		return page, scanned, nil
	})
}

// readFeed returns a page and the last sequence number it looked at.
func (t *Transport) readFeed(q transport.FeedQuery, limit int) (transport.FeedPage, int64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	page := transport.FeedPage{Entries: []transport.FeedEntry{}}
	f := t.feeds[q.Feed.Tenant]
	if f == nil {
		return page, q.Since
	}
	page.Head = f.head(q.Feed.Type)
	all := f.entries
	i := sort.Search(len(all), func(i int) bool { return all[i].Sequence > q.Since })
	scanned := q.Since
	for ; i < len(all); i++ {
		e := &all[i]
		if !q.Matches(e) {
			scanned = e.Sequence
			continue
		}
		if len(page.Entries) == limit {
			page.HasMore = true
			break
		}
		page.Entries = append(page.Entries, *e)
		scanned = e.Sequence
	}
	return page, scanned
}

func (f *feedLog) head(feed string) int64 {
	if feed == transport.AllTypes {
		return f.last
	}
	return f.heads[feed]
}

// FeedHead implements transport.Feeder.
func (t *Transport) FeedHead(ctx context.Context, feed transport.Scope) (int64, error) {
	if err := transport.CheckFeedHead(feed); err != nil {
		return 0, err
	}
	if err := canceled(ctx, "feed head", transport.Ref{Tenant: feed.Tenant, Type: feed.Type}); err != nil {
		return 0, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if f := t.feeds[feed.Tenant]; f != nil {
		return f.head(feed.Type), nil
	}
	return 0, nil
}

// FeedOverview implements transport.Feeder.
func (t *Transport) FeedOverview(ctx context.Context, tenant string) ([]transport.FeedInfo, error) {
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return nil, err
	}
	if err := canceled(ctx, "feed overview", transport.Ref{Tenant: tenant}); err != nil {
		return nil, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	infos := []transport.FeedInfo{}
	for scope, streams := range t.scopes {
		if scope.Tenant != tenant || len(streams) == 0 {
			continue
		}
		info := transport.FeedInfo{AggregateType: scope.Type, Aggregates: int64(len(streams))}
		for _, s := range streams {
			info.Batches += s.version()
			info.Events += int64(len(s.events))
		}
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].AggregateType < infos[j].AggregateType })
	return infos, nil
}
