package subscription

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/commitsignal"
	"github.com/sourced-go/sourced/internal/retry"
	"github.com/sourced-go/sourced/subscription/internal/runinfo"
	"github.com/sourced-go/sourced/transport"
)

var (
	// ErrRunning: Run was called on a subscription that is running or has
	// run.
	ErrRunning = errors.New("subscription already running")
	// ErrNoHandlers: Run was called before any handler was registered.
	ErrNoHandlers = errors.New("subscription has no handlers")
	// ErrSetup: Run refuses a set-up that cannot deliver exactly what it
	// promises (an entry handler that writes the checkpoint beside other
	// handlers, a changed partition count under an exactly-once
	// checkpoint store, two upcasters for one aggregate type, ...). The
	// error says what to change; it is not retried.
	ErrSetup = errors.New("subscription set-up refused")
	// ErrNameInUse: another subscription with the same name is running on
	// the same checkpoint store in this process.
	ErrNameInUse = errors.New("a subscription with this name is running")
)

// Parker takes an entry that a handler could not handle, so that a person
// can look at it, when the subscription is set to OnFailure(Park(p)).
// If Park fails, the subscription stops with that error rather than skip
// the entry.
type Parker interface {
	Park(ctx context.Context, subscription string, entry transport.FeedEntry, cause error) error
}

// ParkFunc adapts a function to a Parker.
type ParkFunc func(ctx context.Context, subscription string, entry transport.FeedEntry, cause error) error

// Park calls f.
func (f ParkFunc) Park(ctx context.Context, subscription string, entry transport.FeedEntry, cause error) error {
	return f(ctx, subscription, entry, cause)
}

// Failure says what happens when a handler still fails after its retries.
type Failure struct{ parker Parker }

// Stop ends Run with the handler's error (the default).
func Stop() Failure { return Failure{} }

// Park hands the entry to p and goes on with the next one.
func Park(p Parker) Failure { return Failure{parker: p} }

// Option configures a subscription.
type Option func(*Subscription)

// Feed sets the feed: an aggregate type, or transport.AllTypes (the
// default).
func Feed(name string) Option { return func(s *Subscription) { s.query.Feed.Type = name } }

// Tenant reads the feed of a tenant (default: the default tenant).
func Tenant(tenant string) Option { return func(s *Subscription) { s.query.Feed.Tenant = tenant } }

// FromHead starts a subscription that has no checkpoint yet at the feed's
// current head, so it sees only batches stored from now on. The default
// starts at the beginning of the feed.
func FromHead() Option { return func(s *Subscription) { s.fromHead = true } }

// Partition makes the subscription one of count consumers sharing the
// feed: it handles the aggregates of partition number (0 to count-1). Its
// checkpoint name gets the suffix "#<number>/<count>".
func Partition(count, number int) Option {
	return func(s *Subscription) { s.query.Partition = transport.Partition{Count: count, Number: number} }
}

// PageSize sets how many entries one read asks for (default 1000, at most
// 1000).
func PageSize(n int) Option { return func(s *Subscription) { s.query.Limit = n } }

// Wait sets how long a read at the head waits for the next batch before it
// asks again (default 10 s, at most transport.MaxFeedWait).
func Wait(d time.Duration) Option { return func(s *Subscription) { s.query.Wait = d } }

// Retry sets the retry policy of a failing handler and of failed feed
// reads, as a factory (a backoff.BackOff is stateful). Default: exponential
// from 100 ms, at most 8 retries.
func Retry(policy func() backoff.BackOff) Option {
	return func(s *Subscription) {
		if policy != nil {
			s.retry = policy
		}
	}
}

// OnFailure sets what happens when a handler still fails after its
// retries: Stop() (the default) or Park(p).
func OnFailure(f Failure) Option { return func(s *Subscription) { s.failure = f } }

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(s *Subscription) {
		if l != nil {
			s.log = l
		}
	}
}

// LagEvery sets how often a running subscription logs its lag at Info
// (default every 30 s; 0 turns it off). Every page logs it at Debug.
func LagEvery(d time.Duration) Option { return func(s *Subscription) { s.lagEvery = d } }

// Upcaster is what Upcast needs of an aggregate definition;
// *aggregate.Definition[S] is one.
type Upcaster interface {
	// Type is the aggregate type whose events it upcasts.
	Type() string
	// Upcast returns the current event type and data of a stored event.
	Upcast(eventType string, data []byte) (string, []byte, error)
}

