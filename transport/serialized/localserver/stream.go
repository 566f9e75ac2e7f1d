package localserver

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/serialized/internal/wire"
)

// streamChunk is how much of a response body is held before it is written
// out: a page is encoded piece by piece, never whole.
const streamChunk = 32 << 10

// stream writes a 200 JSON body in pieces of about streamChunk bytes. A
// body that fits in one piece goes out with its Content-Length, as before;
// a larger one is sent chunked.
type stream struct {
	h       *handler
	w       http.ResponseWriter
	pooled  *[]byte
	b       []byte
	started bool
}

func (h *handler) stream(w http.ResponseWriter) *stream {
	p := h.outs.Get().(*[]byte)
	return &stream{h: h, w: w, pooled: p, b: (*p)[:0]}
}

// flush writes what is held once it reaches streamChunk.
func (s *stream) flush() {
	if len(s.b) < streamChunk {
		return
	}
	if !s.started {
		s.w.Header()["Content-Type"] = s.h.jsonType
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	_, _ = s.w.Write(s.b)
	s.b = s.b[:0]
}

// end writes the rest and gives the buffer back.
func (s *stream) end() {
	if !s.started {
		hd := s.w.Header()
		hd["Content-Type"] = s.h.jsonType
		hd["Content-Length"] = []string{strconv.Itoa(len(s.b))}
		s.w.WriteHeader(http.StatusOK)
	}
	_, _ = s.w.Write(s.b)
	s.release()
}

// fail answers 500 when nothing is written yet; otherwise it cuts the
// response off, so the client sees a broken body, not a short valid one.
func (s *stream) fail() {
	s.release()
	if !s.started {
		writeError(s.w, http.StatusInternalServerError, "encoding failed")
		return
	}
	panic(http.ErrAbortHandler)
}

func (s *stream) release() {
	if cap(s.b) <= 4*streamChunk { // do not pin a rare huge event's memory
		*s.pooled = s.b[:0]
		s.h.outs.Put(s.pooled)
	}
	s.b = nil
}

// events writes events as a JSON array ("null" when nil, as json.Marshal).
func (s *stream) events(events []transport.Event) bool {
	if events == nil {
		s.b = append(s.b, "null"...)
		return true
	}
	s.b = append(s.b, '[')
	for i := range events {
		if i > 0 {
			s.b = append(s.b, ',')
		}
		var err error
		if s.b, err = wire.AppendEvent(s.b, &events[i]); err != nil {
			return false
		}
		s.flush()
	}
	s.b = append(s.b, ']')
	return true
}

// boundFeed cuts a feed page to transport.MaxPageBytes of events (at least
// one entry), saying HasMore when it cuts: whatever the store returned, one
// answer holds a bounded page.
func boundFeed(p *transport.FeedPage) {
	n := 0
	for i := range p.Entries {
		for j := range p.Entries[i].Events {
			n += transport.EventBytes(&p.Entries[i].Events[j])
		}
		if n > transport.MaxPageBytes && i > 0 {
			p.Entries, p.HasMore = p.Entries[:i], true
			return
		}
	}
}

// etagOf names one page of one aggregate of one tenant: its version, the
// since and limit asked, and a digest of the tenant and the events, so
// neither another tenant's page nor a recreated aggregate's matches it.
func etagOf(tenant string, page *transport.Page, since, limit int64) string {
	d := sha256.New()
	var sep = []byte{0}
	_, _ = d.Write([]byte(tenant))
	for i := range page.Events {
		e := &page.Events[i]
		_, _ = d.Write(sep)
		_, _ = d.Write([]byte(e.EventID))
		_, _ = d.Write(sep)
		_, _ = d.Write([]byte(e.EventType))
		_, _ = d.Write(sep)
		_, _ = d.Write(e.Data)
		_, _ = d.Write(sep)
		_, _ = d.Write([]byte(e.EncryptedData))
	}
	var sum [sha256.Size]byte
	b := make([]byte, 0, 80)
	b = append(b, '"')
	b = strconv.AppendInt(b, page.Version, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, since, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, '-')
	b = hex.AppendEncode(b, d.Sum(sum[:0])[:12])
	return string(append(b, '"'))
}
