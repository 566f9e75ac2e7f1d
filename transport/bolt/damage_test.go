package bolt_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

// bigFile writes an event file of a few MiB and returns its bytes.
func bigFile(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.db")
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	ctx := context.Background()
	payload := `"` + strings.Repeat("x", 30_000) + `"`
	for i := 0; i < 10; i++ {
		batches := make([]transport.Batch, 10)
		for j := range batches {
			batches[j] = transport.Batch{AggregateID: uuid.NewString(), Events: []transport.Event{{EventType: "Big", Data: []byte(payload)}}, Expected: transport.MustNotExist}
		}
		require.NoError(t, tr.StoreBulk(ctx, transport.Scope{Type: "blob"}, batches))
	}
	require.NoError(t, tr.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Greater(t, len(b), 2<<20)
	return b
}

// A file cut short is refused with ErrDamaged before bbolt maps it (bbolt
// itself dies with SIGSEGV or panics on such a file); an empty file is not
// taken for a new store.
func TestTruncatedFileIsRefused(t *testing.T) {
	whole := bigFile(t)
	dir := t.TempDir()
	for _, size := range []int{0, 16 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("cut-%d.db", size))
			require.NoError(t, os.WriteFile(path, whole[:size], 0o600))
			_, err := bolt.Open(path)
			require.ErrorIs(t, err, bolt.ErrDamaged)
			assert.Equal(t, 1, strings.Count(err.Error(), path), "the path once: %v", err)
			st, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, int64(size), st.Size(), "the file is left as it was")
		})
	}
	t.Run("whole", func(t *testing.T) {
		path := filepath.Join(dir, "whole.db")
		require.NoError(t, os.WriteFile(path, whole, 0o600))
		tr := open(t, path)
		infos, err := tr.FeedOverview(context.Background(), "")
		require.NoError(t, err)
		assert.Equal(t, []transport.FeedInfo{{AggregateType: "blob", Aggregates: 100, Batches: 100, Events: 100}}, infos)
	})
}

func TestSmallNonBoltFileIsUnknownFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(path, []byte(strings.Repeat("a small text file\n", 376)), 0o600))
	_, err := bolt.Open(path)
	require.ErrorIs(t, err, bolt.ErrUnknownFormat)
	assert.Equal(t, 1, strings.Count(err.Error(), path), "the path once: %v", err)
	assert.NotContains(t, err.Error(), "file size too small")
}

func TestOpenErrorsNameThePathOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing-dir", "events.db")
	_, err := bolt.Open(path)
	require.Error(t, err)
	assert.Equal(t, 1, strings.Count(err.Error(), path), "the path once: %v", err)
}

func TestOpenTimeoutMustBePositive(t *testing.T) {
	_, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"), bolt.WithOpenTimeout(0))
	require.ErrorIs(t, err, transport.ErrInvalid)
	assert.Contains(t, err.Error(), "WithOpenTimeout")
}

func TestSecondOpenInTheSameProcessSaysSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	first := open(t, path)
	_, err := bolt.Open(path, bolt.WithOpenTimeout(5*time.Second))
	require.ErrorIs(t, err, bolt.ErrLocked)
	assert.Contains(t, err.Error(), "already open in this process")
	assert.NotContains(t, err.Error(), "another process")
	require.NoError(t, first.Close())
	again, err := bolt.Open(path)
	require.NoError(t, err, "closing the first one frees the file")
	require.NoError(t, again.Close())
}

// rewrite changes the file through the transport's own DB.
func rewrite(t *testing.T, tr *bolt.Transport, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	require.NoError(t, tr.DB().Update(fn))
}

func aggBucket(tx *bbolt.Tx, ref transport.Ref) *bbolt.Bucket {
	return tx.Bucket([]byte("scopes")).Bucket([]byte(ref.Tenant + "\x00" + ref.Type)).Bucket([]byte(ref.ID))
}