// Upcast turns stored events of old names or shapes into current ones
// before any handler sees them (OnEntry handlers included): pass the
// aggregate definitions of the feed's types, whose upcasters a load uses
// too. Each definition upcasts the events of its own aggregate type only;
// events of types with no definition pass unchanged. An entry whose
// events fail to upcast is a handler failure: retried, then stop or park
// (a parked entry reaches no handler). Two definitions of one aggregate
// type are refused with ErrSetup.
func Upcast(defs ...Upcaster) Option {
	return func(s *Subscription) {
		for _, d := range defs {
			if d == nil {
				continue
			}
			if s.upcast == nil {
				s.upcast = map[string]Upcaster{}
			}
			if _, dup := s.upcast[d.Type()]; dup {
				s.setupErr = errors.Join(s.setupErr, fmt.Errorf("%w: two upcasters for aggregate type %q", ErrSetup, d.Type()))
			}
			s.upcast[d.Type()] = d
		}
	}
}

// Subscription follows one feed with its handlers. Build it with New,
// register handlers with On, OnEvent, OnAll or OnEntry, then Run it.
type Subscription struct {
	feed     transport.Feeder
	name     string
	cps      Checkpoints
	query    transport.FeedQuery
	fromHead bool
	retry    func() backoff.BackOff
	failure  Failure
	log      *zap.Logger
	lagEvery time.Duration
	upcast   map[string]Upcaster // by aggregate type
	setupErr error
	stale    StalePolicy
	registry prometheus.Registerer // Metrics
	metrics  *metrics              // nil without Metrics

	byType  map[string][]eventbus.Handler
	all     []eventbus.Handler
	entries []func(context.Context, transport.FeedEntry) error
	pages   []pageHandler // OnPage (page.go)

	started  atomic.Bool
	position atomic.Int64
	// reached is the feed head at the last read that found nothing more
	// (HasMore false) once its entries were handled: the subscription has
	// handled everything of its partition up to there.
	reached  atomic.Int64
	moved    commitsignal.Signal // broadcast when position moves
	mu       sync.Mutex
	abort    context.CancelFunc // cancels the handlers' context, set by Run
	stopOnce sync.Once
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when Run returns
}

