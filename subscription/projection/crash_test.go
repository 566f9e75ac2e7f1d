package projection_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/projection"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

const (
	crashEnv  = "SOURCED_PROJECTION_CRASH_CHILD"
	crashName = "order-totals"
)

// runCrashChild is the consumer process of TestCrashProjection: it follows
// the local server's order feed with a projection into a bbolt read model
// (typed handlers), until it is killed, or, given a head, until it has
// reached it.
func runCrashChild() bool {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		return false
	}
	var url, view string
	var head int64
	if _, err := fmt.Sscanf(spec, "%s %s %d", &url, &view, &head); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		os.Exit(2)
	}
	if err := crashConsume(url, view, head); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	return true
}

func crashConsume(url, view string, head int64) error {
	ctx := context.Background()
	feed, err := serialized.New(serialized.WithBaseURL(url))
	if err != nil {
		return err
	}
	db, err := bbolt.Open(view, 0o600, &bbolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	cps, err := boltcheckpoint.New(db)
	if err != nil {
		return err
	}
	p := projection.New(cps)
	totalsModel(p)
	sub, err := subscription.New(feed, crashName, cps, subscription.Feed("order"), subscription.PageSize(50), subscription.Wait(time.Second))
	if err != nil {
		return err
	}
	p.Attach(sub)
	fmt.Println("ready")
	if head == 0 {
		return sub.Run(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	if err := sub.Await(ctx, head); err != nil {
		return err
	}
	if err := sub.Close(ctx); err != nil {
		return err
	}
	return <-done
}

// totalsModel: per order, the total placed and the amount paid; per
// sequence number, how often its entry was applied (above 1: a
// duplicate).
func totalsModel(p *projection.Projection[*bbolt.Tx]) {
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPlaced) error {
		return addTo(tx, "placed", []byte(env.AggregateID), int64(e.Total))
	})
	projection.On(p, func(_ context.Context, tx *bbolt.Tx, env eventbus.Envelope, e OrderPaid) error {
		return addTo(tx, "paid", []byte(env.AggregateID), int64(e.Amount))
	})
	p.OnEntry(func(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		k := make([]byte, 8)
		binary.BigEndian.PutUint64(k, uint64(e.Sequence))
		return addTo(tx, "applied", k, 1)
	})
}

func addTo(tx *bbolt.Tx, bucket string, key []byte, n int64) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return err
	}
	cur, _ := strconv.ParseInt(string(b.Get(key)), 10, 64)
	return b.Put(key, []byte(strconv.FormatInt(cur+n, 10)))
}

// TestCrashProjection: a consumer process applies the order feed of a
// local server to a bbolt read model through a projection, while 4
// writers store orders (with events of a type the projection has no
// handler for); it is SIGKILLed at random points, five rounds, then runs
// until it has caught up. After every kill the read model equals one
// rebuilt from the feed up to its checkpoint, with 0 duplicates; at the
// end, one rebuilt from the whole feed.
func TestCrashProjection(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	mem := memory.New()
	srv := localserver.NewServer(mem)
	defer srv.Close()
	view := filepath.Join(t.TempDir(), "view.db")
	orders := make([]string, 40)
	for i := range orders {
		orders[i] = uuid.NewString()
	}
	var stored atomic.Int64
	write := func(rng *rand.Rand) {
		ref := transport.Ref{Type: "order", ID: orders[rng.IntN(len(orders))]}
		evs := make([]transport.Event, 1+rng.IntN(3))
		for j := range evs {
			switch rng.IntN(5) {
			case 0:
				evs[j] = transport.Event{EventType: "OrderNoted", Data: json.RawMessage(`{"note":"no handler"}`)}
			case 1, 2:
				evs[j] = transport.Event{EventType: "OrderPlaced", Data: json.RawMessage(fmt.Sprintf(`{"total":%d}`, 1+rng.IntN(100)))}
			default:
				evs[j] = transport.Event{EventType: "OrderPaid", Data: json.RawMessage(fmt.Sprintf(`{"amount":%d}`, 1+rng.IntN(100)))}
			}
		}
		require.NoError(t, mem.Store(context.Background(), ref, evs, transport.Any))
		stored.Add(1)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for range 500 {
		write(rng)
	}
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w+2)))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(rng.IntN(2000)) * time.Microsecond):
					write(rng)
				}
			}
		}()
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	start := func(head int64) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", crashEnv, srv.URL, view, head))
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ready\n", line)
		return cmd
	}
	kills := 0
	for round := range 5 {
		cmd := start(0)
		// A random point: in the catch-up (mid-page, mid-commit) or once
		// it follows live.
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			kills++
		} else {
			require.NoError(t, err, "round %d: the consumer ended on its own", round)
		}
		checkModel(t, mem, view, round, false)
	}
	close(stop)
	writers.Wait()
	head, err := mem.FeedHead(context.Background(), transport.Scope{Type: "order"})
	require.NoError(t, err)
	cmd := start(head)
	require.NoError(t, cmd.Wait(), "the last consumer catches up to %d and stops", head)
	checkModel(t, mem, view, 5, true)
	assert.Equal(t, 5, kills)
	t.Logf("%d batches stored", stored.Load())
}