// A damaged aggregate record is refused, naming the aggregate; it is never
// read as version 0 (a Store(MustNotExist) would then overwrite batch 1).
func TestDamagedAggregateRecordIsRefused(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"n":1}`)}}, transport.MustNotExist))
	rewrite(t, tr, func(tx *bbolt.Tx) error { return aggBucket(tx, ref).Put([]byte("meta"), []byte("bad")) })

	_, err := tr.Load(ctx, ref, 0, 0)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	assert.Contains(t, err.Error(), ref.ID)
	err = tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"n":2}`)}}, transport.MustNotExist)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	assert.ErrorIs(t, err, transport.ErrUnavailable)
	assert.Contains(t, err.Error(), ref.ID)
	_, err = tr.List(ctx, ref.Scope(), 0, 0)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	_, err = tr.FeedOverview(ctx, "")
	require.ErrorIs(t, err, bolt.ErrDamaged)
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		v := aggBucket(tx, ref).Get([]byte{0, 0, 0, 0, 0, 0, 0, 1})
		assert.Contains(t, string(v), `{"n":1}`, "batch 1 is untouched")
		return nil
	})
}

// A feed bucket without its nested buckets is an error, not a panic.
func TestMissingFeedBucketIsAnError(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("feeds")).Bucket([]byte("t:")).DeleteBucket([]byte("entries"))
	})

	_, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	require.ErrorIs(t, err, bolt.ErrDamaged)
	_, err = tr.FeedHead(ctx, transport.Scope{Type: "order"})
	require.ErrorIs(t, err, bolt.ErrDamaged)
	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
	require.NoError(t, err)
	err = tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), token)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	ok, err := tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.True(t, ok, "the failed delete deleted nothing")
	require.ErrorIs(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(1)), bolt.ErrDamaged)

	// Repaired, the same token still works: the failed confirm did not use
	// it up.
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		_, err := tx.Bucket([]byte("feeds")).Bucket([]byte("t:")).CreateBucket([]byte("entries"))
		return err
	})
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(ref), token))
	ok, err = tr.Exists(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok)
}

// A read model can live in the event file, through the transport's own DB:
// its buckets do not disturb the transport, and the file reopens.
func TestReadModelInTheSameFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	require.NoError(t, tr.DB().Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("order-list"))
		if err != nil {
			return err
		}
		return b.Put([]byte(ref.ID), []byte(`{"status":"placed"}`))
	}))
	require.NoError(t, tr.Close())
	tr = open(t, path)
	require.NoError(t, tr.DB().View(func(tx *bbolt.Tx) error {
		assert.Equal(t, `{"status":"placed"}`, string(tx.Bucket([]byte("order-list")).Get([]byte(ref.ID))))
		return nil
	}))
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Len(t, p.Events, 1)
}

// A damaged feed entry blocks readers until an operator skips it.
func TestSkipDamagedFeedEntry(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	a, b := transport.Ref{Type: "order", ID: uuid.NewString()}, transport.Ref{Type: "order", ID: uuid.NewString()}
	for _, ref := range []transport.Ref{a, b} {
		require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	}
	all := transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}}
	require.ErrorIs(t, tr.SkipDamagedFeedEntry(ctx, "", 1), transport.ErrInvalid, "an entry that reads fine stays")
	require.ErrorIs(t, tr.SkipDamagedFeedEntry(ctx, "", 99), transport.ErrNotFound)
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("feeds")).Bucket([]byte("t:")).Bucket([]byte("entries")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte("junk"))
	})
	_, err := tr.ReadFeed(ctx, all)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	assert.Contains(t, err.Error(), "feed entry 1")
	assert.Contains(t, err.Error(), "SkipDamagedFeedEntry")

	require.NoError(t, tr.SkipDamagedFeedEntry(ctx, "", 1))
	p, err := tr.ReadFeed(ctx, all)
	require.NoError(t, err)
	require.Len(t, p.Entries, 1)
	assert.Equal(t, b.ID, p.Entries[0].AggregateID)
	assert.Equal(t, int64(2), p.Head, "the head does not move")
}

