package bolt_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

// A byte flipped on disk inside a stored batch (bit rot, a bad copy) is
// damage that names the aggregate, in Load and in ReadFeed: never events
// that were not stored. The flip here keeps the payload valid JSON of the
// same length, so only a checksum can tell.
func TestFlippedByteInABatchIsDamage(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"note":"QQQQQQQQQQQQ"}`)}}, transport.MustNotExist))
	require.NoError(t, tr.Close())

	for _, what := range []string{"data", "type"} {
		t.Run(what, func(t *testing.T) {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			marker := []byte("QQQQQQQQQQQQ")
			with := []byte("QQQQQRQQQQQQ")
			if what == "type" {
				marker, with = []byte("OrderPlaced"), []byte("OrderPlacex")
			}
			i := bytes.Index(b, marker)
			require.GreaterOrEqual(t, i, 0)
			require.Equal(t, -1, bytes.Index(b[i+1:], marker), "one copy on disk")
			copy(b[i:], with)
			flipped := filepath.Join(t.TempDir(), "flipped.db")
			require.NoError(t, os.WriteFile(flipped, b, 0o600))

			tr := open(t, flipped)
			page, err := tr.Load(ctx, ref, 0, 0)
			require.ErrorIs(t, err, bolt.ErrDamaged, "Load gave %+v", page.Events)
			assert.Contains(t, err.Error(), ref.ID)
			fp, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
			require.ErrorIs(t, err, bolt.ErrDamaged, "ReadFeed gave %+v", fp.Entries)
			assert.Contains(t, err.Error(), ref.ID)
		})
	}
}

// A file cut at any page boundary, or at a random offset, is refused with
// ErrDamaged, or opens and reads back whole: never a panic, never a fault.
func TestFileCutAnywhere(t *testing.T) {
	whole := bigFile(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	var sizes []int
	for s := 4096; s < len(whole); s += 4096 {
		sizes = append(sizes, s)
	}
	for range 50 {
		sizes = append(sizes, rng.IntN(len(whole)))
	}
	opened := 0
	for _, size := range sizes {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d.db", size))
		require.NoError(t, os.WriteFile(path, whole[:size], 0o600))
		tr, err := bolt.Open(path)
		if err != nil {
			require.True(t, errors.Is(err, bolt.ErrDamaged) || errors.Is(err, bolt.ErrUnknownFormat), "size %d: %v", size, err)
			continue
		}
		opened++
		ov, err := tr.FeedOverview(context.Background(), "")
		require.NoError(t, err)
		require.Len(t, ov, 1)
		assert.Equal(t, int64(100), ov[0].Batches, "size %d", size)
		require.NoError(t, tr.Close())
		require.NoError(t, os.Remove(path))
	}
	t.Logf("%d cuts, %d opened", len(sizes), opened)
}

// Bytes at the edges of what validation allows come back byte for byte:
// 64 events, no data, every byte value encryptedData may hold, a first
// batch larger than a page.
func TestExactBytesAtTheEdges(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	var enc []byte
	for b := 1; b < 0x80; b++ {
		enc = append(enc, byte(b))
	}
	enc = append(enc, "\u0080\u07ff\u0800\uffff\U00010000\U0010ffff\u2028"...)
	huge := append(append([]byte(`"`), bytes.Repeat([]byte("z"), transport.MaxPageBytes+10)...), '"')
	events := make([]transport.Event, transport.MaxBatchEvents)
	for i := range events {
		events[i] = transport.Event{EventID: uuid.NewString(), EventType: "Edge"}
		switch i % 3 {
		case 1:
			events[i].Data = []byte(fmt.Sprintf(`{"i": %d}`, i))
		case 2:
			events[i].EncryptedData = string(enc)
		}
	}
	events[0].Data = huge
	ref := transport.Ref{Type: "edge", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, events, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, ref, events[1:2], transport.Exactly(1)))
	require.NoError(t, tr.Close())
	tr = open(t, path)
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.True(t, p.HasMore, "the huge batch comes alone")
	require.Equal(t, int64(1), p.Version)
	require.Len(t, p.Events, len(events))
	for i := range events {
		assert.Equal(t, events[i].EventID, p.Events[i].EventID)
		assert.True(t, bytes.Equal(events[i].Data, p.Events[i].Data), "event %d", i)
		assert.Equal(t, events[i].EncryptedData, p.Events[i].EncryptedData, "event %d", i)
	}
	p, err = tr.Load(ctx, ref, 1, 0)
	require.NoError(t, err)
	require.Len(t, p.Events, 1)
	assert.Equal(t, events[1], p.Events[0])
}

