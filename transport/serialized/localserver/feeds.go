package localserver

import (
	"fmt"
	"net/http"

	"strconv"
	"time"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

// feeder returns the backend's feed, or answers 404 when it has none.
func (h *handler) feeder(w http.ResponseWriter) (transport.Feeder, bool) {
	f, ok := h.backend.(transport.Feeder)
	if !ok {
		writeError(w, http.StatusNotFound, "this store has no feeds")
	}
	return f, ok
}

// feedQuery reads GET /feeds/{feed}'s query: since, limit, partitionCount
// with partitionNumber, filterType (repeatable) and waitTime in ms.
func feedQuery(r *http.Request) (transport.FeedQuery, error) {
	q := r.URL.Query()
	fq := transport.FeedQuery{Feed: transport.Scope{Tenant: r.Header.Get(wire.HeaderTenantID), Type: r.PathValue("feed")}}
	if err := transport.CheckFeedHead(fq.Feed); err != nil {
		return fq, err
	}
	if q.Has("from") || q.Has("to") {
		return fq, invalid("query parameters from and to are not supported by this server; page with since")
	}
	var err error
	if fq.Since, err = intParam(q, "since", 0); err != nil {
		return fq, err
	}
	limit, err := intParam(q, "limit", 0)
	if err != nil {
		return fq, err
	}
	if limit > transport.MaxLimit {
		return fq, invalid(fmt.Sprintf("limit must be from 1 to %d", transport.MaxLimit))
	}
	fq.Limit = int(limit)
	count, err := intParam(q, "partitionCount", 0)
	if err != nil {
		return fq, err
	}
	number, err := intParam(q, "partitionNumber", 0)
	if err != nil {
		return fq, err
	}
	if count > 1<<20 || number > 1<<20 {
		return fq, invalid("partitionCount and partitionNumber must be at most 1048576")
	}
	if q.Has("partitionNumber") && !q.Has("partitionCount") {
		return fq, invalid("partitionNumber needs partitionCount")
	}
	fq.Partition = transport.Partition{Count: int(count), Number: int(number)}
	fq.EventTypes = q["filterType"]
	wait, err := intParam(q, "waitTime", 0)
	if err != nil {
		return fq, err
	}
	if wait > transport.MaxFeedWait.Milliseconds() {
		return fq, invalid("waitTime must be from 0 to 60000 milliseconds")
	}
	fq.Wait = time.Duration(wait) * time.Millisecond
	return fq, transport.CheckFeed(fq)
}

func (h *handler) readFeed(w http.ResponseWriter, r *http.Request) {
	f, ok := h.feeder(w)
	if !ok {
		return
	}
	q, err := feedQuery(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	page, err := h.readFeedPage(r.Context(), f, q)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	boundFeed(&page)
	s := h.stream(w)
	s.b = append(s.b, `{"entries":[`...)
	for i := range page.Entries {
		e := &page.Entries[i]
		if i > 0 {
			s.b = append(s.b, ',')
		}
		s.b = append(s.b, `{"sequenceNumber":`...)
		s.b = strconv.AppendInt(s.b, e.Sequence, 10)
		s.b = append(s.b, `,"aggregateId":`...)
		s.b = wire.AppendString(s.b, e.AggregateID)
		s.b = append(s.b, `,"timestamp":`...)
		s.b = strconv.AppendInt(s.b, e.Stored.UnixMilli(), 10)
		s.b = append(s.b, `,"feedName":`...)
		s.b = wire.AppendString(s.b, e.AggregateType)
		if e.AggregateType != "" {
			s.b = append(s.b, `,"aggregateType":`...)
			s.b = wire.AppendString(s.b, e.AggregateType)
		}
		if e.Version != 0 {
			s.b = append(s.b, `,"aggregateVersion":`...)
			s.b = strconv.AppendInt(s.b, e.Version, 10)
		}
		s.b = append(s.b, `,"events":`...)
		if !s.events(e.Events) {
			s.fail()
			return
		}
		s.b = append(s.b, '}')
		s.flush()
	}
	s.b = append(s.b, `],"hasMore":`...)
	s.b = strconv.AppendBool(s.b, page.HasMore)
	s.b = append(s.b, `,"currentSequenceNumber":`...)
	s.b = strconv.AppendInt(s.b, page.Head, 10)
	s.b = append(s.b, '}')
	s.end()
}

func (h *handler) feedHead(w http.ResponseWriter, r *http.Request) {
	f, ok := h.feeder(w)
	if !ok {
		return
	}
	feed := transport.Scope{Tenant: r.Header.Get(wire.HeaderTenantID), Type: r.PathValue("feed")}
	if err := transport.CheckFeedHead(feed); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	head, err := f.FeedHead(r.Context(), feed)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	w.Header().Set(wire.HeaderSequenceNumber, strconv.FormatInt(head, 10))
	w.WriteHeader(http.StatusOK)
}

func (h *handler) feeds(w http.ResponseWriter, r *http.Request) {
	f, ok := h.feeder(w)
	if !ok {
		return
	}
	infos, err := f.FeedOverview(r.Context(), r.Header.Get(wire.HeaderTenantID))
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	resp := wire.FeedsResponse{Feeds: make([]wire.FeedInfo, len(infos))}
	for i, in := range infos {
		resp.Feeds[i] = wire.FeedInfo{AggregateType: in.AggregateType, AggregateCount: in.Aggregates, BatchCount: in.Batches, EventCount: in.Events}
	}
	writeJSON(w, http.StatusOK, resp)
}
