package pgcheckpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// done collects the sequence numbers whose Apply returned nil.
type done struct {
	mu   sync.Mutex
	seqs map[int64]bool
	more chan struct{}
}

func (d *done) add(seq int64) {
	d.mu.Lock()
	d.seqs[seq] = true
	d.mu.Unlock()
	select {
	case d.more <- struct{}{}:
	default:
	}
}

func (d *done) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		d.mu.Lock()
		got := len(d.seqs)
		d.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-d.more:
		case <-deadline:
			t.Fatalf("%d of %d entries applied", got, n)
		}
	}
}

type runningMember struct {
	cancel   context.CancelFunc
	result   chan error
	assigned chan []int
}

func (m *runningMember) waitFor(t *testing.T, want []int) {
	t.Helper()
	m.waitUntil(t, func(ps []int) bool { return slices.Equal(ps, want) })
}

func (m *runningMember) waitUntil(t *testing.T, ok func([]int) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ps := <-m.assigned:
			if ok(ps) {
				return
			}
		case err := <-m.result:
			t.Fatalf("member stopped: %v", err)
		case <-deadline:
			t.Fatal("member never held the partitions awaited")
		}
	}
}

func (m *runningMember) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	require.NoError(t, <-m.result)
}

func storeOrders(t *testing.T, tr transport.Transport, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		data, _ := json.Marshal(map[string]int{"n": i})
		require.NoError(t, tr.Store(context.Background(), transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: data}}, transport.Any))
	}
}

type groupFixture struct {
	s     *pgcheckpoint.Store
	p     *pgxpool.Pool
	feed  *memory.Transport
	done  *done
	model string
	// fenced counts the applies refused by a fence.
	fenced atomic.Int64
	// hold, when set, runs before each entry is applied: a test pauses a
	// member there.
	hold func(member string, f group.Fence)
}

func newGroupFixture(t *testing.T) *groupFixture {
	t.Helper()
	s, p := fresh(t)
	g := &groupFixture{s: s, p: p, feed: memory.New(), done: &done{seqs: map[int64]bool{}, more: make(chan struct{}, 1)}, model: s.Schema() + ".model"}
	_, err := p.Exec(context.Background(), "CREATE TABLE "+g.model+" (seq bigint PRIMARY KEY, member text NOT NULL, applied int NOT NULL)")
	require.NoError(t, err)
	return g
}

// start runs group.Run for member name: one subscription per held
// partition, applying each entry to the read model exactly once.
func (g *groupFixture) start(name string, opts ...group.RunOption) *runningMember {
	rctx, cancel := context.WithCancel(context.Background())
	m := &runningMember{cancel: cancel, result: make(chan error, 1), assigned: make(chan []int, 100)}
	newSub := func(part transport.Partition, f group.Fence) (*subscription.Subscription, error) {
		cps := g.s.WithFence(f)
		sub, err := subscription.New(g.feed, "model", cps, subscription.Partition(part.Count, part.Number), subscription.Wait(time.Second))
		if err != nil {
			return nil, err
		}
		apply := cps.Apply(sub.Name(), func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+g.model+" (seq, member, applied) VALUES ($1, $2, 1) "+
				"ON CONFLICT (seq) DO UPDATE SET applied = model.applied + 1", e.Sequence, name)
			return err
		})
		sub.OnEntry(func(ctx context.Context, e transport.FeedEntry) error {
			if g.hold != nil {
				g.hold(name, f)
			}
			if err := apply(ctx, e); err != nil {
				if errors.Is(err, group.ErrFenced) {
					g.fenced.Add(1)
				}
				return err
			}
			g.done.add(e.Sequence)
			return nil
		})
		return sub, nil
	}
	go func() {
		m.result <- group.Run(rctx, g.s, "model", name, 4, newSub, append([]group.RunOption{group.Every(20 * time.Millisecond),
			group.OnAssign(func(ps []int) { m.assigned <- ps })}, opts...)...)
	}()
	return m
}

