package group

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/transport"
)

// RunOption configures Run.
type RunOption func(*runner)

// Every sets how often Run syncs with the coordinator (default 3 s): well
// within the coordinator's lease time (default 10 s).
func Every(d time.Duration) RunOption {
	return func(r *runner) {
		if d > 0 {
			r.every = d
		}
	}
}

// Ticks makes Run sync each time ticks delivers, instead of on its own
// ticker: for tests that drive the loop step by step.
func Ticks(ticks <-chan time.Time) RunOption { return func(r *runner) { r.ticks = ticks } }

// StopTimeout sets how long a partition's subscription may take to finish
// its entry in hand when the partition is handed over (default 5 s); then
// it is canceled, and its entry is delivered again to the next holder.
func StopTimeout(d time.Duration) RunOption {
	return func(r *runner) {
		if d > 0 {
			r.stopTimeout = d
		}
	}
}

// GiveUpAfter sets how long Run keeps its partitions running while Sync
// fails (the coordinator is unreachable): after d since the start of the
// last successful Sync it stops them all, since the other members may
// claim them once the leases expire. Default 8 s: keep it below the
// coordinator's lease time (default 10 s).
func GiveUpAfter(d time.Duration) RunOption {
	return func(r *runner) {
		if d > 0 {
			r.giveUp = d
		}
	}
}

// Clock sets the clock GiveUpAfter is measured with (default time.Now).
func Clock(now func() time.Time) RunOption {
	return func(r *runner) {
		if now != nil {
			r.now = now
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) RunOption {
	return func(r *runner) {
		if l != nil {
			r.log = l
		}
	}
}

// OnAssign calls fn, from Run's goroutine, with the partitions this member
// runs after each change: for logs, metrics and tests.
func OnAssign(fn func(partitions []int)) RunOption { return func(r *runner) { r.onAssign = fn } }

// NewSubscription builds the subscription of one partition. It should
// pass p to subscription.Partition and keep fence with the checkpoint
// store, so that commits after the partition was lost are refused.
type NewSubscription func(p transport.Partition, fence Fence) (*subscription.Subscription, error)

type runner struct {
	coord       Coordinator
	group       string
	member      string
	partitions  int
	newSub      NewSubscription
	every       time.Duration
	ticks       <-chan time.Time
	stopTimeout time.Duration
	log         *zap.Logger
	onAssign    func([]int)
	giveUp      time.Duration
	now         func() time.Time
	registry    prometheus.Registerer // Metrics
	metrics     *groupMetrics         // nil without Metrics

	running map[int]*running
	exits   chan *running
	quit    chan struct{} // closed when Run returns
	mu      sync.Mutex    // guards running against readers (Lag); Run's goroutine alone writes it
	started atomic.Bool
}

// held returns the partitions whose subscriptions run.
func (r *runner) held() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(mapKeys(r.running))
}

type running struct {
	fence Fence
	sub   *subscription.Subscription
	err   error
	done  chan struct{}
}

// Member is one member of a consumer group, as Run runs it; NewMember
// returns one whose Lag and Partitions can be read while it runs.
type Member struct{ r *runner }

// NewMember returns a member for Run (see the function Run for what it
// does). It fails with ErrInvalid on a nil coordinator or builder.
func NewMember(coord Coordinator, group, member string, partitions int, newSub NewSubscription, opts ...RunOption) (*Member, error) {
	if coord == nil || newSub == nil {
		return nil, fmt.Errorf("%w: nil coordinator or subscription builder", ErrInvalid)
	}
	if err := CheckJoin(group, member, partitions); err != nil {
		return nil, err
	}
	r := &runner{coord: coord, group: group, member: member, partitions: partitions, newSub: newSub,
		every: 3 * time.Second, stopTimeout: 5 * time.Second, log: zap.NewNop(), giveUp: 8 * time.Second, now: time.Now,
		running: map[int]*running{}, exits: make(chan *running), quit: make(chan struct{})}
	for _, o := range opts {
		if o != nil {
			o(r)
		}
	}
	if r.registry != nil {
		g, err := newGroupMetrics(r.registry)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", group, err)
		}
		r.metrics = g
	}
	return &Member{r: r}, nil
}

// Partitions returns the partitions whose subscriptions run now, in order.
func (m *Member) Partitions() []int {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	return slices.Sorted(mapKeys(m.r.running))
}

// Lag returns, for each partition whose subscription runs now, how many
// sequence numbers it is behind the feed's head (Subscription.Lag).
func (m *Member) Lag(ctx context.Context) (map[int]int64, error) {
	m.r.mu.Lock()
	subs := make(map[int]*subscription.Subscription, len(m.r.running))
	for p, x := range m.r.running {
		subs[p] = x.sub
	}
	m.r.mu.Unlock()
	lag := make(map[int]int64, len(subs))
	for p, sub := range subs {
		l, err := sub.Lag(ctx)
		if err != nil {
			return nil, fmt.Errorf("group %q member %q partition %d: lag: %w", m.r.group, m.r.member, p, err)
		}
		lag[p] = l
	}
	return lag, nil
}

// Run joins group as member and keeps one subscription running for each
// partition it holds, as newSub builds them: it starts the subscription of
// a partition it claims, and stops (Close, within StopTimeout) the one of
// a partition it loses or gives up to a member that joined, before
// releasing it. It returns nil when ctx ends, after stopping every
// subscription and leaving the group (its partitions go to the other
// members at once). It returns an error when joining fails, when newSub
// fails, or when a subscription fails other than by losing its lease
// (errors.Is ErrFenced, which only stops that partition).
func Run(ctx context.Context, coord Coordinator, group, member string, partitions int, newSub NewSubscription, opts ...RunOption) error {
	m, err := NewMember(coord, group, member, partitions, newSub, opts...)
	if err != nil {
		return err
	}
	return m.Run(ctx)
}