// The store time is taken inside the write transaction and never goes back
// for an aggregate, even when the clock does.
func TestStoredNeverGoesBackWithTheClock(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	times := []time.Time{base.Add(time.Hour), base}
	i := 0
	tr := open(t, filepath.Join(t.TempDir(), "events.db"), bolt.WithClock(func() time.Time {
		now := times[min(i, len(times)-1)]
		i++
		return now
	}))
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	i = 0
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(1)))
	entries := readAll(t, tr, "", 0)
	require.Len(t, entries, 2)
	assert.False(t, entries[1].Stored.Before(entries[0].Stored), "%s then %s", entries[0].Stored, entries[1].Stored)
	l, err := tr.List(ctx, ref.Scope(), 0, 0)
	require.NoError(t, err)
	assert.True(t, l.Aggregates[0].LastUpdatedAt.Equal(base.Add(time.Hour)))
}

// Close wakes a waiting feed read at once with ErrClosed.
func TestCloseWakesWaitingReaders(t *testing.T) {
	tr, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	require.NoError(t, err)
	ctx := context.Background()
	done := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: transport.MaxFeedWait})
			done <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them park; the result does not depend on it
	require.NoError(t, tr.Close())
	for i := 0; i < 3; i++ {
		select {
		case err := <-done:
			require.ErrorIs(t, err, bolt.ErrClosed)
			assert.ErrorIs(t, err, transport.ErrUnavailable)
		case <-time.After(20 * time.Second):
			t.Fatal("a waiting reader was not woken by Close")
		}
	}
	_, err = tr.Load(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, 0, 0)
	assert.ErrorIs(t, err, bolt.ErrClosed)
}