// checkModel compares the read model with one rebuilt from the feed up to
// the model's checkpoint (the whole feed when whole), and looks for
// duplicates.
func checkModel(t *testing.T, mem *memory.Transport, view string, round int, whole bool) {
	t.Helper()
	ctx := context.Background()
	db, err := bbolt.Open(view, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer db.Close()
	var cp subscription.Checkpoint
	got := map[string]map[string]int64{"placed": {}, "paid": {}}
	dups, applied := 0, 0
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		cp, _ = boltcheckpoint.GetCheckpoint(tx, crashName)
		for name, m := range got {
			if b := tx.Bucket([]byte(name)); b != nil {
				_ = b.ForEach(func(k, v []byte) error { m[string(k)], _ = strconv.ParseInt(string(v), 10, 64); return nil })
			}
		}
		if b := tx.Bucket([]byte("applied")); b != nil {
			_ = b.ForEach(func(_, v []byte) error {
				applied++
				if string(v) != "1" {
					dups++
				}
				return nil
			})
		}
		return nil
	}))
	want := map[string]map[string]int64{"placed": {}, "paid": {}}
	entries := 0
	var last transport.FeedEntry
	head, err := mem.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	for since := int64(0); since < cp.Sequence; {
		p, err := mem.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since})
		require.NoError(t, err)
		require.NotEmpty(t, p.Entries)
		for _, e := range p.Entries {
			if e.Sequence > cp.Sequence {
				break
			}
			entries++
			last = e
			for _, ev := range e.Events {
				switch ev.EventType {
				case "OrderPlaced":
					var v OrderPlaced
					require.NoError(t, json.Unmarshal(ev.Data, &v))
					want["placed"][e.AggregateID] += int64(v.Total)
				case "OrderPaid":
					var v OrderPaid
					require.NoError(t, json.Unmarshal(ev.Data, &v))
					want["paid"][e.AggregateID] += int64(v.Amount)
				}
			}
			since = e.Sequence
		}
	}
	if whole {
		assert.Equal(t, head, cp.Sequence, "the last consumer reached the head")
	}
	if cp.Sequence > 0 {
		assert.Equal(t, subscription.CheckpointOf(last), cp, "round %d: the checkpoint stands on its entry", round)
	}
	assert.Equal(t, want, got, "round %d: the read model equals one rebuilt up to checkpoint %d", round, cp.Sequence)
	assert.Zero(t, dups, "round %d: no batch applied twice", round)
	assert.Equal(t, entries, applied, "round %d: every batch up to the checkpoint applied once", round)
	t.Logf("round %d: checkpoint %d of head %d (%d batches applied, %d duplicates)", round, cp.Sequence, head, applied, dups)
}
