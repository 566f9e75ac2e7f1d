package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/transport"
)

// pageSize is the number of rows a list or history page shows.
const pageSize = 50

// historyPartitions narrows the scan of a type's feed to one aggregate's
// share when a history page looks for that aggregate's batches.
const historyPartitions = 1024

type pageData struct {
	Title  string
	Error  string
	Notice string
	Tenant string
	Keyed  bool
	Nav    string

	Types    []transport.FeedInfo
	NoFeed   bool
	NoLister bool

	Type       string
	Query      string
	Aggregates []transport.AggregateInfo
	Skip, Prev int
	Next       int
	HasPrev    bool
	HasNext    bool

	ID          string
	Batches     []batchView
	Since       int64
	NextSince   int64
	HasNewer    bool
	HasOlder    bool
	OlderSince  int64
	NoTimes     bool
	FeedName    string
	FeedChoices []string
}

type batchView struct {
	Version int64
	Stored  string
	Events  []eventView
}

type eventView struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Data      string `json:"data"`
	Encrypted bool   `json:"encrypted"`
}

func (c *Console) parse() error {
	funcs := template.FuncMap{"query": queryString}
	c.pages = map[string]*template.Template{}
	for _, name := range []string{"login", "error", "home", "type", "aggregate", "feed"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return err
		}
		c.pages[name] = t
	}
	return nil
}

// queryString builds "?k=v&..." from pairs, leaving out empty values.
func queryString(pairs ...any) template.URL {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		v := toString(pairs[i+1])
		if v == "" {
			continue
		}
		if b.Len() == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(template.URLQueryEscaper(pairs[i]))
		b.WriteByte('=')
		b.WriteString(template.URLQueryEscaper(v))
	}
	return template.URL(b.String())
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, d pageData) {
	d.Keyed = c.keyed
	if d.Tenant == "" {
		d.Tenant = r.URL.Query().Get("tenant")
	}
	var buf bytes.Buffer
	if err := c.pages[page].Execute(&buf, d); err != nil {
		c.log.Error("console page failed", zap.String("page", page), zap.Error(err))
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// tenant reads and checks the tenant of a request; the default tenant is "".
func tenant(r *http.Request) (string, error) {
	t := strings.TrimSpace(r.URL.Query().Get("tenant"))
	if err := transport.ValidateTenant(t); err != nil {
		return "", errors.New("the tenant must be a UUID, or empty for the default tenant")
	}
	return t, nil
}

// storeUnavailable is all a page says of a store failure: the cause (which
// may name a database user, host or file) goes to the log only.
const storeUnavailable = "The store is unavailable. The server's log says why."

// failed renders a store error without its internals.
func (c *Console) failed(w http.ResponseWriter, r *http.Request, d pageData, err error) {
	status, msg := c.storeError(r, err)
	d.Error = msg
	d.Title = "Error"
	c.render(w, r, status, "error", d)
}

// storeError returns the status and message for a store error: a bad
// request or a missing aggregate say so; anything else is "unavailable",
// and its cause is logged.
func (c *Console) storeError(r *http.Request, err error) (int, string) {
	switch {
	case errors.Is(err, transport.ErrInvalid):
		var te *transport.Error
		if errors.As(err, &te) && len(te.Messages) > 0 {
			return http.StatusBadRequest, te.Messages[0]
		}
		return http.StatusBadRequest, "That request is not valid."
	case errors.Is(err, transport.ErrNotFound):
		return http.StatusNotFound, "That aggregate does not exist (or was deleted)."
	}
	c.log.Warn("console read failed", zap.String("path", httpguard.Truncate(r.URL.Path)), zap.Error(err))
	return http.StatusServiceUnavailable, storeUnavailable
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	t, err := tenant(r)
	d := pageData{Title: "Aggregate types", Nav: "types", Tenant: t}
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "error", d)
		return
	}
	f, ok := c.tr.(transport.Feeder)
	if !ok {
		d.NoFeed = true
		c.render(w, r, http.StatusOK, "home", d)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	d.Types, err = f.FeedOverview(ctx, t)
	if err != nil {
		c.failed(w, r, d, err)
		return
	}
	c.render(w, r, http.StatusOK, "home", d)
}

func (c *Console) typePage(w http.ResponseWriter, r *http.Request) {
	t, err := tenant(r)
	typ := r.PathValue("type")
	d := pageData{Title: typ, Nav: "types", Tenant: t, Type: typ, Query: strings.TrimSpace(r.URL.Query().Get("q"))}
	if err == nil {
		err = transport.ValidateAggregateType(typ)
	}
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "error", d)
		return
	}
	l, ok := c.tr.(transport.Lister)
	if !ok {
		d.NoLister = true
		c.render(w, r, http.StatusOK, "type", d)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	scope := transport.Scope{Tenant: t, Type: typ}
	if d.Query != "" {
		// Search: scan the list for ids holding the text, a bounded number
		// of pages deep.
		q := strings.ToLower(d.Query)
		for skip, pages := 0, 0; pages < 20 && len(d.Aggregates) < pageSize; pages++ {
			p, err := l.List(ctx, scope, skip, transport.MaxLimit)
			if err != nil {
				c.failed(w, r, d, err)
				return
			}
			for _, a := range p.Aggregates {
				if strings.Contains(a.AggregateID, q) && len(d.Aggregates) < pageSize {
					d.Aggregates = append(d.Aggregates, a)
				}
			}
			if !p.HasMore {
				break
			}
			skip += len(p.Aggregates)
		}
		c.render(w, r, http.StatusOK, "type", d)
		return
	}
	d.Skip, _ = strconv.Atoi(r.URL.Query().Get("skip"))
	d.Skip = max(d.Skip, 0)
	p, err := l.List(ctx, scope, d.Skip, pageSize)
	if err != nil {
		c.failed(w, r, d, err)
		return
	}
	d.Aggregates = p.Aggregates
	d.HasNext, d.Next = p.HasMore, d.Skip+len(p.Aggregates)
	d.HasPrev, d.Prev = d.Skip > 0, max(d.Skip-pageSize, 0)
	c.render(w, r, http.StatusOK, "type", d)
}

