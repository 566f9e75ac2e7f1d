package serialized

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

func aggregatePath(ref transport.Ref) string {
	return "/aggregates/" + url.PathEscape(ref.Type) + "/" + url.PathEscape(ref.ID)
}

func typePath(typ string) string { return "/aggregates/" + url.PathEscape(typ) }

func invalid(op string, ref transport.Ref, err error) error {
	return transport.Wrap(err, op, ref, transport.ErrInvalid)
}

// ErrInconsistentPage is the cause of the error (of kind
// transport.ErrUnavailable) that Load, ReadFeed and List return when the
// server's page contradicts the request or itself: a Load page whose version
// does not move past since, goes back, or moves further than its events
// allow, or that says hasMore without an event; a feed page whose entries
// are not all after since and in rising sequence order, lack a sequence
// number or an aggregate id, or that says hasMore without an entry; a List
// page that says hasMore without an aggregate. Taking such a page would
// replay events, commit a version that is not the aggregate's, or read the
// same page forever. errors.Is matches both this error and
// transport.ErrUnavailable.
var ErrInconsistentPage = errors.New("the server's page is inconsistent")

// malformed is the error of an answer that does not decode.
func (c *Client) malformed(op string, ref transport.Ref, status int, why string) *transport.Error {
	e := transport.NewError(op, ref, transport.ErrUnavailable)
	e.StatusCode, e.Messages = status, []string{"malformed response: " + c.clean(why)}
	return e
}

// inconsistent is the error of a page that contradicts the request or itself.
func inconsistent(op string, ref transport.Ref, status int, format string, args ...any) *transport.Error {
	e := transport.NewError(op, ref, transport.ErrUnavailable)
	e.StatusCode, e.Err = status, ErrInconsistentPage
	e.Messages = []string{fmt.Sprintf(format, args...)}
	return e
}

// checkLoadPage checks that a Load page follows from since: each batch
// raises the version by one and holds at least one event, so a page's
// version is since when it is empty and otherwise above since by at most its
// number of events; and hasMore needs a page that advanced.
func checkLoadPage(op string, ref transport.Ref, status int, since int64, p *wire.LoadPage) error {
	n := int64(len(p.Events))
	switch {
	case p.AggregateVersion < since:
		return inconsistent(op, ref, status, "the page's version %d is below since %d", p.AggregateVersion, since)
	case n > 0 && p.AggregateVersion == since:
		return inconsistent(op, ref, status, "the page has %d events but its version stays at since %d", n, since)
	case p.AggregateVersion-since > n:
		return inconsistent(op, ref, status, "the page's version %d is %d past since %d, with %d events",
			p.AggregateVersion, p.AggregateVersion-since, since, n)
	case p.HasMore && n == 0:
		return inconsistent(op, ref, status, "the page says hasMore but holds no event")
	}
	return nil
}

// Load implements transport.Transport: GET /aggregates/{type}/{id}.
func (c *Client) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	const op = "load"
	if err := transport.CheckLoad(ref, since, limit); err != nil {
		return transport.Page{}, err
	}
	limit = transport.PageLimit(limit)
	q := "since=" + strconv.FormatInt(since, 10) + "&limit=" + strconv.Itoa(limit)
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodGet, path: aggregatePath(ref), query: q})
	if err != nil {
		return transport.Page{}, err
	}
	var lr wire.LoadPage
	if err := wire.DecodeLoadPage(res.body, &lr); err != nil {
		e := c.malformed(op, ref, res.status, err.Error())
		return transport.Page{}, e
	}
	if err := checkLoadPage(op, ref, res.status, since, &lr); err != nil {
		return transport.Page{}, err
	}
	if lr.Events == nil {
		lr.Events = []transport.Event{}
	}
	return transport.Page{Events: lr.Events, Version: lr.AggregateVersion, HasMore: lr.HasMore}, nil
}

// Store implements transport.Transport: POST /aggregates/{type}/{id}/events.
func (c *Client) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	const op = "store"
	if err := transport.CheckStore(ref, events, expected); err != nil {
		return err
	}
	body, err := wire.EncodeStoreRequest(wire.StoreRequest{Events: events, ExpectedVersion: wire.FromExpected(expected)})
	if err != nil {
		return invalid(op, ref, err)
	}
	_, err = c.do(ctx, call{op: op, ref: ref, method: http.MethodPost, path: aggregatePath(ref) + "/events", body: body})
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.Expected.IsAny() {
			te.Expected = expected
		}
	}
	return err
}