// A second Open of an open file through another name of it (a symlink, a
// relative path) fails at once as already open in this process, not after
// the lock's wait blaming another process.
func TestSecondOpenThroughAnotherName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.db")
	open(t, path)
	link := filepath.Join(dir, "link.db")
	require.NoError(t, os.Symlink(path, link))
	linkedDir := filepath.Join(t.TempDir(), "dir")
	require.NoError(t, os.Symlink(dir, linkedDir))
	for _, other := range []string{link, filepath.Join(linkedDir, "events.db"), filepath.Join(dir, ".", "x", "..", "events.db")} {
		_, err := bolt.Open(other, bolt.WithOpenTimeout(30*time.Second))
		require.ErrorIs(t, err, bolt.ErrLocked, other)
		assert.Contains(t, err.Error(), "already open in this process", other)
	}
	t.Chdir(linkedDir)
	_, err := bolt.Open("events.db", bolt.WithOpenTimeout(30*time.Second))
	require.ErrorIs(t, err, bolt.ErrLocked)
	assert.Contains(t, err.Error(), "already open in this process", "relative, in a linked directory")
}

// Close while stores, bulk stores, loads and waiting feed readers run: each
// call ends with success or ErrClosed, nothing hangs, no goroutine is left.
func TestCloseWhileEverythingRuns(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tr, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	require.NoError(t, err)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	started := make(chan struct{}, 16)
	run := func(f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if i == 0 {
					started <- struct{}{}
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	ev := []transport.Event{{EventType: "Tick", Data: []byte(`{}`)}}
	for range 2 {
		run(func(int) error {
			return tr.Store(ctx, transport.Ref{Type: "clock", ID: uuid.NewString()}, ev, transport.MustNotExist)
		})
		run(func(int) error {
			return tr.StoreBulk(ctx, transport.Scope{Type: "clock"}, []transport.Batch{{AggregateID: uuid.NewString(), Events: ev, Expected: transport.MustNotExist}})
		})
		run(func(int) error {
			_, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "elsewhere"}, Wait: transport.MaxFeedWait})
			return err
		})
		run(func(int) error {
			_, err := tr.List(ctx, transport.Scope{Type: "clock"}, 0, 10)
			return err
		})
	}
	for range 8 {
		<-started
	}
	require.NoError(t, tr.Close())
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		n++
		require.ErrorIs(t, err, bolt.ErrClosed)
	}
	assert.Equal(t, 8, n)
}

func feedEntries(tx *bbolt.Tx, tenant string) *bbolt.Bucket {
	return tx.Bucket([]byte("feeds")).Bucket([]byte("t:" + tenant)).Bucket([]byte("entries"))
}

// A feed entry that disagrees with the batch it points at (its version, its
// store time or its number changed on disk) is damage naming the entry,
// never another batch's events under its number.
func TestFeedEntryThatDisagreesWithItsBatch(t *testing.T) {
	ctx := context.Background()
	for _, what := range []string{"version", "stored", "number"} {
		t.Run(what, func(t *testing.T) {
			tr := open(t, filepath.Join(t.TempDir(), "events.db"))
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			for v := int64(0); v < 2; v++ {
				require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderNoted", Data: []byte(fmt.Sprintf(`{"v":%d}`, v+1))}}, transport.Exactly(v)))
			}
			rewrite(t, tr, func(tx *bbolt.Tx) error {
				b := feedEntries(tx, "")
				one := []byte{0, 0, 0, 0, 0, 0, 0, 1}
				v := bytes.Clone(b.Get(one))
				switch what {
				case "version":
					binary.BigEndian.PutUint64(v[:8], 2)
				case "stored":
					v[15] ^= 1
				case "number":
					if err := b.Delete(one); err != nil {
						return err
					}
					v = bytes.Clone(b.Get([]byte{0, 0, 0, 0, 0, 0, 0, 2}))
					one[7] = 3 // entry 3 says what entry 2 says
				}
				return b.Put(one, v)
			})
			p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
			require.ErrorIs(t, err, bolt.ErrDamaged, "ReadFeed gave %+v", p.Entries)
			bad := int64(1)
			if what == "number" {
				bad = 3
			}
			assert.Contains(t, err.Error(), fmt.Sprintf("feed entry %d ", bad))
			require.NoError(t, tr.SkipDamagedFeedEntry(ctx, "", bad), "the entry ReadFeed calls damaged can be skipped")
			p, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}})
			require.NoError(t, err)
			assert.Len(t, p.Entries, 1)
		})
	}
}

