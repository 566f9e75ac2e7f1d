package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	bbolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

var (
	bucketFeeds   = []byte("feeds")
	bucketEntries = []byte("entries")
	bucketHeads   = []byte("heads")
	bucketTypes   = []byte("types")
	keyEvents     = []byte("events")
)

// tenantFeed is one tenant's feed buckets.
type tenantFeed struct {
	fb, entries, heads, types *bbolt.Bucket
}

// feedBucket returns the feed buckets of a tenant ("t:" + tenant, since a
// bucket name cannot be empty), creating them when create is set; without
// create, a tenant with no feed yet has fb nil. A feed bucket without its
// nested buckets is damage, never a panic.
func feedBucket(tx *bbolt.Tx, tenant string, create bool) (tenantFeed, error) {
	feeds, err := rootBucket(tx, bucketFeeds)
	if err != nil {
		return tenantFeed{}, err
	}
	key := []byte("t:" + tenant)
	var f tenantFeed
	if f.fb = feeds.Bucket(key); f.fb == nil {
		if !create {
			return tenantFeed{}, nil
		}
		if f.fb, err = feeds.CreateBucket(key); err != nil {
			return tenantFeed{}, err
		}
		if _, err := f.fb.CreateBucketIfNotExists(bucketEntries); err != nil {
			return tenantFeed{}, err
		}
		if _, err := f.fb.CreateBucketIfNotExists(bucketHeads); err != nil {
			return tenantFeed{}, err
		}
		if _, err := f.fb.CreateBucketIfNotExists(bucketTypes); err != nil {
			return tenantFeed{}, err
		}
	}
	f.entries, f.heads, f.types = f.fb.Bucket(bucketEntries), f.fb.Bucket(bucketHeads), f.fb.Bucket(bucketTypes)
	if f.entries == nil || f.heads == nil || f.types == nil {
		return tenantFeed{}, fmt.Errorf("%w: the feed of tenant %q lacks its entries, heads or types bucket", ErrDamaged, tenant)
	}
	return f, nil
}

// feedRecord is what an entry keeps: where the batch is, not the batch.
//
//	8 bytes version, 8 bytes stored (Unix nanoseconds, 0 when unknown),
//	1 byte type length, the type, the aggregate id.
func encodeRecord(typ, id string, version int64, stored time.Time) []byte {
	r := make([]byte, 17+len(typ)+len(id))
	binary.BigEndian.PutUint64(r[:8], uint64(version))
	binary.BigEndian.PutUint64(r[8:16], uint64(unixNano(stored)))
	r[16] = byte(len(typ))
	copy(r[17:], typ)
	copy(r[17+len(typ):], id)
	return r
}

type feedRecord struct {
	version int64
	stored  time.Time
	typ, id []byte // valid only inside the transaction
}

func decodeRecord(r []byte) (feedRecord, bool) {
	if len(r) < 17 || len(r) < 17+int(r[16]) || r[16] == 0 || len(r) == 17+int(r[16]) {
		return feedRecord{}, false
	}
	n := 17 + int(r[16])
	return feedRecord{
		version: int64(binary.BigEndian.Uint64(r[:8])),
		stored:  fromUnixNano(int64(binary.BigEndian.Uint64(r[8:16]))),
		typ:     r[17:n], id: r[n:],
	}, true
}

// recordFeed gives the batch being written its sequence number, in the same
// transaction. bbolt lets one writer in at a time, so numbers are taken in
// commit order: a reader never sees a number before a lower one.
func recordFeed(tx *bbolt.Tx, ref transport.Ref, version int64, stored time.Time) (int64, error) {
	f, err := feedBucket(tx, ref.Tenant, true)
	if err != nil {
		return 0, err
	}
	u, err := f.fb.NextSequence() // durable, never reused
	if err != nil {
		return 0, err
	}
	seq := int64(u)
	if err := f.entries.Put(versionKey(seq), encodeRecord(ref.Type, ref.ID, version, stored)); err != nil {
		return 0, err
	}
	if err := indexType(f, ref.Type, seq); err != nil {
		return 0, err
	}
	return seq, f.heads.Put([]byte(ref.Type), versionKey(seq))
}

// indexType adds seq to the types index: <type> 0x00 <seq> keys (type
// names hold no NUL), so that a type's feed is read without looking at
// other types' entries.
func indexType(f tenantFeed, typ string, seq int64) error {
	return f.types.Put(typeKey(typ, seq), nil)
}

