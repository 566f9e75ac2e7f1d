package bolt_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/transporttest"
)

func open(t *testing.T, path string, opts ...bolt.Option) *bolt.Transport {
	t.Helper()
	tr, err := bolt.Open(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestConformance(t *testing.T) {
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		return open(t, filepath.Join(t.TempDir(), "events.db"), bolt.WithClock(now))
	})
}

func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	ref := transport.Ref{Tenant: uuid.NewString(), Type: "order", ID: uuid.NewString()}
	tr, err := bolt.Open(path)
	require.NoError(t, err)
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{"n":1}`), EncryptedData: "x"}}, transport.MustNotExist))
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid", Data: []byte(`{"n":2}`)}}, transport.Exactly(1)))
	require.NoError(t, tr.Close())

	tr = open(t, path)
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(2), p.Version)
	require.Len(t, p.Events, 2)
	assert.JSONEq(t, `{"n":2}`, string(p.Events[1].Data))
	assert.Equal(t, "x", p.Events[0].EncryptedData)
	assert.ErrorIs(t, tr.Store(ctx, ref, []transport.Event{{EventType: "OrderPaid"}}, transport.Exactly(1)), transport.ErrConflict)
}

func TestUnknownFormats(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	require.NoError(t, os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 1000)), 0o600))
	_, err := bolt.Open(garbage)
	assert.ErrorIs(t, err, bolt.ErrUnknownFormat)
	assert.Contains(t, err.Error(), garbage)

	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err }))
	require.NoError(t, db.Close())
	_, err = bolt.Open(foreign)
	assert.ErrorIs(t, err, bolt.ErrUnknownFormat, "someone else's bbolt file")

	future := filepath.Join(dir, "future.db")
	tr, err := bolt.Open(future)
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	db, err = bbolt.Open(future, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("99")) }))
	require.NoError(t, db.Close())
	_, err = bolt.Open(future)
	assert.ErrorIs(t, err, bolt.ErrUnknownFormat)
	assert.Contains(t, err.Error(), `"99"`)
}

// The child processes of the tests below run this test binary again with
// SOURCED_BOLT_CHILD set.
func TestMain(m *testing.M) {
	switch os.Getenv("SOURCED_BOLT_CHILD") {
	case "hold":
		hold(os.Getenv("SOURCED_BOLT_PATH"))
		return
	case "append":
		appendForever(os.Getenv("SOURCED_BOLT_PATH"))
		return
	case "append-many":
		appendConcurrently(os.Getenv("SOURCED_BOLT_PATH"))
		return
	case "open":
		openAndSay(os.Getenv("SOURCED_BOLT_PATH"))
		return
	}
	os.Exit(m.Run())
}

// hold opens the file, says so, and waits to be killed.
func hold(path string) {
	tr, err := bolt.Open(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer tr.Close()
	fmt.Println("holding")
	time.Sleep(time.Minute)
}

// crashRef is the aggregate the crash test appends to.
var crashRef = transport.Ref{Type: "journal", ID: "0b8f6a52-3c1e-4d7a-9f2b-6e5d4c3b2a19"}

// appendForever appends batches of 1 to 5 events, each event saying its
// version, index and batch size, and prints "ack <version>" once Store
// returned.
func appendForever(path string) {
	tr, err := bolt.Open(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	v := int64(0)
	if p, err := tr.Load(ctx, crashRef, 0, 0); err == nil {
		for p.HasMore {
			p, _ = tr.Load(ctx, crashRef, p.Version, 0)
		}
		v = p.Version
	}
	out := bufio.NewWriter(os.Stdout)
	for {
		n := int(v%5) + 1
		batch := make([]transport.Event, n)
		for i := range batch {
			batch[i] = transport.Event{EventType: "Entry", Data: []byte(fmt.Sprintf(`{"v":%d,"i":%d,"n":%d}`, v+1, i, n))}
		}
		if err := tr.Store(ctx, crashRef, batch, transport.Exactly(v)); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		v++
		fmt.Fprintf(out, "ack %d\n", v)
		_ = out.Flush()
	}
}

// journalRefs are the aggregates the concurrent crash test appends to,
// one per writer.
var journalRefs = func() []transport.Ref {
	refs := make([]transport.Ref, 8)
	for i := range refs {
		refs[i] = transport.Ref{Type: "journal", ID: fmt.Sprintf("5d1c7e20-94b3-4f6a-8c2d-1e0f3a5b7c%02d", i)}
	}
	return refs
}()

// appendConcurrently appends as appendForever does, from one goroutine per
// journalRefs aggregate at once (so that their batches are committed in
// shared transactions), and prints "ack <writer> <version>" once Store
// returned.
func appendConcurrently(path string) {
	tr, err := bolt.Open(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	for w, ref := range journalRefs {
		go func() {
			v := int64(0)
			if p, err := tr.Load(ctx, ref, 0, 0); err == nil {
				for p.HasMore {
					p, _ = tr.Load(ctx, ref, p.Version, 0)
				}
				v = p.Version
			}
			for {
				n := int(v%5) + 1
				batch := make([]transport.Event, n)
				for i := range batch {
					batch[i] = transport.Event{EventType: "Entry", Data: []byte(fmt.Sprintf(`{"v":%d,"i":%d,"n":%d}`, v+1, i, n))}
				}
				if err := tr.Store(ctx, ref, batch, transport.Exactly(v)); err != nil {
					fmt.Println("error", err)
					os.Exit(1)
				}
				v++
				mu.Lock()
				fmt.Fprintf(out, "ack %d %d\n", w, v)
				_ = out.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

func child(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SOURCED_BOLT_CHILD="+mode, "SOURCED_BOLT_PATH="+path)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return cmd, bufio.NewScanner(stdout)
}

func TestLockedFileFailsAfterBoundedWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	cmd, out := child(t, "hold", path)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	require.True(t, out.Scan())
	require.Equal(t, "holding", out.Text())

	began := time.Now()
	_, err := bolt.Open(path, bolt.WithOpenTimeout(200*time.Millisecond))
	require.ErrorIs(t, err, bolt.ErrLocked)
	assert.Contains(t, err.Error(), path)
	assert.Less(t, time.Since(began), 5*time.Second, "a bounded wait, not a hang")
}

// TestCrashKeepsEveryAcknowledgedBatch kills an appending child with
// SIGKILL at random moments, five times; after each kill the file holds
// every acknowledged batch whole, no partial batch, and no version gap.
func TestCrashKeepsEveryAcknowledgedBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	total := int64(0)
	for round := 0; round < 5; round++ {
		cmd, out := child(t, "append", path)
		acked := int64(0)
		lines := make(chan int64)
		go func() {
			defer close(lines)
			for out.Scan() {
				if v, err := strconv.ParseInt(strings.TrimPrefix(out.Text(), "ack "), 10, 64); err == nil {
					lines <- v
				}
			}
		}()
		// The kill comes at a random moment once the child appends (a
		// loaded machine may take long to start it).
		var deadline <-chan time.Time
		giveUp := time.After(30 * time.Second)
	read:
		for {
			select {
			case v, ok := <-lines:
				if !ok {
					break read
				}
				acked = v
				if deadline == nil {
					deadline = time.After(time.Duration(150+rng.IntN(200)) * time.Millisecond)
				}
			case <-deadline:
				break read
			case <-giveUp:
				break read
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for v := range lines { // acknowledgements already written count too
			acked = v
		}
		_ = cmd.Wait()

		tr, err := bolt.Open(path)
		require.NoError(t, err)
		version := checkJournal(t, tr, crashRef, acked, round)
		require.NoError(t, tr.Close())
		t.Logf("round %d: %d acknowledged, %d on disk", round, acked, version)
		total = version
	}
	assert.Positive(t, total, "the child made progress")
}

// checkJournal loads the aggregate an appending child wrote: it holds at
// least acked batches, each whole, in order, without a gap. It returns the
// aggregate's version.
func checkJournal(t *testing.T, tr *bolt.Transport, ref transport.Ref, acked int64, round int) int64 {
	t.Helper()
	var events []transport.Event
	version := int64(0)
	for since := int64(0); ; {
		p, err := tr.Load(context.Background(), ref, since, 0)
		if acked == 0 && err != nil {
			break
		}
		require.NoError(t, err)
		events = append(events, p.Events...)
		version = p.Version
		if !p.HasMore {
			break
		}
		since = p.Version
	}
	assert.GreaterOrEqual(t, version, acked, "round %d: every acknowledged batch of %s survived", round, ref.ID)
	next := int64(1)
	for i := 0; i < len(events); {
		var e struct{ V, I, N int64 }
		require.NoError(t, json.Unmarshal(events[i].Data, &e))
		require.Equal(t, next, e.V, "round %d: no version gap", round)
		require.Equal(t, int64(0), e.I, "a batch starts at its first event")
		require.LessOrEqual(t, int64(i)+e.N, int64(len(events)), "round %d: batch %d is partial", round, e.V)
		for j := int64(0); j < e.N; j++ {
			var f struct{ V, I, N int64 }
			require.NoError(t, json.Unmarshal(events[i+int(j)].Data, &f))
			require.Equal(t, e.V, f.V)
			require.Equal(t, j, f.I)
		}
		i += int(e.N)
		next++
	}
	assert.Equal(t, version, next-1)
	return version
}

// TestCrashWithConcurrentWritersKeepsEveryAcknowledgedBatch kills a child
// appending from eight goroutines at once (its batches committed in shared
// transactions) with SIGKILL at random moments, three times; after each
// kill every aggregate holds every acknowledged batch whole, and nothing
// partial.
func TestCrashWithConcurrentWritersKeepsEveryAcknowledgedBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 22))
	progress := int64(0)
	for round := 0; round < 3; round++ {
		cmd, out := child(t, "append-many", path)
		acked := make([]int64, len(journalRefs))
		lines := make(chan [2]int64)
		go func() {
			defer close(lines)
			for out.Scan() {
				var w, v int64
				if _, err := fmt.Sscanf(out.Text(), "ack %d %d", &w, &v); err == nil {
					lines <- [2]int64{w, v}
				}
			}
		}()
		var deadline <-chan time.Time
		giveUp := time.After(30 * time.Second)
	read:
		for {
			select {
			case a, ok := <-lines:
				if !ok {
					break read
				}
				acked[a[0]] = max(acked[a[0]], a[1])
				if deadline == nil {
					deadline = time.After(time.Duration(150+rng.IntN(200)) * time.Millisecond)
				}
			case <-deadline:
				break read
			case <-giveUp:
				break read
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for a := range lines {
			acked[a[0]] = max(acked[a[0]], a[1])
		}
		_ = cmd.Wait()

		tr, err := bolt.Open(path)
		require.NoError(t, err)
		total := int64(0)
		for w, ref := range journalRefs {
			total += checkJournal(t, tr, ref, acked[w], round)
		}
		require.NoError(t, tr.Close())
		t.Logf("round %d: acknowledged %v, %d batches on disk", round, acked, total)
		progress = total
	}
	assert.Positive(t, progress, "the child made progress")
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "sourced-bolt")
	defer os.RemoveAll(dir)
	store, err := bolt.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	ref := transport.Ref{Type: "payment", ID: "2c3cf88c-ee88-427e-818a-ab0267511c84"}
	_ = store.Store(ctx, ref, []transport.Event{{EventType: "PaymentProcessed", Data: []byte(`{"amount":1000}`)}}, transport.MustNotExist)
	page, _ := store.Load(ctx, ref, 0, 0)
	fmt.Println(page.Version, page.Events[0].EventType, string(page.Events[0].Data))
	// Output: 1 PaymentProcessed {"amount":1000}
}