// An aggregate record whose version went down on disk is damage: Load does
// not end early, and Store does not write over a batch that is there.
func TestLoweredAggregateVersionIsDamage(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	for v := int64(0); v < 2; v++ {
		require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderNoted", Data: []byte(fmt.Sprintf(`{"v":%d}`, v+1))}}, transport.Exactly(v)))
	}
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		b := aggBucket(tx, ref)
		m := bytes.Clone(b.Get([]byte("meta")))
		binary.BigEndian.PutUint64(m[:8], 1)
		return b.Put([]byte("meta"), m)
	})
	p, err := tr.Load(ctx, ref, 0, 0)
	require.ErrorIs(t, err, bolt.ErrDamaged, "Load gave version %d", p.Version)
	assert.Contains(t, err.Error(), ref.ID)
	_, err = tr.Load(ctx, ref, 1, 0)
	require.ErrorIs(t, err, bolt.ErrDamaged)
	err = tr.Store(ctx, ref, []transport.Event{{EventType: "OrderNoted", Data: []byte(`{"v":"over"}`)}}, transport.Exactly(1))
	require.ErrorIs(t, err, bolt.ErrDamaged)
	assert.Contains(t, err.Error(), ref.ID)
	rewrite(t, tr, func(tx *bbolt.Tx) error {
		assert.NotContains(t, string(aggBucket(tx, ref).Get([]byte{0, 0, 0, 0, 0, 0, 0, 2})), "over", "batch 2 is untouched")
		return nil
	})
}

// openAndSay says "opening", opens the file (upgrading it) and says
// "opened"; the upgrade crash test kills it somewhere in between.
func openAndSay(path string) {
	fmt.Println("opening")
	tr, err := bolt.Open(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	_ = tr.Close()
	fmt.Println("opened")
}

// writeFormat1 writes a format 1 file of n aggregates of two batches each.
func writeFormat1(t *testing.T, path string, n int) []string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	ids := make([]string, n)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		require.NoError(t, meta.Put([]byte("format"), []byte("1")))
		scopes, _ := tx.CreateBucket([]byte("scopes"))
		scope, _ := scopes.CreateBucket([]byte("\x00order"))
		for i := range ids {
			ids[i] = uuid.NewString()
			agg, _ := scope.CreateBucket([]byte(ids[i]))
			for v := 1; v <= 2; v++ {
				k := make([]byte, 8)
				binary.BigEndian.PutUint64(k, uint64(v))
				require.NoError(t, agg.Put(k, []byte(fmt.Sprintf(`[{"eventType":"OrderNoted","data":{"i":%d,"v":%d}}]`, i, v))))
			}
			m := make([]byte, 16)
			binary.BigEndian.PutUint64(m[:8], 2)
			binary.BigEndian.PutUint64(m[8:], uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()))
			require.NoError(t, agg.Put([]byte("meta"), m))
		}
		return nil
	}))
	require.NoError(t, db.Close())
	return ids
}

// A process killed (SIGKILL) while it upgrades a format 1 file leaves a
// file that opens, upgraded or not, with every batch there.
func TestCrashDuringUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	orig := filepath.Join(dir, "v1.db")
	ids := writeFormat1(t, orig, 3000)
	whole, err := os.ReadFile(orig)
	require.NoError(t, err)
	// How long an upgrade takes here, to aim the kills inside it.
	timed := filepath.Join(dir, "timed.db")
	require.NoError(t, os.WriteFile(timed, whole, 0o600))
	began := time.Now()
	tr, err := bolt.Open(timed)
	require.NoError(t, err)
	took := time.Since(began)
	require.NoError(t, tr.Close())
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	upgraded := 0
	for round := range 6 {
		path := filepath.Join(dir, fmt.Sprintf("round-%d.db", round))
		require.NoError(t, os.WriteFile(path, whole, 0o600))
		cmd, out := child(t, "open", path)
		require.True(t, out.Scan())
		require.Equal(t, "opening", out.Text())
		time.Sleep(time.Duration(rng.Int64N(int64(took) * 3 / 2)))
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		finished := out.Scan() && out.Text() == "opened"
		_ = cmd.Wait()

		tr, err := bolt.Open(path)
		require.NoError(t, err, "round %d: the file opens after the kill", round)
		ctx := context.Background()
		for i, id := range ids {
			p, err := tr.Load(ctx, transport.Ref{Type: "order", ID: id}, 0, 0)
			require.NoError(t, err)
			require.Len(t, p.Events, 2)
			require.JSONEq(t, fmt.Sprintf(`{"i":%d,"v":2}`, i), string(p.Events[1].Data))
		}
		head, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
		require.NoError(t, err)
		assert.Equal(t, int64(2*len(ids)), head)
		require.NoError(t, tr.Close())
		if finished {
			upgraded++
		}
		t.Logf("round %d: child finished: %v", round, finished)
	}
	t.Logf("upgrade took %s; %d of 6 children finished before the kill", took, upgraded)
}

