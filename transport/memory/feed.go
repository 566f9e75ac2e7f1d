package memory

import (
	"context"
	"iter"
	"sort"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

// feedBlockSize is how many entries one block of a feed holds. The feed
// grows a block at a time and never moves what it holds: growing copies
// only the list of blocks (a pointer per 4096 entries).
const feedBlockSize = 4096

// slot is one feed entry as kept: where its batch is (the stream at pos in
// the scope numbered fid, and the batch's version). It holds no pointers,
// so the collector does not scan the feed. version is 0 once the aggregate
// is deleted.
type slot struct {
	fid, pos uint32
	version  int64
}

type feedBlock struct {
	slots [feedBlockSize]slot
	live  int // entries not deleted
}

// feedLog is one tenant's feed: every stored batch in commit order. Entries
// are appended under the transport's write lock, so sequence order is commit
// order and a reader can never see a number before a lower one. The entry
// numbered seq sits at index seq-1 (numbers are dense: deleted entries stay
// as empty slots, and a block whose entries are all deleted is freed).
type feedLog struct {
	blocks []*feedBlock
	last   int64                // the last sequence number given out
	heads  map[string]int64     // per aggregate type
	types  map[string]*seqIndex // per aggregate type: its entries' numbers
	scopes []*scopeState        // by number (scopeState.fid); nil once deleted
	fids   map[string]uint32    // per aggregate type: its scope's number
}

// addScope numbers a new scope of the tenant (a type deleted and stored
// again keeps its number).
func (f *feedLog) addScope(sc *scopeState) {
	fid, ok := f.fids[sc.typ]
	if !ok {
		fid = uint32(len(f.scopes))
		f.scopes = append(f.scopes, nil)
		f.fids[sc.typ] = fid
	}
	f.scopes[fid] = sc
	sc.fid = fid
}

// seqIndex lists the sequence numbers of one aggregate type's entries, in
// order, in fixed-size blocks: a type's feed is read from it without
// looking at other types' entries.
type seqIndex struct {
	blocks [][]int64
	n      int
}

func (x *seqIndex) add(seq int64) {
	if x.n%feedBlockSize == 0 {
		x.blocks = append(x.blocks, make([]int64, 0, feedBlockSize))
	}
	b := &x.blocks[len(x.blocks)-1]
	*b = append(*b, seq)
	x.n++
}

func (x *seqIndex) at(i int) int64 { return x.blocks[i/feedBlockSize][i%feedBlockSize] }

// after returns the index of the first number above since.
func (x *seqIndex) after(since int64) int {
	return sort.Search(x.n, func(i int) bool { return x.at(i) > since })
}

func (t *Transport) feedLocked(tenant string) *feedLog {
	f := t.feeds[tenant]
	if f == nil {
		f = &feedLog{heads: make(map[string]int64), types: make(map[string]*seqIndex), fids: make(map[string]uint32)}
		t.feeds[tenant] = f
	}
	return f
}

func (f *feedLog) slot(seq int64) *slot {
	b := f.blocks[(seq-1)/feedBlockSize]
	if b == nil {
		return nil
	}
	return &b.slots[(seq-1)%feedBlockSize]
}

// recordLocked adds the batch of version v of the stream at pos of sc to
// its tenant's feed and returns its sequence number.
func (t *Transport) recordLocked(tenant string, sc *scopeState, pos uint32, v int64) int64 {
	f := t.feedLocked(tenant)
	f.last++
	seq := f.last
	i := (seq - 1) % feedBlockSize
	if i == 0 {
		f.blocks = append(f.blocks, &feedBlock{})
	}
	b := f.blocks[len(f.blocks)-1]
	b.slots[i] = slot{fid: sc.fid, pos: pos, version: v}
	b.live++
	f.heads[sc.typ] = seq
	x := f.types[sc.typ]
	if x == nil {
		x = &seqIndex{}
		f.types[sc.typ] = x
	}
	x.add(seq)
	return seq
}

// forgetLocked drops the entries numbered seqs (a deleted aggregate's):
// their slots are emptied, and a full block left without entries is freed.
func (f *feedLog) forgetLocked(seqs iter.Seq[int64]) {
	if f == nil {
		return
	}
	for seq := range seqs {
		bi := (seq - 1) / feedBlockSize
		b := f.blocks[bi]
		if b == nil {
			continue
		}
		sl := &b.slots[(seq-1)%feedBlockSize]
		if sl.version == 0 {
			continue
		}
		*sl = slot{}
		b.live--
		if b.live == 0 && int(bi) < len(f.blocks)-1 {
			f.blocks[bi] = nil
		}
	}
}

// forgetScope drops a scope whose aggregates are all deleted, and its
// type's index.
func (f *feedLog) forgetScope(sc *scopeState) {
	if f != nil {
		delete(f.types, sc.typ)
		f.scopes[sc.fid] = nil
	}
}

// ReadFeed implements transport.Feeder. An empty read with q.Wait waits for
// the next commit to the feed without polling. A page stops before its
// events pass transport.MaxPageBytes (a first entry larger than that comes
// alone).
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
	scanned := q.Since
	var picked []int64 // sequence numbers
	var scratch []transport.Event
	var size int64
	events := 0
	// visit looks at the entry numbered seq; false stops the read.
	visit := func(seq int64) bool {
		sl := f.slot(seq)
		if sl == nil || sl.version == 0 {
			scanned = seq
			return true
		}
		e, b := f.entry(seq, sl) // without Stored, which Matches does not read
		if len(q.EventTypes) > 0 {
			scratch = b.decode(&t.blocks, scratch[:0])
			e.Events = scratch
		}
		if !q.Matches(&e) {
			scanned = seq
			return true
		}
		if len(picked) == limit || (len(picked) > 0 && size+b.bytes > transport.MaxPageBytes) {
			page.HasMore = true
			return false
		}
		picked = append(picked, seq)
		size += b.bytes
		events += int(b.events)
		scanned = seq
		return true
	}
	if q.Feed.Type == transport.AllTypes {
		picked = make([]int64, 0, min(int64(limit), max(0, f.last-q.Since)))
		for seq := q.Since + 1; seq <= f.last; seq++ {
			if b := f.blocks[(seq-1)/feedBlockSize]; b == nil {
				scanned = min(f.last, (seq-1)/feedBlockSize*feedBlockSize+feedBlockSize)
				seq = scanned // a freed block: skip it whole
				continue
			}
			if !visit(seq) {
				break
			}
		}
	} else if x := f.types[q.Feed.Type]; x != nil {
		from := x.after(q.Since)
		picked = make([]int64, 0, min(limit, x.n-from))
		for i := from; i < x.n; i++ {
			if !visit(x.at(i)) {
				break
			}
		}
	}
	// Copies: the caller may change the page without changing the store.
	page.Entries = make([]transport.FeedEntry, len(picked))
	all := make([]transport.Event, 0, events)
	for i, seq := range picked {
		e, b := f.entry(seq, f.slot(seq))
		e.Stored = storedTime(b.stored)
		start := len(all)
		all = b.decode(&t.blocks, all)
		e.Events = all[start:len(all):len(all)]
		page.Entries[i] = e
	}
	return page, scanned
}

// entry is the feed entry numbered seq, kept in sl, without its events
// and store time, and its batch.
func (f *feedLog) entry(seq int64, sl *slot) (transport.FeedEntry, *batch) {
	sc := f.scopes[sl.fid]
	s := sc.at(sl.pos)
	b := sc.batch(s, sl.version)
	return transport.FeedEntry{Sequence: seq, AggregateType: sc.typ, AggregateID: sc.id(s), Version: sl.version}, b
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
