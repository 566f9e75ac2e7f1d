package pgcheckpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

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
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ps := <-m.assigned:
			if slices.Equal(ps, want) {
				return
			}
		case err := <-m.result:
			t.Fatalf("member stopped: %v", err)
		case <-deadline:
			t.Fatalf("member never held %v", want)
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
			if err := apply(ctx, e); err != nil {
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
// exactly once, through joins and a graceful leave.
func TestGroupExactlyOnceIntoPostgres(t *testing.T) {
	g := newGroupFixture(t)
	a := g.start("a")
	a.waitFor(t, []int{0, 1, 2, 3})
	storeOrders(t, g.feed, 200)
	g.done.wait(t, 200)

	b := g.start("b")
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

// A member that stops renewing (paused) loses its partitions to the other
// when its leases expire by the database's clock. Its subscriptions, still
// running, are fenced: their writes fail, the member drops them, joins
// again and gets its share back with new generations. Every entry is
// applied exactly once throughout.
func TestGroupPausedMemberIsFenced(t *testing.T) {
	g := newGroupFixture(t)
	core, logs := observer.New(zap.WarnLevel)
	dropped := make(chan struct{}, 4)
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "group partition stopped" && e.Level == zap.WarnLevel {
			select {
			case dropped <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	ticks := make(chan time.Time)
	a := g.start("a", group.Ticks(ticks), group.WithLogger(log)) // paused: no ticks
	a.waitFor(t, []int{0, 1, 2, 3})
	b := g.start("b")
	expire(t, g.s, g.p, "model", "a")
	b.waitFor(t, []int{0, 1, 2, 3})

	storeOrders(t, g.feed, 100) // a's subscriptions meet them, and the fence
	select {
	case <-dropped: // one of a's subscriptions was fenced and dropped
	case <-time.After(30 * time.Second):
		t.Fatal("a's subscriptions were never fenced")
	}
	resumed := make(chan struct{})
	defer close(resumed)
	go func() { // a resumes: its ticker runs again
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case now := <-tick.C:
				select {
				case ticks <- now:
				case <-resumed:
					return
				}
			case <-resumed:
				return
			}
		}
	}()
	a.waitFor(t, []int{2, 3})
	b.waitFor(t, []int{0, 1})
	g.done.wait(t, 100)
	storeOrders(t, g.feed, 100)
	g.done.wait(t, 200)
	b.stop(t)
	a.stop(t)
	g.checkOnce(t, 200)
	fenced := 0
	for _, e := range logs.FilterMessage("group partition stopped").All() {
		for _, f := range e.Context {
			if f.Key == "error" && errors.Is(f.Interface.(error), group.ErrFenced) {
				fenced++
			}
		}
	}
	assert.Positive(t, fenced, "a's subscriptions were fenced")
}
