package bolt_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

// gcEvent is the one event of each batch of the concurrent benchmarks: a
// 200-byte payload.
var gcEvent = transport.Event{EventType: "Counted", Data: []byte(`{"note":"` + strings.Repeat("x", 200-11) + `"}`)}

// gcRecordSize is the size of gcEvent's batch record on disk (format 3:
// 21 bytes of header, the event count, four length-prefixed fields), the
// value the bare bbolt loops write.
var gcRecordSize = 21 + 1 + 1 + 36 + 1 + len(gcEvent.EventType) + 2 + len(gcEvent.Data) + 1

// BenchmarkConcurrentStore runs 1, 8 and 64 writers, each storing batches
// of one event to its own aggregate (expecting its version), beside bare
// bbolt loops writing a value of the batch record's size per operation
// into one bucket per writer: one db.Update each, and db.Batch. Reported:
// stores/s over all writers (issue 22).
func BenchmarkConcurrentStore(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("bolt/writers=%d", writers), func(b *testing.B) {
			tr, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			ctx := context.Background()
			refs := make([]transport.Ref, writers)
			for i := range refs {
				refs[i] = transport.Ref{Type: "counter", ID: uuid.NewString()}
			}
			runWriters(b, writers, func(w int, v int64) error {
				return tr.Store(ctx, refs[w], []transport.Event{gcEvent}, transport.Exactly(v))
			})
		})
		for _, how := range []string{"update", "batch"} {
			b.Run(fmt.Sprintf("bbolt-%s/writers=%d", how, writers), func(b *testing.B) {
				db, err := bbolt.Open(filepath.Join(b.TempDir(), "bare.db"), 0o600, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				names := make([][]byte, writers)
				err = db.Update(func(tx *bbolt.Tx) error {
					for i := range names {
						names[i] = []byte(uuid.NewString())
						if _, err := tx.CreateBucket(names[i]); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				write := db.Update
				if how == "batch" {
					write = db.Batch
				}
				runWriters(b, writers, func(w int, v int64) error {
					val := make([]byte, gcRecordSize)
					key := make([]byte, 8)
					binary.BigEndian.PutUint64(key, uint64(v+1))
					return write(func(tx *bbolt.Tx) error { return tx.Bucket(names[w]).Put(key, val) })
				})
			})
		}
	}
}

// runWriters runs b.N operations on writers goroutines; op gets the
// writer's number and how many operations it did before.
func runWriters(b *testing.B, writers int, op func(w int, v int64) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := int64(0); next.Add(1) <= int64(b.N); v++ {
				if err := op(w, v); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "stores/s")
}

// BenchmarkConflictingStore runs a lone Store that conflicts: it commits
// no transaction (no fsync), as before the group commit.
func BenchmarkConflictingStore(b *testing.B) {
	tr, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx := context.Background()
	ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
	if err := tr.Store(ctx, ref, []transport.Event{gcEvent}, transport.MustNotExist); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := tr.Store(ctx, ref, []transport.Event{gcEvent}, transport.Exactly(0)); err == nil {
			b.Fatal("no conflict")
		}
	}
}