// New returns a subscription called name (the key of its checkpoint) over
// feed, keeping its position in checkpoints.
func New(feed transport.Feeder, name string, checkpoints Checkpoints, opts ...Option) (*Subscription, error) {
	if feed == nil {
		return nil, errors.New("subscription: nil feed")
	}
	if checkpoints == nil {
		return nil, errors.New("subscription: nil checkpoint store")
	}
	if name == "" {
		return nil, errors.New("subscription: empty name")
	}
	s := &Subscription{
		feed: feed, name: name, cps: checkpoints,
		query:    transport.FeedQuery{Feed: transport.Scope{Type: transport.AllTypes}, Limit: transport.MaxLimit, Wait: 10 * time.Second},
		retry:    defaultRetry,
		log:      zap.NewNop(),
		lagEvery: 30 * time.Second,
		byType:   map[string][]eventbus.Handler{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	if err := transport.CheckFeed(s.query); err != nil {
		return nil, fmt.Errorf("subscription %q: %w", name, err)
	}
	if s.setupErr != nil {
		return nil, fmt.Errorf("subscription %q: %w", name, s.setupErr)
	}
	if s.registry != nil {
		m, err := newMetrics(s.registry, s.name, s.query.Partition)
		if err != nil {
			return nil, fmt.Errorf("subscription %q: %w", name, err)
		}
		s.metrics = m
	}
	if p := s.query.Partition; p.Count > 1 {
		s.name += "#" + strconv.Itoa(p.Number) + "/" + strconv.Itoa(p.Count)
	}
	return s, nil
}

func defaultRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return backoff.WithMaxRetries(b, 8)
}

// Name returns the name the checkpoint is kept under (with the partition
// suffix, if any).
func (s *Subscription) Name() string { return s.name }

// On registers a typed handler for events of type E, named after E's Go
// type (as package aggregate names events) unless name is given. It has
// the signature of an eventbus subscriber.
func On[E any](s *Subscription, h func(ctx context.Context, env eventbus.Envelope, e E) error, name ...string) {
	if h == nil {
		panic("subscription: nil handler")
	}
	typ, handler := eventbus.Typed(h)
	if len(name) > 0 && name[0] != "" {
		typ = name[0]
	}
	s.OnEvent(typ, handler)
}

// OnEvent registers a handler for the events of one event type.
func (s *Subscription) OnEvent(eventType string, h eventbus.Handler) {
	s.mustNotRun()
	s.byType[eventType] = append(s.byType[eventType], h)
}

// OnAll registers a handler for every event of the feed.
func (s *Subscription) OnAll(h eventbus.Handler) {
	s.mustNotRun()
	s.all = append(s.all, h)
}

// OnEntry registers a handler for whole entries (one stored batch with all
// its events): the shape a read model that writes once per batch wants.
func (s *Subscription) OnEntry(h func(ctx context.Context, entry transport.FeedEntry) error) {
	s.mustNotRun()
	s.entries = append(s.entries, h)
}

func (s *Subscription) mustNotRun() {
	if s.started.Load() {
		panic("subscription: handlers must be registered before Run")
	}
}

// Position returns the sequence number of the last entry handled.
func (s *Subscription) Position() int64 { return s.position.Load() }

// progress is how far the subscription has handled its feed: its position,
// or the head of the last read that reached the end, whichever is later (a
// partition's own entries may stop well below the feed's head).
func (s *Subscription) progress() int64 { return max(s.position.Load(), s.reached.Load()) }

// Await waits until the subscription has handled every entry of its feed
// (of its partition) up to sequence number seq, or ctx ends. After a
// write, await the feed's head to read your own write in the read model;
// a partition that has read to the end of the feed counts as past the head
// it saw then, even when none of its own entries is that high.
func (s *Subscription) Await(ctx context.Context, seq int64) error {
	for {
		changed := s.moved.Changed()
		if s.progress() >= seq {
			return nil
		}
		select {
		case <-changed:
		case <-s.done:
			if s.progress() >= seq {
				return nil
			}
			return fmt.Errorf("subscription %q stopped at sequence number %d before reaching %d", s.name, s.progress(), seq)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Lag returns how many sequence numbers the subscription is behind its
// feed's head (sequence numbers, not entries: a type feed's numbers skip
// the other types'). A running subscription that has read to the end of
// its feed (or partition) counts from the head it saw then.
func (s *Subscription) Lag(ctx context.Context) (int64, error) {
	head, err := s.feed.FeedHead(ctx, s.query.Feed)
	if err != nil {
		return 0, err
	}
	pos := s.progress()
	if !s.started.Load() {
		if saved, ok, err := s.cps.Load(ctx, s.name); err != nil {
			return 0, err
		} else if ok {
			pos = saved
		}
	}
	return max(head-pos, 0), nil
}

// Close asks Run to stop: the entry in hand is finished and the checkpoint
// saved. It waits for Run to return until ctx ends; then it cancels the
// handlers' context too and returns ctx's error. A handler that fails
// because of that cancellation has not failed: its entry is neither parked
// nor passed by the checkpoint, and will be delivered again after a
// restart; Run returns nil.
func (s *Subscription) Close(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	if !s.started.Load() {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if s.abort != nil {
			s.abort()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// NameOf returns the name of the subscription whose handler got ctx (its
// Name(), with the partition suffix), and false outside a handler.
func NameOf(ctx context.Context) (string, bool) {
	info, ok := runinfo.From(ctx)
	return info.Name, ok
}

// errAborted: a handler was stopped by Close's deadline; the entry is to
// be delivered again.
var errAborted = errors.New("handler stopped by Close")

// handlers counts the subscription's handlers.
func (s *Subscription) handlers() int {
	n := len(s.entries) + len(s.all) + len(s.pages)
	for _, hs := range s.byType {
		n += len(hs)
	}
	return n
}

// Run catches up from the checkpoint, then follows the feed until Close is
// called or ctx ends (both return nil, after the entry in hand and its
// checkpoint). It returns an error when a handler fails for good under the
// Stop policy (an *eventbus.HandlerError), when parking fails, or when the
// feed or the checkpoint store fails past the retries; ErrSetup when the
// set-up cannot be exact, and ErrNameInUse when a subscription of the same
// name runs on the same checkpoint store.
func (s *Subscription) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("subscription %q: %w", s.name, ErrRunning)
	}
	defer close(s.done)
	if s.handlers() == 0 {
		return fmt.Errorf("subscription %q: %w", s.name, ErrNoHandlers)
	}
	if err := s.checkPages(); err != nil {
		return err
	}
	if sc, ok := s.cps.(SelfCheckpointing); ok {
		// Counts of checkpoint writers made per name are not used: one made
		// for a subscription that never ran would refuse the next one. The
		// writers check the running subscription themselves, before they
		// write anything (runinfo).
		sc.TakeCheckpointWriters(s.name)
	}
	if c, ok := s.cps.(Claimer); ok {
		release, err := c.Claim(s.name)
		if err != nil {
			return fmt.Errorf("subscription %q: %w", s.name, err)
		}
		defer release()
	}
	// Reads end as soon as Close is called or ctx ends; handlers get a
	// context that outlives both, so the entry in hand finishes.
	readCtx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	go func() {
		select {
		case <-s.stop:
			cancelRead()
		case <-readCtx.Done():
		}
	}()
	handleCtx, abort := context.WithCancel(runinfo.With(context.WithoutCancel(ctx), runinfo.Info{Name: s.name, Handlers: s.handlers(), Tenant: s.query.Feed.Tenant}))
	defer abort()
	s.mu.Lock()
	s.abort = abort
	s.mu.Unlock()
	// Checkpoints are saved even after Close's deadline cancelled the
	// handlers' context.
	saveCtx := context.WithoutCancel(ctx)

	pos, err := s.start(readCtx)
	if err != nil {
		if readCtx.Err() != nil {
			return nil
		}
		return err
	}
	s.position.Store(pos)
	s.moved.Broadcast()
	s.metrics.started(pos)
	defer s.metrics.forget()
	s.log.Info("subscription started", zap.String("subscription", s.name), zap.String("feed", s.query.Feed.Type), zap.Int64("from", pos))
	lastLag := time.Now()
	saved := pos
	var posID string // first event id of the entry at pos, once one was handled
	atEnd := false   // a read has reached the end of the feed (HasMore false)
	for {
		q := s.query
		q.Since = pos
		if !atEnd {
			// Until a read has reached the end of the feed, none waits: a
			// restarted subscription with nothing new (a partition whose
			// own entries stop below the head) settles at once (Await, Lag).
			q.Wait = 0
		}
		var page transport.FeedPage
		err := s.withRetry(readCtx, "read feed", func() error {
			var err error
			page, err = s.feed.ReadFeed(readCtx, q)
			if errors.Is(err, transport.ErrInvalid) || errors.Is(err, transport.ErrUnauthorized) {
				return backoff.Permanent(err)
			}
			return err
		})
		if err != nil {
			if readCtx.Err() != nil {
				return s.finish(saveCtx, Checkpoint{pos, posID}, saved)
			}
			return fmt.Errorf("subscription %q: %w", s.name, err)
		}
		all := true
		entries := page.Entries
		if len(s.pages) > 0 {
			entries = nil // the page handler had them all
			// One call for the page, all or nothing (page.go).
			last, written, err := s.handlePage(handleCtx, page.Entries)
			if last.Sequence > pos {
				pos, posID = last.Sequence, last.EventID
				s.position.Store(pos)
				s.moved.Broadcast()
			}
			saved = max(saved, written)
			if err != nil {
				if errors.Is(err, errAborted) {
					return s.finish(saveCtx, Checkpoint{pos, posID}, saved)
				}
				if serr := s.save(saveCtx, Checkpoint{pos, posID}, saved); serr != nil {
					err = errors.Join(err, serr)
				}
				return err
			}
		}
		for i := range entries {
			e := &page.Entries[i]
			if err := s.handle(handleCtx, e); err != nil {
				if errors.Is(err, errAborted) {
					// Close's deadline: this entry is delivered again
					// after a restart.
					return s.finish(saveCtx, Checkpoint{pos, posID}, saved)
				}
				if serr := s.save(saveCtx, Checkpoint{pos, posID}, saved); serr != nil {
					err = errors.Join(err, serr)
				}
				return err
			}
			c := CheckpointOf(*e)
			pos, posID = c.Sequence, c.EventID
			s.position.Store(pos)
			s.moved.Broadcast()
			if s.stopping(readCtx) {
				all = i == len(page.Entries)-1
				break
			}
		}
		if pos != saved {
			if err := s.save(saveCtx, Checkpoint{pos, posID}, saved); err != nil {
				return err
			}
			saved = pos
		}
		atEnd = atEnd || !page.HasMore
		if all && !page.HasMore && page.Head > s.reached.Load() {
			s.reached.Store(page.Head)
			s.moved.Broadcast()
		}
		if s.stopping(readCtx) {
			return s.finish(saveCtx, Checkpoint{pos, posID}, saved)
		}
		lag := max(page.Head-s.progress(), 0)
		s.metrics.observe(pos, page.Head, lag)
		s.log.Debug("subscription page", zap.String("subscription", s.name), zap.Int("entries", len(page.Entries)),
			zap.Int64("position", pos), zap.Int64("lag", lag))
		if s.lagEvery > 0 && time.Since(lastLag) >= s.lagEvery {
			s.log.Info("subscription lag", zap.String("subscription", s.name), zap.Int64("position", pos), zap.Int64("lag", lag))
			lastLag = time.Now()
		}
	}
}

// stopping reports whether Close was called or Run's context ended.
func (s *Subscription) stopping(readCtx context.Context) bool {
	select {
	case <-s.stop:
		return true
	default:
		return readCtx.Err() != nil
	}
}

// start returns the position to read from: the checkpoint, or the
// beginning or head of the feed when there is none.
func (s *Subscription) start(ctx context.Context) (int64, error) {
	var pos int64
	err := s.withRetry(ctx, "load checkpoint", func() error {
		c, ok, err := s.loadCheckpoint(ctx)
		if err != nil {
			return err
		}
		if ok {
			pos, err = s.checkStale(ctx, c)
			return err
		}
		if !s.fromHead {
			return nil
		}
		head, err := s.feed.FeedHead(ctx, s.query.Feed)
		if err != nil {
			return err
		}
		pos = head
		return s.cps.Save(ctx, s.name, head)
	})
	if err != nil {
		return 0, fmt.Errorf("subscription %q: %w", s.name, err)
	}
	return pos, nil
}

func (s *Subscription) save(ctx context.Context, c Checkpoint, saved int64) error {
	if c.Sequence == saved {
		return nil
	}
	err := s.withRetry(ctx, "save checkpoint", func() error { return s.saveCheckpoint(ctx, c) })
	if err != nil {
		return fmt.Errorf("subscription %q: saving checkpoint %d: %w", s.name, c.Sequence, err)
	}
	return nil
}

func (s *Subscription) finish(ctx context.Context, c Checkpoint, saved int64) error {
	if err := s.save(ctx, c, saved); err != nil {
		return err
	}
	s.log.Info("subscription stopped", zap.String("subscription", s.name), zap.Int64("position", c.Sequence))
	return nil
}

// handle runs every matching handler on one entry, each with retries; a
// handler that fails for good is parked or stops the subscription. With
// Upcast, the entry's events are upcast first, once, for every handler.
func (s *Subscription) handle(ctx context.Context, e *transport.FeedEntry) error {
	e, parked, err := s.upcastEntry(ctx, e)
	if err != nil || parked {
		return err // a parked entry reaches no handler
	}
	for _, h := range s.entries {
		env := envelope(s.query.Feed.Tenant, e, nil)
		if _, err := s.call(ctx, e, env, func() error { return h(ctx, *e) }); err != nil {
			return err
		}
	}
	if len(s.byType) == 0 && len(s.all) == 0 {
		return nil
	}
	for i := range e.Events {
		ev := &e.Events[i]
		env := envelope(s.query.Feed.Tenant, e, ev)
		hs := s.byType[env.EventType]
		if len(hs) == 0 && len(s.all) == 0 {
			continue
		}
		for _, h := range hs {
			if _, err := s.call(ctx, e, env, func() error { return h(ctx, env) }); err != nil {
				return err
			}
		}
		for _, h := range s.all {
			if _, err := s.call(ctx, e, env, func() error { return h(ctx, env) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// upcastEntry returns e with its events upcast (e itself when its type has
// no upcaster), retrying and then parking or stopping like a handler:
// parked says the entry was parked.
func (s *Subscription) upcastEntry(ctx context.Context, e *transport.FeedEntry) (_ *transport.FeedEntry, parked bool, _ error) {
	up := s.upcast[e.AggregateType]
	if up == nil || len(e.Events) == 0 {
		return e, false, nil
	}
	var cur *transport.FeedEntry
	parked, err := s.call(ctx, e, envelope(s.query.Feed.Tenant, e, nil), func() error {
		var err error
		cur, err = upcastCopy(up, e)
		return err
	})
	return cur, parked, err
}

// upcastCopy returns a copy of e with its events upcast by up.
func upcastCopy(up Upcaster, e *transport.FeedEntry) (*transport.FeedEntry, error) {
	cur := *e
	cur.Events = make([]transport.Event, len(e.Events))
	copy(cur.Events, e.Events)
	for i := range cur.Events {
		ev := &cur.Events[i]
		typ, data, err := up.Upcast(e.Events[i].EventType, e.Events[i].Data)
		if err != nil {
			return nil, fmt.Errorf("upcast %s (event %s): %w", e.Events[i].EventType, e.Events[i].EventID, err)
		}
		ev.EventType, ev.Data = typ, data
	}
	return &cur, nil
}

// call runs one handler with the retry policy, then applies the failure
// policy: parked says the entry was parked. A panic is a failure like any
// other. A failure while ctx is cancelled (Close's deadline passed) is not
// the handler's: errAborted, and the entry is delivered again.
func (s *Subscription) call(ctx context.Context, e *transport.FeedEntry, env eventbus.Envelope, fn func() error) (parked bool, _ error) {
	attempts := 0
	err := retry.Run(ctx, func() error {
		attempts++
		err := recovered(fn)
		if errors.Is(err, ErrSetup) || stops(err) {
			return backoff.Permanent(err)
		}
		return err
	}, s.retry, func(err error, wait time.Duration) {
		s.log.Warn("subscription handler failed, retrying", zap.String("subscription", s.name), zap.Int64("sequence", e.Sequence),
			zap.String("aggregate_type", e.AggregateType), zap.String("aggregate_id", e.AggregateID),
			zap.String("event_type", env.EventType), zap.Int("attempt", attempts), zap.Duration("wait", wait), zap.Error(err))
	})
	if err == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		s.log.Info("subscription handler stopped by Close; the entry will be delivered again", zap.String("subscription", s.name),
			zap.Int64("sequence", e.Sequence), zap.Error(err))
		return false, errAborted
	}
	herr := &eventbus.HandlerError{Subscription: s.name, Event: env, Err: err}
	if s.failure.parker == nil || errors.Is(err, ErrSetup) || stops(err) {
		// A set-up that cannot be exact stops the subscription: parking
		// would only park every entry.
		s.log.Error("subscription handler failed, stopping", zap.String("subscription", s.name), zap.Int64("sequence", e.Sequence),
			zap.Int("attempts", attempts), zap.Error(herr))
		return false, herr
	}
	if perr := s.failure.parker.Park(ctx, s.name, *e, herr); perr != nil {
		return false, fmt.Errorf("subscription %q: parking sequence number %d failed: %w (after: %w)", s.name, e.Sequence, perr, herr)
	}
	s.log.Error("subscription handler failed, entry parked", zap.String("subscription", s.name), zap.Int64("sequence", e.Sequence),
		zap.Int("attempts", attempts), zap.Error(herr))
	return true, nil
}

// stops reports whether err stops the subscription whatever the failure
// policy: group.ErrFenced (a handler whose commit was fenced did not fail
// on a bad entry; the partition goes to its new owner, which applies it).
func stops(err error) bool {
	var st interface{ StopsSubscription() bool }
	return errors.As(err, &st) && st.StopsSubscription()
}

// recovered runs fn, turning a panic into an error wrapping
// eventbus.ErrPanic.
func recovered(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", eventbus.ErrPanic, p)
		}
	}()
	return fn()
}

func envelope(tenant string, e *transport.FeedEntry, ev *transport.Event) eventbus.Envelope {
	env := eventbus.Envelope{Tenant: tenant, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
		Version: e.Version, Sequence: e.Sequence, Stored: e.Stored}
	if ev != nil {
		env.EventID, env.EventType, env.Data = ev.EventID, ev.EventType, ev.Data
	}
	return env
}

// withRetry retries a feed or checkpoint operation with the retry policy;
// it gives up at once when ctx ends.
func (s *Subscription) withRetry(ctx context.Context, what string, fn func() error) error {
	return retry.Run(ctx, func() error {
		err := fn()
		if errors.Is(err, ErrSetup) || errors.Is(err, ErrNameInUse) || errors.Is(err, ErrReset) {
			return backoff.Permanent(err)
		}
		return err
	}, s.retry, func(err error, wait time.Duration) {
		s.log.Warn("subscription "+what+" failed, retrying", zap.String("subscription", s.name), zap.Duration("wait", wait), zap.Error(err))
	})
}

// RunAll runs several subscriptions (for example the partitions of one
// feed) until ctx ends or one of them fails; then it stops the others and
// returns the first error.
func RunAll(ctx context.Context, subs ...*Subscription) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(subs))
	for _, s := range subs {
		go func() {
			err := s.Run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range subs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
