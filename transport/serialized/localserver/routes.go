package localserver

import (
	"net/http"
	"strconv"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

func (h *handler) load(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	q := r.URL.Query()
	since, err := intParam(q, "since", 0)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	limit, err := intParam(q, "limit", transport.DefaultLimit)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	if limit == 0 || limit > transport.MaxLimit {
		limit = transport.MaxLimit
	}
	page, err := h.backend.Load(r.Context(), ref, since, int(limit))
	if err == nil {
		page, err = h.boundLoad(r, ref, since, page)
	}
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	etag := etagOf(ref.Tenant, &page, since, limit)
	w.Header()["Etag"] = []string{etag}
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	events := page.Events
	if events == nil {
		events = []transport.Event{}
	}
	s := h.stream(w)
	s.b = append(s.b, `{"aggregateId":`...)
	s.b = wire.AppendString(s.b, ref.ID)
	s.b = append(s.b, `,"aggregateType":`...)
	s.b = wire.AppendString(s.b, ref.Type)
	s.b = append(s.b, `,"aggregateVersion":`...)
	s.b = strconv.AppendInt(s.b, page.Version, 10)
	s.b = append(s.b, `,"events":`...)
	if !s.events(events) {
		s.fail()
		return
	}
	s.b = append(s.b, `,"hasMore":`...)
	s.b = strconv.AppendBool(s.b, page.HasMore)
	s.b = append(s.b, '}')
	s.end()
}

// boundLoad makes sure one answer holds at most transport.MaxPageBytes of
// events (or a single batch), whatever the store returned: a store that
// bounds its pages, as the port asks, passes straight through; for one that
// does not, the page is read again batch by batch up to the bound, with
// HasMore set.
func (h *handler) boundLoad(r *http.Request, ref transport.Ref, since int64, page transport.Page) (transport.Page, error) {
	if page.Version-since <= 1 {
		return page, nil // one batch (or none): whole, however large
	}
	size := 0
	for i := range page.Events {
		size += transport.EventBytes(&page.Events[i])
	}
	if size <= transport.MaxPageBytes {
		return page, nil
	}
	out := transport.Page{Version: since}
	size = 0
	for v := since; v < page.Version; {
		p, err := h.backend.Load(r.Context(), ref, v, 1)
		if err != nil {
			return transport.Page{}, err
		}
		if len(p.Events) == 0 {
			break
		}
		n := 0
		for i := range p.Events {
			n += transport.EventBytes(&p.Events[i])
		}
		if len(out.Events) > 0 && size+n > transport.MaxPageBytes {
			out.HasMore = true
			return out, nil
		}
		out.Events = append(out.Events, p.Events...)
		out.Version, out.HasMore, size, v = p.Version, p.HasMore, size+n, p.Version
	}
	return out, nil
}

func (h *handler) exists(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ok, err := h.backend.Exists(r.Context(), ref)
	switch {
	case err != nil:
		h.fail(w, r, err, inPath)
	case ok:
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (h *handler) store(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	if !needJSON(w, r) {
		return
	}
	var req wire.StoreRequest
	if status, err := h.decode(w, r, &req); err != nil {
		bodyError(w, status, err)
		return
	}
	// The path is valid already: what is left to reject is the body.
	if err := transport.CheckStore(ref, req.Events, wire.ToExpected(req.ExpectedVersion)); err != nil {
		h.fail(w, r, err, inBody)
		return
	}
	if err := h.backend.Store(r.Context(), ref, req.Events, wire.ToExpected(req.ExpectedVersion)); err != nil {
		h.fail(w, r, err, inBody)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) storeBulk(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	if !needJSON(w, r) {
		return
	}
	var req wire.BulkRequest
	if status, err := h.decode(w, r, &req); err != nil {
		bodyError(w, status, err)
		return
	}
	batches := make([]transport.Batch, len(req.Batches))
	for i, b := range req.Batches {
		batches[i] = transport.Batch{AggregateID: b.AggregateID, Events: b.Events, Expected: wire.ToExpected(b.ExpectedVersion)}
	}
	// The path's scope is valid already: what is left to reject is the body.
	if err := transport.CheckStoreBulk(ref.Scope(), batches); err != nil {
		h.fail(w, r, err, inBody)
		return
	}
	if err := h.backend.StoreBulk(r.Context(), ref.Scope(), batches); err != nil {
		h.fail(w, r, err, inBody)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) deleteAggregate(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	h.delete(w, r, transport.DeleteAggregate(ref))
}

func (h *handler) deleteType(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	h.delete(w, r, transport.DeleteAllOfType(ref.Scope()))
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request, target transport.DeleteTarget) {
	token := r.URL.Query().Get("deleteToken")
	if token == "" {
		tok, err := h.backend.RequestDelete(r.Context(), target)
		if err != nil {
			h.fail(w, r, err, inPath)
			return
		}
		writeJSON(w, http.StatusOK, wire.DeleteResponse{DeleteToken: tok})
		return
	}
	if err := h.backend.ConfirmDelete(r.Context(), target, token); err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	ref, err := ref(r)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	lister, ok := h.backend.(transport.Lister)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this store cannot list aggregates")
		return
	}
	q := r.URL.Query()
	skip, err := intParam(q, "skip", 0)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	limit, err := intParam(q, "limit", transport.DefaultLimit)
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	page, err := lister.List(r.Context(), ref.Scope(), int(min(skip, 1<<31)), int(min(limit, transport.MaxLimit)))
	if err != nil {
		h.fail(w, r, err, inPath)
		return
	}
	resp := wire.ListResponse{Aggregates: make([]wire.ListItem, len(page.Aggregates)), HasMore: page.HasMore}
	for i, a := range page.Aggregates {
		resp.Aggregates[i] = wire.ListItem{AggregateID: a.AggregateID, AggregateType: a.AggregateType,
			AggregateVersion: a.AggregateVersion, LastUpdatedAt: a.LastUpdatedAt.UnixMilli()}
	}
	writeJSON(w, http.StatusOK, resp)
}
