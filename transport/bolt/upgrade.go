package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
)

// upgrade brings a file of format "1" or "2" to Format, in the transaction
// that opens it. Both kept batches as JSON arrays, re-encoded on the way in
// (so their bytes are what that encoding made of them; nothing can restore
// the originals); format 1 had no feed.
func upgrade(tx *bbolt.Tx, from string) error {
	if from == "1" {
		if _, err := tx.CreateBucket(bucketFeeds); err != nil {
			return err
		}
		return eachAggregate(tx, buildFeed)
	}
	// Format 2: every batch takes its number and store time from its feed
	// entry; a batch without one (there should be none) gets neither.
	feeds, err := rootBucket(tx, bucketFeeds)
	if err != nil {
		return err
	}
	scopes, err := rootBucket(tx, bucketScopes)
	if err != nil {
		return err
	}
	var tenants []string
	err = feeds.ForEach(func(fk, v []byte) error {
		if tenant, ok := bytes.CutPrefix(fk, []byte("t:")); ok && v == nil {
			tenants = append(tenants, string(tenant))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, tenant := range tenants {
		// Format 2 had no index of each type's entries: build it.
		if _, err := feeds.Bucket([]byte("t:" + tenant)).CreateBucketIfNotExists(bucketTypes); err != nil {
			return err
		}
		f, err := feedBucket(tx, tenant, false)
		if err != nil {
			return err
		}
		c := f.entries.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, ok := decodeRecord(v)
			if !ok {
				continue // left for SkipDamagedFeedEntry
			}
			seq := int64(binary.BigEndian.Uint64(k))
			if err := indexType(f, string(r.typ), seq); err != nil {
				return err
			}
			sb := scopes.Bucket(scopeKey(transport.Scope{Tenant: tenant, Type: string(r.typ)}))
			if sb == nil || sb.Bucket(r.id) == nil {
				continue
			}
			if err := convertBatch(sb.Bucket(r.id), r.typ, r.id, r.version, seq, r.stored); err != nil {
				return err
			}
		}
	}
	return eachAggregate(tx, func(tx *bbolt.Tx, _ transport.Ref, agg *bbolt.Bucket, typ, id []byte, m aggMeta) error {
		for ver := int64(1); ver <= m.version; ver++ {
			if err := convertBatch(agg, typ, id, ver, 0, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
}

// eachAggregate calls fn for every aggregate of the file.
func eachAggregate(tx *bbolt.Tx, fn func(tx *bbolt.Tx, ref transport.Ref, agg *bbolt.Bucket, typ, id []byte, m aggMeta) error) error {
	scopes, err := rootBucket(tx, bucketScopes)
	if err != nil {
		return err
	}
	return scopes.ForEach(func(sk, v []byte) error {
		if v != nil {
			return nil
		}
		tenant, typ, ok := bytes.Cut(sk, []byte{0})
		if !ok {
			return fmt.Errorf("%w: scope key %q", ErrUnknownFormat, sk)
		}
		scope := scopes.Bucket(sk)
		return scope.ForEach(func(id, v []byte) error {
			if v != nil {
				return nil
			}
			agg := scope.Bucket(id)
			m, err := readMeta(agg, string(typ), id)
			if err != nil {
				return err
			}
			return fn(tx, transport.Ref{Tenant: string(tenant), Type: string(typ), ID: string(id)}, agg, typ, id, m)
		})
	})
}

// buildFeed numbers the batches of one aggregate of a format 1 file, in
// version order (the order across aggregates was never recorded, so it
// follows the aggregates' keys). Format 1 kept one time per aggregate, its
// last update: the newest batch gets it, older ones an unknown (zero) store
// time rather than one that is not theirs.
func buildFeed(tx *bbolt.Tx, ref transport.Ref, agg *bbolt.Bucket, typ, id []byte, m aggMeta) error {
	events := 0
	for ver := int64(1); ver <= m.version; ver++ {
		var batch []json.RawMessage
		if err := json.Unmarshal(agg.Get(versionKey(ver)), &batch); err != nil {
			return fmt.Errorf("%w: batch %d of aggregate %s/%s: %v", ErrDamaged, ver, typ, id, err)
		}
		events += len(batch)
		var stored time.Time
		if ver == m.version {
			stored = m.updated
		}
		seq, err := recordFeed(tx, ref, ver, stored)
		if err != nil {
			return err
		}
		if err := convertBatch(agg, typ, id, ver, seq, stored); err != nil {
			return err
		}
	}
	return addEvents(agg, events)
}

// convertBatch rewrites a JSON batch record as a format 3 one; a record
// that is already one is left alone.
func convertBatch(agg *bbolt.Bucket, typ, id []byte, ver, seq int64, stored time.Time) error {
	v := agg.Get(versionKey(ver))
	if len(v) > 0 && v[0] == batchTag {
		return nil
	}
	var events []transport.Event
	if err := json.Unmarshal(v, &events); err != nil {
		return fmt.Errorf("%w: batch %d of aggregate %s/%s: %v", ErrDamaged, ver, typ, id, err)
	}
	data := encodeBatch(events)
	putHeader(data, seq, stored)
	return agg.Put(versionKey(ver), data)
}
