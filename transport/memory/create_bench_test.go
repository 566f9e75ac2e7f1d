//go:build unix

package memory_test

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

type account struct{ Balance int64 }

// Opened is the event each created account records.
type Opened struct {
	Owner   string `json:"owner"`
	Deposit int64  `json:"deposit"`
}

var accounts = aggregate.MustNew[account]("account", aggregate.On(func(s *account, e Opened) { s.Balance = e.Deposit }))

// BenchmarkCreateMillion creates 1,000,000 aggregates of one event each
// through repository.Create on one memory transport, and reports the cost
// per Create of the first and of the last 100,000: the store must not get
// slower as it grows (issue 20: last/first within 1.2). It reports wall
// time and the process's CPU time (every thread, the garbage collector's
// included): on a shared machine the CPU time is the steadier figure. It
// also reports what one full garbage collection costs with the million
// aggregates stored (CPU time of runtime.GC(), every thread) and the heap
// objects then live: a collection that falls in the last 100,000 costs
// that much, so the store must keep it small.
//
// last/first and cpu-last/first are the measure: the first
// million the process creates, as a fresh program would. A second million
// follows in the same process, into a new store (the b.Loop iteration;
// the allocation figures and the collection are of that one), and its
// ratios are reported as warm-last/first and warm-cpu-last/first. The two
// differ in what the first 100,000 cost: in a fresh process they also pay
// for the kernel's first touch of each page the heap grows into, in
// bursts (windows of one fresh run measured 2.2 to 5.0 µs per create, in
// no order); in a warm one they run on tables small enough for the CPU's
// caches, while the last 100,000 look ids up at random in tables of tens
// of megabytes (a cache and TLB miss or two per create): the warm ratio
// is higher. Run it with -benchtime 1x; one run takes about ten seconds.
func BenchmarkCreateMillion(b *testing.B) {
	const total, chunk = 1_000_000, 100_000
	// The ids are made up front, outside the timed windows, in one buffer:
	// a million strings kept live by the benchmark would be a million
	// objects for every collection to mark, which the store does not keep.
	const idLen = 36
	idBuf := make([]byte, 0, total*idLen)
	for range total {
		idBuf = append(idBuf, uuid.NewString()...)
	}
	ctx := context.Background()
	// million creates the million aggregates in a new store, and returns
	// it with the wall and CPU time of the first and the last 100,000.
	million := func() (repo *repository.Repository[account], first, last, firstCPU, lastCPU time.Duration) {
		repo = repository.New(memory.New(), accounts)
		began, beganCPU := time.Now(), cpuTime()
		for i := range total {
			id := string(idBuf[i*idLen : (i+1)*idLen])
			if _, err := repo.Create(ctx, id, func(r *aggregate.Root[account]) error {
				return r.Record(Opened{Owner: "someone", Deposit: 100})
			}); err != nil {
				b.Fatal(err)
			}
			switch i + 1 {
			case chunk:
				first, firstCPU = time.Since(began), cpuTime()-beganCPU
			case total - chunk:
				began, beganCPU = time.Now(), cpuTime()
			case total:
				last, lastCPU = time.Since(began), cpuTime()-beganCPU
			}
		}
		return repo, first, last, firstCPU, lastCPU
	}
	_, coldFirst, coldLast, coldFirstCPU, coldLastCPU := million()
	runtime.GC()
	b.ReportAllocs()
	var first, last, firstCPU, lastCPU, gcCPU time.Duration
	var objects uint64
	for b.Loop() {
		repo, f, l, fc, lc := million()
		first, last, firstCPU, lastCPU = first+f, last+l, firstCPU+fc, lastCPU+lc
		runtime.GC()
		gcBegan := cpuTime()
		runtime.GC()
		gcCPU += cpuTime() - gcBegan
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		objects += ms.HeapObjects
		runtime.KeepAlive(repo)
	}
	n := float64(b.N * chunk)
	b.ReportMetric(float64(coldFirst.Nanoseconds())/chunk, "first100k-ns/create")
	b.ReportMetric(float64(coldLast.Nanoseconds())/chunk, "last100k-ns/create")
	b.ReportMetric(float64(coldLast)/float64(coldFirst), "last/first")
	b.ReportMetric(float64(coldFirstCPU.Nanoseconds())/chunk, "first100k-cpu-ns/create")
	b.ReportMetric(float64(coldLastCPU.Nanoseconds())/chunk, "last100k-cpu-ns/create")
	b.ReportMetric(float64(coldLastCPU)/float64(coldFirstCPU), "cpu-last/first")
	b.ReportMetric(float64(first.Nanoseconds())/n, "warm-first100k-ns/create")
	b.ReportMetric(float64(last.Nanoseconds())/n, "warm-last100k-ns/create")
	b.ReportMetric(float64(last)/float64(first), "warm-last/first")
	b.ReportMetric(float64(lastCPU)/float64(firstCPU), "warm-cpu-last/first")
	b.ReportMetric(float64(gcCPU.Microseconds())/1000/float64(b.N), "full-gc-cpu-ms")
	b.ReportMetric(float64(objects)/float64(b.N), "heap-objects")
}

// cpuTime is the CPU time the process has used, all threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