// Bytes changed on disk in bbolt's own pages (page headers: number, flags,
// count) are ErrDamaged from Open or from the call that meets them: never a
// panic or a fault that kills the process. Without the guard, bbolt panics
// ("Page expected to be: ..., but self identifies as ...") out of Load,
// ReadFeed, FeedOverview or Store.
func TestFlippedPageBytesAreDamageNotAPanic(t *testing.T) {
	whole := bigFile(t)
	dir := t.TempDir()
	seed := uint64(28)
	if testing.Short() {
		seed = 1
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	ctx := context.Background()
	damaged := 0
	ok := func(err error) {
		if err != nil {
			require.ErrorIs(t, err, bolt.ErrDamaged)
			damaged++
		}
	}
	for trial := range 80 {
		b := bytes.Clone(whole)
		for range 1 + rng.IntN(3) {
			off := (2+rng.IntN(len(b)/4096-2))*4096 + rng.IntN(16)
			b[off] ^= byte(1 + rng.IntN(255))
		}
		path := filepath.Join(dir, fmt.Sprintf("flip-%d.db", trial))
		require.NoError(t, os.WriteFile(path, b, 0o600))
		tr, err := bolt.Open(path)
		if err != nil {
			require.ErrorIs(t, err, bolt.ErrDamaged)
			continue
		}
		_, err = tr.FeedOverview(ctx, "")
		ok(err)
		l, err := tr.List(ctx, transport.Scope{Type: "blob"}, 0, 100)
		ok(err)
		for _, a := range l.Aggregates {
			_, err := tr.Load(ctx, transport.Ref{Type: "blob", ID: a.AggregateID}, 0, 0)
			ok(err)
		}
		for since := int64(0); ; {
			p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Since: since})
			ok(err)
			if err != nil || !p.HasMore {
				break
			}
			since = p.Entries[len(p.Entries)-1].Sequence
		}
		ok(tr.Store(ctx, transport.Ref{Type: "blob", ID: uuid.NewString()}, []transport.Event{{EventType: "Big", Data: []byte(`1`)}}, transport.MustNotExist))
		require.NoError(t, tr.Close())
		require.NoError(t, os.Remove(path))
	}
	t.Logf("%d calls met damage", damaged)
}

// Deletes of single aggregates and of a whole type race stores, bulk stores
// and feed readers: no reader ever meets a damaged or dangling entry, and
// afterwards the feed holds exactly the batches of the aggregates left.
func TestDeletesRaceStoresAndReaders(t *testing.T) {
	ctx := context.Background()
	tr := open(t, filepath.Join(t.TempDir(), "events.db"))
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	ev := []transport.Event{{EventType: "Noted", Data: []byte(`{}`)}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				id := ids[(i+w)%len(ids)]
				if i%3 == 0 {
					_ = tr.StoreBulk(ctx, transport.Scope{Type: "order"}, []transport.Batch{{AggregateID: id, Events: ev, Expected: transport.Any}, {AggregateID: ids[(i+w+1)%len(ids)], Events: ev, Expected: transport.Any}})
				} else {
					assert.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: id}, ev, transport.Any))
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 30; i++ {
			target := transport.DeleteAggregate(transport.Ref{Type: "order", ID: ids[i%len(ids)]})
			if i%10 == 9 {
				target = transport.DeleteTarget{Type: "order", AllOfType: true}
			}
			tok, err := tr.RequestDelete(ctx, target)
			assert.NoError(t, err)
			assert.NoError(t, tr.ConfirmDelete(ctx, target, tok))
		}
	}()
	readers := sync.WaitGroup{}
	for _, feed := range []string{transport.AllTypes, "order"} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for since := int64(0); ; {
					p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: feed}, Since: since, Limit: 7})
					if !assert.NoError(t, err) || !p.HasMore {
						break
					}
					since = p.Entries[len(p.Entries)-1].Sequence
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	var entries int64
	for since := int64(0); ; {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since})
		require.NoError(t, err)
		entries += int64(len(p.Entries))
		if !p.HasMore {
			break
		}
		since = p.Entries[len(p.Entries)-1].Sequence
	}
	ov, err := tr.FeedOverview(ctx, "")
	require.NoError(t, err)
	var batches int64
	if len(ov) == 1 {
		batches = ov[0].Batches
	}
	assert.Equal(t, batches, entries, "the feed holds exactly the batches left")
}

// Close twice is harmless, and the file can be opened again after it.
func TestCloseTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	require.NoError(t, tr.Close())
	_, err = tr.FeedHead(context.Background(), transport.Scope{Type: transport.AllTypes})
	require.ErrorIs(t, err, bolt.ErrClosed)
	tr = open(t, path)
	_, err = tr.FeedHead(context.Background(), transport.Scope{Type: transport.AllTypes})
	require.NoError(t, err)
}
