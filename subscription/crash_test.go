package subscription_test

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
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

const (
	crashEnv     = "SOURCED_SUBSCRIPTION_CRASH_CHILD"
	crashName    = "order-totals"
	bucketTotals = "totals"
	bucketSeen   = "applied"
)

// runCrashChild is the consumer process of TestCrashConsumer: it follows
// the event file with a subscription whose read model and checkpoint share
// one bbolt transaction, until it is killed.
func runCrashChild() bool {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		return false
	}
	var events, view string
	if _, err := fmt.Sscanf(spec, "%s %s", &events, &view); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		os.Exit(2)
	}
	if err := consume(events, view); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	return true
}

func consume(events, view string) error {
	store, err := bolt.Open(events)
	if err != nil {
		return err
	}
	db, err := bbolt.Open(view, 0o600, nil)
	if err != nil {
		return err
	}
	cps, err := boltcheckpoint.New(db)
	if err != nil {
		return err
	}
	sub, err := subscription.New(store, crashName, cps, subscription.Feed("order"), subscription.PageSize(50), subscription.Wait(time.Second))
	if err != nil {
		return err
	}
	sub.OnEntry(cps.Apply(sub.Name(), applyTotals))
	fmt.Println("ready")
	return sub.Run(context.Background())
}

// applyTotals is the read model: a running total per order, and a count of
// how often each sequence number was applied (any count above 1 is a
// duplicate).
func applyTotals(_ context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
	totals, err := tx.CreateBucketIfNotExists([]byte(bucketTotals))
	if err != nil {
		return err
	}
	seen, err := tx.CreateBucketIfNotExists([]byte(bucketSeen))
	if err != nil {
		return err
	}
	sum := totalOf(totals.Get([]byte(e.AggregateID)))
	for _, ev := range e.Events {
		var p OrderPaid
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			return err
		}
		sum += int64(p.Amount)
	}
	if err := totals.Put([]byte(e.AggregateID), []byte(strconv.FormatInt(sum, 10))); err != nil {
		return err
	}
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(e.Sequence))
	n := totalOf(seen.Get(k))
	return seen.Put(k, []byte(strconv.FormatInt(n+1, 10)))
}

func totalOf(v []byte) int64 {
	n, _ := strconv.ParseInt(string(v), 10, 64)
	return n
}

// TestCrashConsumer kills a consumer with SIGKILL at random points, five
// rounds, storing more events between rounds: after each kill the read
// model equals one rebuilt from scratch up to its checkpoint, and no batch
// was applied twice.
func TestCrashConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	events, view := filepath.Join(dir, "events.db"), filepath.Join(dir, "view.db")
	orders := make([]transport.Ref, 40)
	for i := range orders {
		orders[i] = transport.Ref{Type: "order", ID: uuid.NewString()}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	appendBatches := func(n int) {
		store, err := bolt.Open(events)
		require.NoError(t, err)
		defer store.Close()
		for range n {
			ref := orders[rng.IntN(len(orders))]
			evs := make([]transport.Event, 1+rng.IntN(3))
			for j := range evs {
				evs[j] = transport.Event{EventType: "OrderPaid", Data: json.RawMessage(fmt.Sprintf(`{"amount":%d}`, 1+rng.IntN(100)))}
			}
			require.NoError(t, store.Store(context.Background(), ref, evs, transport.Any))
		}
	}
	kills := 0
	for round := range 5 {
		appendBatches(400)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+events+" "+view)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ready\n", line)
		// A random point: somewhere in the catch-up, or once it follows live.
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			kills++
		} else {
			require.NoError(t, err, "round %d: the consumer ended on its own", round)
		}
		checkView(t, events, view, round)
	}
	assert.Equal(t, 5, kills)
}

// checkView compares the read model with one rebuilt from the feed up to
// the model's checkpoint, and looks for duplicates.
func checkView(t *testing.T, events, view string, round int) {
	t.Helper()
	db, err := bbolt.Open(view, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer db.Close()
	store, err := bolt.Open(events)
	require.NoError(t, err)
	defer store.Close()

	var checkpoint int64
	got := map[string]int64{}
	dups, applied := 0, 0
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		checkpoint, _ = boltcheckpoint.Get(tx, crashName)
		if b := tx.Bucket([]byte(bucketTotals)); b != nil {
			_ = b.ForEach(func(k, v []byte) error { got[string(k)] = totalOf(v); return nil })
		}
		if b := tx.Bucket([]byte(bucketSeen)); b != nil {
			_ = b.ForEach(func(_, v []byte) error {
				applied++
				if totalOf(v) != 1 {
					dups++
				}
				return nil
			})
		}
		return nil
	}))
	want := map[string]int64{}
	entries := 0
	for since := int64(0); since < checkpoint; {
		p, err := store.ReadFeed(context.Background(), transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Since: since})
		require.NoError(t, err)
		require.NotEmpty(t, p.Entries)
		for _, e := range p.Entries {
			if e.Sequence > checkpoint {
				break
			}
			entries++
			for _, ev := range e.Events {
				var paid OrderPaid
				require.NoError(t, json.Unmarshal(ev.Data, &paid))
				want[e.AggregateID] += int64(paid.Amount)
			}
			since = e.Sequence
		}
	}
	assert.Equal(t, want, got, "round %d: the read model equals one rebuilt up to checkpoint %d", round, checkpoint)
	assert.Zero(t, dups, "round %d: no batch applied twice", round)
	assert.Equal(t, entries, applied, "round %d: every batch up to the checkpoint applied once", round)
	t.Logf("round %d: killed at checkpoint %d (%d batches applied, %d duplicates)", round, checkpoint, applied, dups)
}