func typeKey(typ string, seq int64) []byte {
	k := make([]byte, len(typ)+1+8)
	copy(k, typ)
	binary.BigEndian.PutUint64(k[len(typ)+1:], uint64(seq))
	return k
}

// addEvents keeps an aggregate's event count, for FeedOverview.
func addEvents(b *bbolt.Bucket, n int) error {
	var c uint64
	if v := b.Get(keyEvents); len(v) == 8 {
		c = binary.BigEndian.Uint64(v)
	}
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, c+uint64(n))
	return b.Put(keyEvents, k)
}

// forgetFeed drops the feed entries of a deleted target. Each batch record
// names its entry, so this touches only the deleted batches; only when a
// record is damaged does it look through the tenant's whole feed.
func forgetFeed(tx *bbolt.Tx, target transport.DeleteTarget) error {
	f, err := feedBucket(tx, target.Tenant, false)
	if err != nil || f.fb == nil {
		return err
	}
	scopes, err := rootBucket(tx, bucketScopes)
	if err != nil {
		return err
	}
	scope := scopes.Bucket(scopeKey(transport.Scope{Tenant: target.Tenant, Type: target.Type}))
	if scope == nil {
		return nil
	}
	var doomed [][]byte
	damaged := false
	forget := func(agg *bbolt.Bucket) {
		c := agg.Cursor()
		for k, v := c.First(); len(k) == 8; k, v = c.Next() {
			seq, _, ok := batchSeq(v)
			if !ok {
				damaged = true
				continue
			}
			if seq > 0 {
				doomed = append(doomed, versionKey(seq))
			}
		}
	}
	if target.AllOfType {
		err = scope.ForEach(func(id, v []byte) error {
			if v == nil {
				if agg := scope.Bucket(id); agg != nil {
					forget(agg)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	} else if agg := scope.Bucket([]byte(target.ID)); agg != nil {
		forget(agg)
	}
	if damaged {
		doomed = doomed[:0]
		c := f.entries.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, ok := decodeRecord(v)
			if !ok || string(r.typ) != target.Type || (!target.AllOfType && string(r.id) != target.ID) {
				continue
			}
			doomed = append(doomed, bytes.Clone(k))
		}
	}
	for _, k := range doomed {
		if err := f.entries.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range doomed {
		if err := f.types.Delete(typeKey(target.Type, int64(binary.BigEndian.Uint64(k)))); err != nil {
			return err
		}
	}
	return nil
}

// ReadFeed implements transport.Feeder. An empty read with q.Wait waits for
// the next commit of this process to the feed without polling; Close ends
// the wait at once with ErrClosed. A page stops before its events pass
// transport.MaxPageBytes (a first entry larger than that comes alone).
func (t *Transport) ReadFeed(ctx context.Context, q transport.FeedQuery) (transport.FeedPage, error) {
	const op = "read feed"
	ref := transport.Ref{Tenant: q.Feed.Tenant, Type: q.Feed.Type}
	if err := transport.CheckFeed(q); err != nil {
		return transport.FeedPage{}, err
	}
	limit := transport.PageLimit(q.Limit)
	page, err := commitsignal.ReadFeed(ctx, &t.signal, q, func(q transport.FeedQuery) (transport.FeedPage, int64, error) {
		if err := canceled(ctx, op, ref); err != nil {
			return transport.FeedPage{}, 0, err
		}
		return t.readFeed(q, limit)
	})
	if err != nil {
		return transport.FeedPage{}, storeFailed(op, ref, err)
	}
	return page, nil
}

// errFeedEntryDamaged says how to get past a damaged entry.
func errFeedEntryDamaged(tenant string, seq int64, format string, args ...any) error {
	return fmt.Errorf("%w: feed entry %d of tenant %q: %s (a reader cannot pass it: see SkipDamagedFeedEntry in docs/operations.md)",
		ErrDamaged, seq, tenant, fmt.Sprintf(format, args...))
}

func (t *Transport) readFeed(q transport.FeedQuery, limit int) (transport.FeedPage, int64, error) {
	page := transport.FeedPage{Entries: []transport.FeedEntry{}}
	scanned := q.Since
	err := t.view(func(tx *bbolt.Tx) error {
		f, err := feedBucket(tx, q.Feed.Tenant, false)
		if err != nil || f.fb == nil {
			return err
		}
		page.Head = feedHead(f, q.Feed.Type)
		scopes, err := rootBucket(tx, bucketScopes)
		if err != nil {
			return err
		}
		scopeOf := map[string]*bbolt.Bucket{}
		var dec batchDecoder
		size := 0
		// A type's feed walks the type's index and looks its entries up;
		// _all walks the entries.
		c, first := f.entries.Cursor(), versionKey(q.Since+1)
		var prefix []byte
		byType := q.Feed.Type != transport.AllTypes
		if byType {
			c, first = f.types.Cursor(), typeKey(q.Feed.Type, q.Since+1)
			prefix = first[:len(q.Feed.Type)+1]
		}
		for k, v := c.Seek(first); k != nil; k, v = c.Next() {
			if byType {
				if !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
					break
				}
				k = k[len(prefix):]
			}
			seq := int64(binary.BigEndian.Uint64(k))
			if byType {
				if v = f.entries.Get(k); v == nil {
					scanned = seq // skipped as damaged: gone from the feed
					continue
				}
			}
			r, ok := decodeRecord(v)
			if !ok {
				return errFeedEntryDamaged(q.Feed.Tenant, seq, "the entry does not decode")
			}
			if (q.Feed.Type != transport.AllTypes && string(r.typ) != q.Feed.Type) || !q.Partition.Holds(string(r.id)) {
				scanned = seq
				continue
			}
			sb, ok := scopeOf[string(r.typ)]
			if !ok {
				sb = scopes.Bucket(scopeKey(transport.Scope{Tenant: q.Feed.Tenant, Type: string(r.typ)}))
				scopeOf[string(r.typ)] = sb
			}
			var agg *bbolt.Bucket
			if sb != nil {
				agg = sb.Bucket(r.id)
			}
			if agg == nil {
				return errFeedEntryDamaged(q.Feed.Tenant, seq, "it points at %s/%s, which is missing", r.typ, r.id)
			}
			events, bytes, err := dec.decode(nil, agg.Get(versionKey(r.version)))
			if err != nil {
				return errFeedEntryDamaged(q.Feed.Tenant, seq, "batch %d of %s/%s: %v", r.version, r.typ, r.id, err)
			}
			if why := disagrees(seq, r, agg.Get(versionKey(r.version))); why != "" {
				return errFeedEntryDamaged(q.Feed.Tenant, seq, "%s", why)
			}
			e := transport.FeedEntry{Sequence: seq, AggregateType: string(r.typ), AggregateID: string(r.id), Version: r.version, Stored: r.stored, Events: events}
			if !q.Matches(&e) {
				scanned = seq
				continue
			}
			if len(page.Entries) == limit || (len(page.Entries) > 0 && size+bytes > transport.MaxPageBytes) {
				page.HasMore = true
				return nil
			}
			size += bytes
			page.Entries = append(page.Entries, e)
			scanned = seq
		}
		return nil
	})
	return page, scanned, err
}

func feedHead(f tenantFeed, feed string) int64 {
	if feed == transport.AllTypes {
		return int64(f.fb.Sequence())
	}
	if v := f.heads.Get([]byte(feed)); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// FeedHead implements transport.Feeder.
func (t *Transport) FeedHead(ctx context.Context, feed transport.Scope) (int64, error) {
	const op = "feed head"
	ref := transport.Ref{Tenant: feed.Tenant, Type: feed.Type}
	if err := transport.CheckFeedHead(feed); err != nil {
		return 0, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return 0, err
	}
	var head int64
	err := t.view(func(tx *bbolt.Tx) error {
		f, err := feedBucket(tx, feed.Tenant, false)
		if f.fb != nil {
			head = feedHead(f, feed.Type)
		}
		return err
	})
	return head, storeFailedOrNil(op, ref, err)
}

// FeedOverview implements transport.Feeder.
func (t *Transport) FeedOverview(ctx context.Context, tenant string) ([]transport.FeedInfo, error) {
	const op = "feed overview"
	ref := transport.Ref{Tenant: tenant}
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return nil, err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return nil, err
	}
	infos := []transport.FeedInfo{}
	prefix := []byte(tenant + "\x00")
	err := t.view(func(tx *bbolt.Tx) error {
		scopes, err := rootBucket(tx, bucketScopes)
		if err != nil {
			return err
		}
		c := scopes.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			info := transport.FeedInfo{AggregateType: string(k[len(prefix):])}
			sb := scopes.Bucket(k)
			if sb == nil {
				continue
			}
			err := sb.ForEach(func(id, v []byte) error {
				if v != nil {
					return nil
				}
				agg := sb.Bucket(id)
				m, err := readMeta(agg, info.AggregateType, id)
				if err != nil {
					return err
				}
				info.Aggregates++
				info.Batches += m.version
				if n := agg.Get(keyEvents); len(n) == 8 {
					info.Events += int64(binary.BigEndian.Uint64(n))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if info.Aggregates > 0 {
				infos = append(infos, info)
			}
		}
		return nil
	})
	if err != nil {
		return nil, storeFailed(op, ref, err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].AggregateType < infos[j].AggregateType })
	return infos, nil
}

// SkipDamagedFeedEntry removes the feed entry seq of tenant when it is
// damaged, so that readers of the feed get past it: an entry that does not
// decode, or points at an aggregate or a batch that is missing or does not
// decode. ReadFeed names such an entry in its error (ErrDamaged). An entry
// that reads fine is left alone and the call fails with
// transport.ErrInvalid; an entry that does not exist fails with
// transport.ErrNotFound. The batch itself, if any, stays where it is (Load
// still reports it); the number is not reused and the heads do not move.
// Each skip is logged at Warn. See docs/operations.md.
func (t *Transport) SkipDamagedFeedEntry(ctx context.Context, tenant string, seq int64) error {
	const op = "skip damaged feed entry"
	ref := transport.Ref{Tenant: tenant}
	if err := transport.CheckFeedOverview(tenant); err != nil {
		return err
	}
	if err := canceled(ctx, op, ref); err != nil {
		return err
	}
	var why string
	err := t.update(func(tx *bbolt.Tx) error {
		f, err := feedBucket(tx, tenant, false)
		if err != nil {
			return err
		}
		var v []byte
		if f.fb != nil {
			v = f.entries.Get(versionKey(seq))
		}
		if v == nil {
			e := transport.NewError(op, ref, transport.ErrNotFound)
			e.Messages = []string{fmt.Sprintf("no feed entry %d", seq)}
			return e
		}
		why = damage(tx, tenant, seq, v)
		if why == "" {
			e := transport.NewError(op, ref, transport.ErrInvalid)
			e.Messages = []string{fmt.Sprintf("feed entry %d is not damaged; nothing skipped", seq)}
			return e
		}
		return f.entries.Delete(versionKey(seq))
	})
	if err != nil {
		return storeFailed(op, ref, err)
	}
	t.log.Warn("skipped a damaged feed entry", zap.String("tenant", tenant), zap.Int64("sequence", seq), zap.String("damage", why))
	return nil
}

// damage says what is wrong with a feed entry, "" when nothing is.
func damage(tx *bbolt.Tx, tenant string, seq int64, v []byte) string {
	r, ok := decodeRecord(v)
	if !ok {
		return "the entry does not decode"
	}
	var agg *bbolt.Bucket
	if scopes := tx.Bucket(bucketScopes); scopes != nil {
		if sb := scopes.Bucket(scopeKey(transport.Scope{Tenant: tenant, Type: string(r.typ)})); sb != nil {
			agg = sb.Bucket(r.id)
		}
	}
	if agg == nil {
		return fmt.Sprintf("it points at %s/%s, which is missing", r.typ, r.id)
	}
	var dec batchDecoder
	if _, _, err := dec.decode(nil, agg.Get(versionKey(r.version))); err != nil {
		return fmt.Sprintf("batch %d of %s/%s does not decode", r.version, r.typ, r.id)
	}
	return disagrees(seq, r, agg.Get(versionKey(r.version)))
}

// disagrees says how feed entry seq (record r) and the sealed batch record
// v it points at disagree, "" when they agree: the batch keeps its entry's
// number and store time under its checksum, so an entry whose number,
// version, aggregate or store time changed on disk is found, never read as
// another batch.
func disagrees(seq int64, r feedRecord, v []byte) string {
	bseq, stored, ok := batchSeq(v)
	switch {
	case !ok:
		return fmt.Sprintf("batch %d of %s/%s does not decode", r.version, r.typ, r.id)
	case bseq != seq:
		return fmt.Sprintf("it points at batch %d of %s/%s, which is feed entry %d", r.version, r.typ, r.id, bseq)
	case unixNano(stored) != unixNano(r.stored):
		return fmt.Sprintf("its store time %s is not that of batch %d of %s/%s (%s)", r.stored.UTC().Format(time.RFC3339Nano), r.version, r.typ, r.id, stored.UTC().Format(time.RFC3339Nano))
	}
	return ""
}