func (c *Console) aggregatePage(w http.ResponseWriter, r *http.Request) {
	t, err := tenant(r)
	typ, id := r.PathValue("type"), r.PathValue("id")
	d := pageData{Title: typ + " " + id, Nav: "types", Tenant: t, Type: typ, ID: id}
	ref := transport.Ref{Tenant: t, Type: typ, ID: id}
	if err == nil {
		err = ref.Validate()
	}
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "error", d)
		return
	}
	d.Since, _ = strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	d.Since = max(d.Since, 0)
	ctx, cancel := requestContext(r)
	defer cancel()
	batches, more, err := c.history(ctx, ref, d.Since)
	if err != nil {
		c.failed(w, r, d, err)
		return
	}
	if len(batches) == 0 && d.Since == 0 {
		c.failed(w, r, d, transport.NewError("load", ref, transport.ErrNotFound))
		return
	}
	d.Batches = batches
	d.NoTimes = len(batches) > 0 && batches[0].Stored == ""
	if more && len(batches) > 0 {
		d.HasNewer, d.NextSince = true, batches[len(batches)-1].Version
	}
	d.HasOlder, d.OlderSince = d.Since > 0, max(d.Since-pageSize, 0)
	c.render(w, r, http.StatusOK, "aggregate", d)
}

// history returns up to pageSize batches of ref after version since, and
// whether more follow. With a Feeder it reads the aggregate's share of its
// type's feed, which carries each batch's time; otherwise it loads batch by
// batch, without times.
func (c *Console) history(ctx context.Context, ref transport.Ref, since int64) ([]batchView, bool, error) {
	if f, ok := c.tr.(transport.Feeder); ok {
		q := transport.FeedQuery{
			Feed:      ref.Scope(),
			Limit:     transport.MaxLimit,
			Partition: transport.Partition{Count: historyPartitions, Number: transport.PartitionOf(ref.ID, historyPartitions)},
		}
		var out []batchView
		n, size := int64(0), 0
		for {
			p, err := f.ReadFeed(ctx, q)
			if err != nil {
				return nil, false, err
			}
			for _, e := range p.Entries {
				if e.AggregateID != ref.ID {
					continue
				}
				n++
				v := e.Version
				if v == 0 {
					v = n
				}
				if v <= since {
					continue
				}
				if len(out) == pageSize || (len(out) > 0 && size+batchBytes(e.Events) > historyBytes) {
					return out, true, nil
				}
				size += batchBytes(e.Events)
				out = append(out, batchView{Version: v, Stored: e.Stored.UTC().Format("2006-01-02 15:04:05.000 UTC"), Events: events(e.Events)})
			}
			if !p.HasMore || len(p.Entries) == 0 {
				return out, false, nil
			}
			q.Since = p.Entries[len(p.Entries)-1].Sequence
		}
	}
	var out []batchView
	size := 0
	for v := since; len(out) < pageSize; v++ {
		p, err := c.tr.Load(ctx, ref, v, 1)
		if err != nil {
			return nil, false, err
		}
		if len(p.Events) == 0 {
			return out, false, nil
		}
		if size += batchBytes(p.Events); size > historyBytes && len(out) > 0 {
			return out, true, nil
		}
		out = append(out, batchView{Version: p.Version, Events: events(p.Events)})
		if !p.HasMore {
			return out, false, nil
		}
	}
	return out, true, nil
}

func events(in []transport.Event) []eventView {
	out := make([]eventView, len(in))
	for i, e := range in {
		out[i] = eventView{Type: e.EventType, ID: e.EventID, Data: shown(e.Data), Encrypted: e.EncryptedData != ""}
	}
	return out
}