// TestUpgradesFormat2ByteForByteOfWhatItKept opens a file of format 2
// (batches as JSON arrays, feed entries with their store times): the
// batches come back as that format kept them, every entry keeps its number
// and store time, and deletes find the entries of upgraded batches.
func TestUpgradesFormat2ByteForByteOfWhatItKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.db")
	a, b := uuid.NewString(), uuid.NewString()
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	key := func(v uint64) []byte { k := make([]byte, 8); binary.BigEndian.PutUint64(k, v); return k }
	record := func(typ, id string, version uint64, stored time.Time) []byte {
		r := make([]byte, 17+len(typ)+len(id))
		binary.BigEndian.PutUint64(r[:8], version)
		binary.BigEndian.PutUint64(r[8:16], uint64(stored.UnixNano()))
		r[16] = byte(len(typ))
		copy(r[17:], typ)
		copy(r[17+len(typ):], id)
		return r
	}
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		require.NoError(t, meta.Put([]byte("format"), []byte("2")))
		scopes, _ := tx.CreateBucket([]byte("scopes"))
		scope, _ := scopes.CreateBucket([]byte("\x00order"))
		feeds, _ := tx.CreateBucket([]byte("feeds"))
		fb, _ := feeds.CreateBucket([]byte("t:"))
		entries, _ := fb.CreateBucket([]byte("entries"))
		heads, _ := fb.CreateBucket([]byte("heads"))
		seq := uint64(0)
		for _, x := range []struct {
			id      string
			batches []string
		}{{a, []string{`[{"eventId":"` + uuid.NewString() + `","eventType":"OrderPlaced","data":{"n":1},"encryptedData":"c2VhbGVk"}]`, `[{"eventId":"` + uuid.NewString() + `","eventType":"OrderPaid"}]`}}, {b, []string{`[{"eventId":"` + uuid.NewString() + `","eventType":"OrderPlaced","data":{"n":2}}]`}}} {
			agg, _ := scope.CreateBucket([]byte(x.id))
			for i, batch := range x.batches {
				seq++
				require.NoError(t, agg.Put(key(uint64(i+1)), []byte(batch)))
				require.NoError(t, entries.Put(key(seq), record("order", x.id, uint64(i+1), t1.Add(time.Duration(seq)*time.Second))))
			}
			m := make([]byte, 16)
			binary.BigEndian.PutUint64(m[:8], uint64(len(x.batches)))
			binary.BigEndian.PutUint64(m[8:], uint64(t1.Add(time.Duration(seq)*time.Second).UnixNano()))
			require.NoError(t, agg.Put([]byte("meta"), m))
			require.NoError(t, agg.Put([]byte("events"), key(uint64(len(x.batches)))))
		}
		require.NoError(t, fb.SetSequence(seq))
		return heads.Put([]byte("order"), key(seq))
	}))
	require.NoError(t, db.Close())

	tr := open(t, path)
	ctx := context.Background()
	p, err := tr.Load(ctx, transport.Ref{Type: "order", ID: a}, 0, 0)
	require.NoError(t, err)
	require.Len(t, p.Events, 2)
	assert.Equal(t, `{"n":1}`, string(p.Events[0].Data))
	assert.Equal(t, "c2VhbGVk", p.Events[0].EncryptedData)
	assert.Equal(t, "OrderPaid", p.Events[1].EventType)
	entries := readAll(t, tr, "", 0)
	require.Len(t, entries, 3)
	for i, e := range entries {
		assert.Equal(t, int64(i+1), e.Sequence)
		assert.True(t, e.Stored.Equal(t1.Add(time.Duration(i+1)*time.Second)), "entry %d keeps its store time", i+1)
	}
	// The upgraded batches know their entries: deleting a forgets them.
	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(transport.Ref{Type: "order", ID: a}))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(transport.Ref{Type: "order", ID: a}), token))
	entries = readAll(t, tr, "", 0)
	require.Len(t, entries, 1)
	assert.Equal(t, b, entries[0].AggregateID)
	p, err = tr.Load(ctx, transport.Ref{Type: "order", ID: b}, 0, 0)
	require.NoError(t, err)
	require.Len(t, p.Events, 1)
	typed, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, typed.Entries, 1, "the type's index was built by the upgrade")
	assert.Equal(t, entries[0].Sequence, typed.Entries[0].Sequence)
	require.NoError(t, tr.Close())
	tr = open(t, path)
	assert.Equal(t, entries, readAll(t, tr, "", 0), "upgraded once")
}

// A type's feed is read from the type's own index: an entry of another type,
// even a damaged one, is never looked at.
func TestTypeFeedLooksOnlyAtItsType(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	invoice := transport.Ref{Type: "invoice", ID: uuid.NewString()}
	order := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, invoice, []transport.Event{{EventType: "InvoiceSent"}}, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, order, []transport.Event{{EventType: "OrderPlaced"}}, transport.MustNotExist))
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("feeds")).Bucket([]byte("t:")).Bucket([]byte("entries")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte("junk"))
	})
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 1)
	assert.Equal(t, order.ID, p.Entries[0].AggregateID)
	_, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
	assert.ErrorIs(t, err, bolt.ErrDamaged, "_all does meet it")

	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(order))
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, transport.DeleteAggregate(order), token))
	p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	assert.Empty(t, p.Entries)
	assert.False(t, p.HasMore)
}

// A new file is made whole under a temporary name and linked into place, so
// a crash while creating never leaves the empty file Open refuses; nothing
// else stays behind.
func TestNewFileIsCreatedWhole(t *testing.T) {
	dir := t.TempDir()
	tr := open(t, filepath.Join(dir, "events.db"))
	require.NoError(t, tr.Close())
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, names, 1)
	assert.Equal(t, "events.db", names[0].Name())
	tr = open(t, filepath.Join(dir, "events.db"))
	infos, err := tr.FeedOverview(context.Background(), "")
	require.NoError(t, err)
	assert.Empty(t, infos)
}
