package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/transport"
)

var (
	bucketFeeds   = []byte("feeds")
	bucketEntries = []byte("entries")
	bucketHeads   = []byte("heads")
	keyEvents     = []byte("events")
)

// feedBucket returns the feed bucket of a tenant ("t:" + tenant, since a
// bucket name cannot be empty), creating it when create is set.
func feedBucket(tx *bbolt.Tx, tenant string, create bool) (*bbolt.Bucket, error) {
	feeds := tx.Bucket(bucketFeeds)
	key := []byte("t:" + tenant)
	if !create {
		return feeds.Bucket(key), nil
	}
	fb, err := feeds.CreateBucketIfNotExists(key)
	if err != nil {
		return nil, err
	}
	if _, err := fb.CreateBucketIfNotExists(bucketEntries); err != nil {
		return nil, err
	}
	if _, err := fb.CreateBucketIfNotExists(bucketHeads); err != nil {
		return nil, err
	}
	return fb, nil
}

// feedRecord is what an entry keeps: where the batch is, not the batch.
//
//	8 bytes version, 8 bytes stored (Unix nanoseconds), 1 byte type length,
//	the type, the aggregate id.
func encodeRecord(typ, id string, version int64, stored time.Time) []byte {
	r := make([]byte, 17+len(typ)+len(id))
	binary.BigEndian.PutUint64(r[:8], uint64(version))
	binary.BigEndian.PutUint64(r[8:16], uint64(stored.UnixNano()))
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
	if len(r) < 17 || len(r) < 17+int(r[16]) {
		return feedRecord{}, false
	}
	n := 17 + int(r[16])
	return feedRecord{
		version: int64(binary.BigEndian.Uint64(r[:8])),
		stored:  time.Unix(0, int64(binary.BigEndian.Uint64(r[8:16]))),
		typ:     r[17:n], id: r[n:],
	}, true
}

// recordFeed gives the batch just written its sequence number, in the same
// transaction. bbolt lets one writer in at a time, so numbers are taken in
// commit order: a reader never sees a number before a lower one.
func recordFeed(tx *bbolt.Tx, ref transport.Ref, version int64, stored time.Time) error {
	fb, err := feedBucket(tx, ref.Tenant, true)
	if err != nil {
		return err
	}
	seq, err := fb.NextSequence() // durable, never reused
	if err != nil {
		return err
	}
	if err := fb.Bucket(bucketEntries).Put(versionKey(int64(seq)), encodeRecord(ref.Type, ref.ID, version, stored)); err != nil {
		return err
	}
	return fb.Bucket(bucketHeads).Put([]byte(ref.Type), versionKey(int64(seq)))
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

// forgetFeed drops the feed entries of a deleted target.
func forgetFeed(tx *bbolt.Tx, target transport.DeleteTarget) error {
	fb, err := feedBucket(tx, target.Tenant, false)
	if err != nil || fb == nil {
		return err
	}
	var doomed [][]byte
	c := fb.Bucket(bucketEntries).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, ok := decodeRecord(v)
		if !ok || string(r.typ) != target.Type || (!target.AllOfType && string(r.id) != target.ID) {
			continue
		}
		doomed = append(doomed, bytes.Clone(k))
	}
	entries := fb.Bucket(bucketEntries)
	for _, k := range doomed {
		if err := entries.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// migrateFeeds builds the feed of a format 1 file, which had none: every
// stored batch gets a number, each aggregate's batches in version order
// (the order across aggregates was never recorded, so it follows the
// aggregates' keys).
func migrateFeeds(tx *bbolt.Tx) error {
	if _, err := tx.CreateBucket(bucketFeeds); err != nil {
		return err
	}
	return tx.Bucket(bucketScopes).ForEach(func(sk, _ []byte) error {
		tenant, typ, ok := bytes.Cut(sk, []byte{0})
		if !ok {
			return fmt.Errorf("%w: scope key %q", ErrUnknownFormat, sk)
		}
		scope := tx.Bucket(bucketScopes).Bucket(sk)
		return scope.ForEach(func(id, v []byte) error {
			if v != nil {
				return nil
			}
			agg := scope.Bucket(id)
			m := readMeta(agg)
			ref := transport.Ref{Tenant: string(tenant), Type: string(typ), ID: string(id)}
			events := 0
			for ver := int64(1); ver <= m.version; ver++ {
				var batch []json.RawMessage
				if err := json.Unmarshal(agg.Get(versionKey(ver)), &batch); err != nil {
					return fmt.Errorf("%s/%s batch %d is corrupt: %w", typ, id, ver, err)
				}
				events += len(batch)
				if err := recordFeed(tx, ref, ver, m.updated); err != nil {
					return err
				}
			}
			return addEvents(agg, events)
		})
	})
}

// ReadFeed implements transport.Feeder. An empty read with q.Wait waits for
// the next commit of this process without polling.
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
		page, scanned, err := t.readFeed(q, limit)
		if err != nil {
			return transport.FeedPage{}, 0, storeFailed(op, ref, err)
		}
		return page, scanned, nil
	})
}