// shown is data as a page shows it: indented, or, past maxShownData, its
// beginning and how long it is.
func shown(data json.RawMessage) string {
	if len(data) <= maxShownData {
		return pretty(data)
	}
	cut := maxShownData
	for cut > 0 && !utf8.RuneStart(data[cut]) {
		cut--
	}
	return string(data[:cut]) + "\n… (" + strconv.Itoa(len(data)) + " bytes in all; the API returns them whole)"
}

// batchBytes is what a batch counts towards historyBytes.
func batchBytes(events []transport.Event) int {
	n := 0
	for i := range events {
		n += transport.EventBytes(&events[i])
	}
	return n
}

// pretty indents JSON data; anything else is shown as it is.
func pretty(data json.RawMessage) string {
	if len(data) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Indent(&b, data, "", "  "); err != nil {
		return string(data)
	}
	return b.String()
}

func (c *Console) feedPage(w http.ResponseWriter, r *http.Request) {
	t, err := tenant(r)
	name := r.URL.Query().Get("feed")
	if name == "" {
		name = transport.AllTypes
	}
	d := pageData{Title: "Live feed", Nav: "feed", Tenant: t, FeedName: name}
	if err == nil {
		err = transport.ValidateFeedName(name)
	}
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "error", d)
		return
	}
	f, ok := c.tr.(transport.Feeder)
	if !ok {
		d.NoFeed = true
		c.render(w, r, http.StatusOK, "feed", d)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	infos, err := f.FeedOverview(ctx, t)
	if err != nil {
		c.failed(w, r, d, err)
		return
	}
	d.FeedChoices = []string{transport.AllTypes}
	for _, i := range infos {
		d.FeedChoices = append(d.FeedChoices, i.AggregateType)
	}
	c.render(w, r, http.StatusOK, "feed", d)
}

type liveEntry struct {
	Sequence int64       `json:"sequence"`
	Type     string      `json:"type"`
	ID       string      `json:"id"`
	Version  int64       `json:"version"`
	Stored   string      `json:"stored"`
	Events   []eventView `json:"events"`
}

// liveBytes bounds the event data of one live-feed answer, and
// historyBytes that of one history page: pages stop there and go on from
// where they stopped.
const (
	liveBytes    = 1 << 20
	historyBytes = 1 << 20
)

// maxShownData is the most of one event's data a page shows; the rest is
// summed up in a line.
const maxShownData = 64 << 10

type liveAnswer struct {
	Entries []liveEntry `json:"entries"`
	Next    int64       `json:"next"`
	Error   string      `json:"error,omitempty"`
}

// feedAPI answers the live page's long poll: the entries after since (or
// the most recent ones when since is "recent"), waiting for the next batch
// when there are none.
func (c *Console) feedAPI(w http.ResponseWriter, r *http.Request) {
	answer := func(status int, a liveAnswer) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(a)
	}
	f, ok := c.tr.(transport.Feeder)
	if !ok {
		answer(http.StatusNotFound, liveAnswer{Error: "this store has no feed"})
		return
	}
	t, err := tenant(r)
	if err != nil {
		answer(http.StatusBadRequest, liveAnswer{Error: err.Error()})
		return
	}
	q := transport.FeedQuery{Feed: transport.Scope{Tenant: t, Type: r.URL.Query().Get("feed")}, Limit: 200, Wait: c.liveWait}
	if q.Feed.Type == "" {
		q.Feed.Type = transport.AllTypes
	}
	if s := r.URL.Query().Get("since"); s == "recent" || s == "" {
		head, err := f.FeedHead(r.Context(), q.Feed)
		if err != nil {
			status, msg := c.storeError(r, err)
			answer(status, liveAnswer{Error: msg})
			return
		}
		q.Since, q.Wait = max(head-20, 0), 0
	} else if q.Since, err = strconv.ParseInt(s, 10, 64); err != nil || q.Since < 0 {
		answer(http.StatusBadRequest, liveAnswer{Error: "since must be a sequence number"})
		return
	}
	p, err := f.ReadFeed(r.Context(), q)
	if err != nil {
		status, msg := c.storeError(r, err)
		answer(status, liveAnswer{Error: msg, Next: q.Since})
		return
	}
	// Streamed entry by entry, and cut once liveBytes of event data are
	// out: the page goes on from next.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	_, _ = bw.WriteString(`{"entries":[`)
	next, size := q.Since, 0
	for i := range p.Entries {
		e := &p.Entries[i]
		for j := range e.Events {
			size += transport.EventBytes(&e.Events[j])
		}
		if size > liveBytes && i > 0 {
			break
		}
		b, err := json.Marshal(liveEntry{
			Sequence: e.Sequence, Type: e.AggregateType, ID: e.AggregateID, Version: e.Version,
			Stored: e.Stored.UTC().Format("15:04:05.000"), Events: events(e.Events),
		})
		if err != nil {
			c.log.Error("console live entry not encoded", zap.Error(err))
			break
		}
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(b)
		next = e.Sequence
	}
	_, _ = bw.WriteString(`],"next":` + strconv.FormatInt(next, 10) + "}\n")
	_ = bw.Flush()
}