// StoreBulk implements transport.Transport: POST /aggregates/{type}/events.
func (c *Client) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	const op = "store bulk"
	ref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckStoreBulk(scope, batches); err != nil {
		return err
	}
	req := wire.BulkRequest{Batches: make([]wire.BulkBatch, len(batches))}
	for i, b := range batches {
		req.Batches[i] = wire.BulkBatch{AggregateID: b.AggregateID, Events: b.Events, ExpectedVersion: wire.FromExpected(b.Expected)}
	}
	body, err := wire.EncodeBulkRequest(req)
	if err != nil {
		return invalid(op, ref, err)
	}
	_, err = c.do(ctx, call{op: op, ref: ref, method: http.MethodPost, path: typePath(scope.Type) + "/events", body: body})
	return err
}

// Exists implements transport.Transport: HEAD /aggregates/{type}/{id}.
func (c *Client) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	const op = "exists"
	if err := transport.CheckExists(ref); err != nil {
		return false, err
	}
	_, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodHead, path: aggregatePath(ref)})
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	}
	return false, err
}

func isNotFound(err error) bool { return errors.Is(err, transport.ErrNotFound) }

func deletePath(target transport.DeleteTarget) string {
	if target.AllOfType {
		return typePath(target.Type)
	}
	return aggregatePath(transport.Ref{Type: target.Type, ID: target.ID})
}

// RequestDelete implements transport.Transport: DELETE without a token.
func (c *Client) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	const op = "request delete"
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return "", err
	}
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodDelete, path: deletePath(target)})
	if err != nil {
		return "", err
	}
	var dr wire.DeleteResponse
	if err := json.Unmarshal(res.body, &dr); err != nil || dr.DeleteToken == "" {
		e := c.malformed(op, ref, res.status, "no deleteToken")
		return "", e
	}
	return dr.DeleteToken, nil
}

// ConfirmDelete implements transport.Transport: DELETE with the token.
// 200 and 204 both mean done; 403 is transport.ErrBadDeleteToken.
func (c *Client) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	const op = opConfirmDelete
	ref := target.Ref()
	if err := transport.CheckDelete(op, target); err != nil {
		return err
	}
	if token == "" {
		return transport.NewError(op, ref, transport.ErrBadDeleteToken)
	}
	_, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodDelete, path: deletePath(target),
		query: "deleteToken=" + url.QueryEscape(token)})
	return err
}

// List implements transport.Lister: GET /aggregates/{type}.
func (c *Client) List(ctx context.Context, scope transport.Scope, skip, limit int) (transport.ListPage, error) {
	const op = "list"
	ref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	if err := transport.CheckList(scope, skip, limit); err != nil {
		return transport.ListPage{}, err
	}
	limit = transport.PageLimit(limit)
	q := "skip=" + strconv.Itoa(skip) + "&limit=" + strconv.Itoa(limit)
	res, err := c.do(ctx, call{op: op, ref: ref, method: http.MethodGet, path: typePath(scope.Type), query: q})
	if err != nil {
		return transport.ListPage{}, err
	}
	var lr wire.ListResponse
	if err := json.Unmarshal(res.body, &lr); err != nil {
		e := c.malformed(op, ref, res.status, err.Error())
		return transport.ListPage{}, e
	}
	if lr.HasMore && len(lr.Aggregates) == 0 {
		return transport.ListPage{}, inconsistent(op, ref, res.status, "the page says hasMore but holds no aggregate")
	}
	page := transport.ListPage{Aggregates: make([]transport.AggregateInfo, len(lr.Aggregates)), HasMore: lr.HasMore}
	for i, a := range lr.Aggregates {
		page.Aggregates[i] = transport.AggregateInfo{AggregateID: a.AggregateID, AggregateType: a.AggregateType,
			AggregateVersion: a.AggregateVersion, LastUpdatedAt: time.UnixMilli(a.LastUpdatedAt)}
	}
	return page, nil
}

// opConfirmDelete is the one call on which a 403 means a bad delete token.
const opConfirmDelete = "confirm delete"
