package serialized

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

var _ transport.Feeder = (*Client)(nil)

func feedPath(feed string) string { return "/feeds/" + url.PathEscape(feed) }

// ReadFeed implements transport.Feeder: GET /feeds/{type} or /feeds/_all,
// retried like every read. With q.Wait the server holds an empty read up to
// that long (waitTime), and the attempt's timeout stretches by as much.
//
// The hosted service names an entry's type only through feedName and does
// not send the aggregate version: entries read from it have Version 0.
func (c *Client) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	var b strings.Builder
	b.WriteString("since=")
	b.WriteString(strconv.FormatInt(q.Since, 10))
	b.WriteString("&limit=")
	b.WriteString(strconv.Itoa(transport.PageLimit(q.Limit)))
	if q.Partition.Count > 0 {
		b.WriteString("&partitionCount=")
		b.WriteString(strconv.Itoa(q.Partition.Count))
		b.WriteString("&partitionNumber=")
		b.WriteString(strconv.Itoa(q.Partition.Number))
	}
	for _, t := range q.EventTypes {
		b.WriteString("&filterType=")
		b.WriteString(url.QueryEscape(t))
	}
	if q.Wait > 0 {
		b.WriteString("&waitTime=")
		b.WriteString(strconv.FormatInt(q.Wait.Milliseconds(), 10))
	}
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodGet, path: feedPath(q.Feed.Type), query: b.String(), wait: q.Wait})
	if err != nil {
		return transport.FeedPage{}, err
	}
	var fr wire.FeedResponse
	if err := wire.DecodeFeedResponse(res.body, &fr); err != nil {
		e := c.malformed(op, ref, res.status, err.Error())
		return transport.FeedPage{}, e
	}
	if err := checkFeedPage(op, ref, res.status, q.Since, &fr); err != nil {
		return transport.FeedPage{}, err
	}
	page := transport.FeedPage{Entries: make([]transport.FeedEntry, len(fr.Entries)), HasMore: fr.HasMore, Head: fr.CurrentSequenceNumber}
	for i, e := range fr.Entries {
		typ := e.AggregateType
		if typ == "" {
			typ = e.FeedName
		}
		if typ == "" || typ == transport.AllTypes {
			typ = q.Feed.Type
		}
		if e.Events == nil {
			e.Events = []transport.Event{}
		}
		page.Entries[i] = transport.FeedEntry{Sequence: e.SequenceNumber, AggregateType: typ, AggregateID: e.AggregateID,
			Version: e.AggregateVersion, Stored: time.UnixMilli(e.Timestamp), Events: e.Events}
	}
	return page, nil
}

// checkFeedPage checks that a feed page follows from since: every entry
// has a sequence number after since and after the entry before it, and an
// aggregate id; and hasMore needs a page that advanced.
func checkFeedPage(op string, ref transport.Ref, status int, since int64, fr *wire.FeedResponse) error {
	prev := since
	for i := range fr.Entries {
		e := &fr.Entries[i]
		if e.SequenceNumber <= prev {
			if e.SequenceNumber == 0 {
				return inconsistent(op, ref, status, "entry %d has no sequence number", i)
			}
			return inconsistent(op, ref, status, "entry %d has sequence number %d, not after %d", i, e.SequenceNumber, prev)
		}
		if e.AggregateID == "" {
			return inconsistent(op, ref, status, "entry %d (sequence number %d) has no aggregateId", i, e.SequenceNumber)
		}
		prev = e.SequenceNumber
	}
	if fr.HasMore && len(fr.Entries) == 0 {
		return inconsistent(op, ref, status, "the page says hasMore but holds no entry")
	}
	return nil
}

// FeedHead implements transport.Feeder: HEAD /feeds/{type} and its
// Serialized-SequenceNumber-Current header (read case-insensitively).
func (c *Client) FeedHead(ctx context.Context, feed transport.Scope) (int64, error) {
	const op = "feed head"
	ref := transport.Ref{Tenant: feed.Tenant, Type: feed.Type}
	if err := transport.CheckFeedHead(feed); err != nil {
		return 0, err
	}
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodHead, path: feedPath(feed.Type)})
	if err != nil {
		return 0, err
	}
	head, perr := strconv.ParseInt(res.header.Get(wire.HeaderSequenceNumber), 10, 64)
	if perr != nil || head < 0 {
		e := c.malformed(op, ref, res.status, "no "+wire.HeaderSequenceNumber+" header")
		return 0, e
	}
	return head, nil
}

// FeedOverview implements transport.Feeder: GET /feeds.
func (c *Client) FeedOverview(ctx context.Context, tenant string) ([]transport.FeedInfo, error) {
	const op = "feed overview"
	ref := transport.Ref{Tenant: tenant}
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return nil, err
	}
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodGet, path: "/feeds"})
	if err != nil {
		return nil, err
	}
	var fr wire.FeedsResponse
	if err := json.Unmarshal(res.body, &fr); err != nil {
		e := c.malformed(op, ref, res.status, err.Error())
		return nil, e
	}
	infos := make([]transport.FeedInfo, len(fr.Feeds))
	for i, f := range fr.Feeds {
		infos[i] = transport.FeedInfo{AggregateType: f.AggregateType, Aggregates: f.AggregateCount, Batches: f.BatchCount, Events: f.EventCount}
	}
	return infos, nil
}