// checkOnce checks that the read model holds n entries, none applied twice.
func (g *groupFixture) checkOnce(t *testing.T, n int) {
	t.Helper()
	var rows, most int
	require.NoError(t, g.p.QueryRow(context.Background(), "SELECT count(*), coalesce(max(applied), 0) FROM "+g.model).Scan(&rows, &most))
	assert.Equal(t, n, rows)
	assert.Equal(t, 1, most, "no entry applied twice")
}

// Two members in one process share 4 partitions of a memory feed through
// leases in PostgreSQL; every entry lands in a PostgreSQL read model
// exactly once, through joins and a graceful leave, each handed over at
// once.
func TestGroupExactlyOnceIntoPostgres(t *testing.T) {
	g := newGroupFixture(t)
	// No ticks: every hand-over here is driven by the notifications of
	// joins, releases and leaves.
	a := g.start("a", group.Ticks(make(chan time.Time)))
	a.waitFor(t, []int{0, 1, 2, 3})
	storeOrders(t, g.feed, 200)
	g.done.wait(t, 200)

	b := g.start("b", group.Ticks(make(chan time.Time)))
	b.waitFor(t, []int{2, 3})
	a.waitFor(t, []int{0, 1})
	storeOrders(t, g.feed, 200)
	g.done.wait(t, 400)

	a.stop(t)
	b.waitFor(t, []int{0, 1, 2, 3})
	storeOrders(t, g.feed, 100)
	g.done.wait(t, 500)
	b.stop(t)

	g.checkOnce(t, 500)
	ctx := context.Background()
	var members int
	require.NoError(t, g.p.QueryRow(ctx, "SELECT count(DISTINCT member) FROM "+g.model+" WHERE seq > 200 AND seq <= 400").Scan(&members))
	assert.Equal(t, 2, members, "both members worked while both were in")
	var cps int
	require.NoError(t, g.p.QueryRow(ctx, "SELECT count(*) FROM "+g.s.Schema()+".checkpoints").Scan(&cps))
	assert.Equal(t, 4, cps, "one checkpoint per partition")
}

// A member paused in the middle of its entries (SIGSTOP, a long GC) past
// its lease loses its partitions; when it resumes, the entries in hand are
// fenced: nothing of its old claims commits. Its subscriptions are
// dropped, and it goes on with what it claims anew. Every entry is applied
// exactly once throughout.
func TestGroupPausedMemberIsFenced(t *testing.T) {
	g := newGroupFixture(t)
	gate := make(chan struct{})
	paused := make(chan struct{}, 100)
	g.hold = func(member string, f group.Fence) {
		if member == "a" && f.Generation == 1 {
			paused <- struct{}{}
			<-gate
		}
	}
	// a's loop syncs only when told of a change; its partitions' work may
	// take as long as it likes to stop.
	a := g.start("a", group.Ticks(make(chan time.Time)), group.StopTimeout(time.Hour))
	a.waitFor(t, []int{0, 1, 2, 3})
	storeOrders(t, g.feed, 100)
	for range 4 {
		<-paused // each of a's subscriptions holds an entry, paused
	}
	expire(t, g.s, g.p, "model", "a") // past its lease, by the database's clock
	b := g.start("b")
	b.waitUntil(t, func(ps []int) bool { return len(ps) == 2 }) // every partition claimed anew meanwhile
	close(gate)                                                 // a resumes
	a.waitUntil(t, func(ps []int) bool { return len(ps) == 2 })
	g.done.wait(t, 100)
	storeOrders(t, g.feed, 100)
	g.done.wait(t, 200)
	b.stop(t)
	a.stop(t)
	g.checkOnce(t, 200)
	assert.Equal(t, int64(4), g.fenced.Load(), "the entry in hand of each of a's paused subscriptions was fenced")
}