func (t *Transport) readFeed(q transport.FeedQuery, limit int) (transport.FeedPage, int64, error) {
	page := transport.FeedPage{Entries: []transport.FeedEntry{}}
	scanned := q.Since
	err := t.db.View(func(tx *bbolt.Tx) error {
		fb, _ := feedBucket(tx, q.Feed.Tenant, false)
		if fb == nil {
			return nil
		}
		page.Head = feedHead(fb, q.Feed.Type)
		scopes := map[string]*bbolt.Bucket{}
		c := fb.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(versionKey(q.Since + 1)); k != nil; k, v = c.Next() {
			seq := int64(binary.BigEndian.Uint64(k))
			r, ok := decodeRecord(v)
			if !ok {
				return fmt.Errorf("feed entry %d is corrupt", seq)
			}
			if (q.Feed.Type != transport.AllTypes && string(r.typ) != q.Feed.Type) || !q.Partition.Holds(string(r.id)) {
				scanned = seq
				continue
			}
			e := transport.FeedEntry{Sequence: seq, AggregateType: string(r.typ), AggregateID: string(r.id), Version: r.version, Stored: r.stored}
			sb, ok := scopes[e.AggregateType]
			if !ok {
				sb = tx.Bucket(bucketScopes).Bucket(scopeKey(transport.Scope{Tenant: q.Feed.Tenant, Type: e.AggregateType}))
				scopes[e.AggregateType] = sb
			}
			var agg *bbolt.Bucket
			if sb != nil {
				agg = sb.Bucket(r.id)
			}
			if agg == nil {
				return fmt.Errorf("feed entry %d points at %s/%s, which is missing", seq, r.typ, r.id)
			}
			// json.Unmarshal copies out of the memory map.
			if err := json.Unmarshal(agg.Get(versionKey(r.version)), &e.Events); err != nil {
				return fmt.Errorf("batch %d of %s/%s is corrupt: %w", r.version, r.typ, r.id, err)
			}
			if !q.Matches(&e) {
				scanned = seq
				continue
			}
			if len(page.Entries) == limit {
				page.HasMore = true
				return nil
			}
			page.Entries = append(page.Entries, e)
			scanned = seq
		}
		return nil
	})
	return page, scanned, err
}

func feedHead(fb *bbolt.Bucket, feed string) int64 {
	if feed == transport.AllTypes {
		return int64(fb.Sequence())
	}
	if v := fb.Bucket(bucketHeads).Get([]byte(feed)); len(v) == 8 {
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
	err := t.db.View(func(tx *bbolt.Tx) error {
		if fb, _ := feedBucket(tx, feed.Tenant, false); fb != nil {
			head = feedHead(fb, feed.Type)
		}
		return nil
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
	err := t.db.View(func(tx *bbolt.Tx) error {
		scopes := tx.Bucket(bucketScopes)
		c := scopes.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			info := transport.FeedInfo{AggregateType: string(k[len(prefix):])}
			sb := scopes.Bucket(k)
			err := sb.ForEach(func(id, v []byte) error {
				if v != nil {
					return nil
				}
				agg := sb.Bucket(id)
				info.Aggregates++
				info.Batches += readMeta(agg).version
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