// Run runs the member (see the function Run). A member runs once: a second
// call fails with ErrClosed.
func (m *Member) Run(ctx context.Context) error {
	r := m.r
	if !r.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	defer close(r.quit)
	ms, err := r.coord.Join(ctx, r.group, r.member, r.partitions)
	if err != nil {
		return err
	}
	if r.ticks == nil {
		t := time.NewTicker(r.every)
		defer t.Stop()
		r.ticks = t.C
	}
	err = r.loop(ctx, ms)
	r.stop(r.held())
	r.observe(ctx, true)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.stopTimeout)
	defer cancel()
	if cerr := ms.Close(cctx); cerr != nil && !errors.Is(cerr, ErrClosed) {
		err = errors.Join(err, fmt.Errorf("group %q: leaving: %w", r.group, cerr))
	}
	r.log.Info("group member left", zap.String("group", r.group), zap.String("member", r.member))
	return err
}

func mapKeys(m map[int]*running) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (r *runner) loop(ctx context.Context, m Membership) error {
	lastOK := r.now()
	for {
		started := r.now()
		st, err := m.Sync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Keep running for a while: a commit after the lease is lost is
			// refused by the fence, and the next Sync tells what is held.
			r.log.Warn("group sync failed", zap.String("group", r.group), zap.String("member", r.member), zap.Error(err))
			if len(r.running) > 0 && r.now().Sub(lastOK) >= r.giveUp {
				r.log.Error("group sync failing for too long: stopping every partition", zap.String("group", r.group),
					zap.String("member", r.member), zap.Duration("since_last_sync", r.now().Sub(lastOK)))
				r.stop(r.held())
				r.assigned()
			}
		} else {
			lastOK = started
			if err := r.reconcile(ctx, m, st); err != nil {
				return err
			}
			r.observe(ctx, false)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.ticks:
		case <-m.Changed():
		case x := <-r.exits:
			if err := r.exited(x); err != nil {
				return err
			}
		}
	}
}

// exited handles a subscription whose Run returned on its own.
func (r *runner) exited(x *running) error {
	if r.running[x.fence.Partition] != x {
		return nil // stopped by us
	}
	r.mu.Lock()
	delete(r.running, x.fence.Partition)
	r.mu.Unlock()
	r.assigned()
	if x.err == nil || errors.Is(x.err, ErrFenced) {
		r.log.Warn("group partition stopped", zap.String("group", r.group), zap.String("member", r.member),
			zap.Int("partition", x.fence.Partition), zap.Error(x.err))
		return nil
	}
	return fmt.Errorf("group %q member %q partition %d: %w", r.group, r.member, x.fence.Partition, x.err)
}

func (r *runner) reconcile(ctx context.Context, m Membership, st State) error {
	want := map[int]Fence{}
	for _, f := range st.Held {
		if !slices.Contains(st.Surplus, f.Partition) {
			want[f.Partition] = f
		}
	}
	var drop []int
	for p, x := range r.running {
		if f, ok := want[p]; !ok || f.Generation != x.fence.Generation {
			drop = append(drop, p)
		}
	}
	changed := len(drop) > 0
	r.stop(drop)
	if len(st.Surplus) > 0 {
		if err := m.Release(ctx, st.Surplus...); err != nil && ctx.Err() == nil {
			r.log.Warn("group release failed", zap.String("group", r.group), zap.Error(err))
		}
	}
	for p, f := range want {
		if _, ok := r.running[p]; ok {
			continue
		}
		sub, err := r.newSub(transport.Partition{Count: r.partitions, Number: p}, f)
		if err != nil {
			return fmt.Errorf("group %q member %q partition %d: %w", r.group, r.member, p, err)
		}
		x := &running{fence: f, sub: sub, done: make(chan struct{})}
		r.mu.Lock()
		r.running[p] = x
		r.mu.Unlock()
		changed = true
		go func() {
			x.err = sub.Run(ctx)
			close(x.done)
			select {
			case r.exits <- x:
			case <-r.quit:
			}
		}()
		r.log.Info("group partition started", zap.String("group", r.group), zap.String("member", r.member),
			zap.Int("partition", p), zap.Int64("generation", f.Generation))
	}
	if changed {
		r.assigned()
	}
	return nil
}

// stop closes the subscriptions of the partitions and waits for them.
func (r *runner) stop(partitions []int) {
	xs := make([]*running, 0, len(partitions))
	for _, p := range partitions {
		r.mu.Lock()
		xs = append(xs, r.running[p])
		delete(r.running, p)
		r.mu.Unlock()
	}
	for _, x := range xs {
		ctx, cancel := context.WithTimeout(context.Background(), r.stopTimeout)
		if err := x.sub.Close(ctx); err != nil {
			r.log.Warn("group partition did not stop in time", zap.String("group", r.group), zap.Int("partition", x.fence.Partition), zap.Error(err))
		}
		cancel()
		<-x.done
		r.log.Info("group partition stopped", zap.String("group", r.group), zap.String("member", r.member), zap.Int("partition", x.fence.Partition))
	}
}

func (r *runner) assigned() {
	if r.onAssign == nil {
		return
	}
	r.onAssign(slices.Sorted(slices.Values(r.held())))
}
