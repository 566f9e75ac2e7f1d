package eventbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
)

var (
	// ErrClosed: Publish or Subscribe after Close.
	ErrClosed = errors.New("event bus closed")
	// ErrQueueFull: an async subscriber's queue is full and the
	// subscription asked to fail rather than block.
	ErrQueueFull = errors.New("subscriber queue full")
	// ErrHandler: a sync handler failed (wrapped in *HandlerError).
	ErrHandler = errors.New("event handler failed")
	// ErrPanic: a handler panicked; the panic was recovered and is
	// handled as the handler's error (wrapped in *HandlerError).
	ErrPanic = errors.New("event handler panicked")
)

// HandlerError reports a failed handler: which subscription and which event.
// Durable subscriptions (package subscription) report their failures with
// it too.
type HandlerError struct {
	Subscription string
	Event        Envelope
	Err          error
}

// Error names the subscription, the aggregate and the event.
func (e *HandlerError) Error() string {
	if e.Event.Sequence > 0 {
		return fmt.Sprintf("subscription %q: %s %s/%s version %d (event %s, sequence number %d): %v",
			e.Subscription, e.Event.EventType, e.Event.AggregateType, e.Event.AggregateID, e.Event.Version, e.Event.EventID, e.Event.Sequence, e.Err)
	}
	return fmt.Sprintf("subscription %q: %s %s/%s version %d (event %s): %v",
		e.Subscription, e.Event.EventType, e.Event.AggregateType, e.Event.AggregateID, e.Event.Version, e.Event.EventID, e.Err)
}

// Unwrap returns ErrHandler and the handler's own error.
func (e *HandlerError) Unwrap() []error { return []error{ErrHandler, e.Err} }

// Handler handles one event.
type Handler func(ctx context.Context, env Envelope) error

// Option configures a Bus.
type Option func(*Bus)

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(b *Bus) {
		if l != nil {
			b.log = l
		}
	}
}

// Bus delivers published events to subscriptions. It is safe for concurrent
// use. The zero value is not usable; call New.
type Bus struct {
	log  *zap.Logger
	mu   sync.Mutex // serialises changes to subs
	subs atomic.Pointer[[]*Subscription]
	// inflight counts the publishes under way, so that Close waits for
	// them to finish queuing; no lock is held while handlers run, so a
	// handler may publish (or Close may run) without a deadlock.
	inflight atomic.Int64
	closed   atomic.Bool
	idle     chan struct{} // a publish that ends last after Close signals here
	seed     maphash.Seed
	seq      *Sequencer
}

// New returns a bus with no subscriptions.
func New(opts ...Option) *Bus {
	b := &Bus{log: zap.NewNop(), seed: maphash.MakeSeed(), idle: make(chan struct{}, 1), seq: NewSequencer()}
	b.subs.Store(&[]*Subscription{})
	for _, o := range opts {
		o(b)
	}
	return b
}

// Publish delivers events to every matching subscription: sync handlers run
// now, in order; async subscriptions get the events queued. It returns the
// sync handlers' errors joined (each a *HandlerError), ErrQueueFull, or
// ctx's error if it ended while Publish waited for queue space.
//
// A sync handler may publish (a handler that writes through a repository
// does), and may do so while Close runs: the nested publish then fails
// with ErrClosed.
func (b *Bus) Publish(ctx context.Context, events []Envelope) error {
	b.inflight.Add(1)
	defer b.leave()
	if b.closed.Load() {
		return ErrClosed
	}
	var errs []error
	for _, s := range *b.subs.Load() {
		for i := range events {
			env := &events[i]
			if !s.match(env) {
				continue
			}
			if err := s.deliver(ctx, env); err != nil {
				errs = append(errs, err)
				if s.async {
					// Queue full, ctx done or closing: the rest cannot be
					// queued in order.
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// leave ends a publish; the last one to end after Close tells Close.
func (b *Bus) leave() {
	if b.inflight.Add(-1) == 0 && b.closed.Load() {
		select {
		case b.idle <- struct{}{}:
		default:
		}
	}
}

// Sequencer returns the bus's sequencer, which every repository publishing
// to the bus uses to keep each aggregate's publishes in version order.
func (b *Bus) Sequencer() *Sequencer { return b.seq }

// Close stops accepting events, waits for the publishes under way to
// finish queuing and for async queues to drain until ctx ends, and stops
// every worker. It returns ctx's error if they did not finish in time (the
// events left in queues are dead-lettered as undelivered; a publisher
// blocked on a full queue gets an error).
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	was := b.closed.Swap(true)
	b.mu.Unlock()
	if was {
		return nil
	}
	var late error
wait:
	for b.inflight.Load() > 0 {
		select {
		case <-b.idle:
		case <-ctx.Done():
			late = ctx.Err()
			break wait
		}
	}
	var errs []error
	for _, s := range *b.subs.Load() {
		if err := s.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if late != nil && len(errs) == 0 {
		errs = append(errs, late)
	}
	return errors.Join(errs...)
}

// FullPolicy says what Publish does when an async queue is full.
type FullPolicy int

const (
	// Block waits for room, honouring the publisher's ctx.
	Block FullPolicy = iota
	// Fail returns ErrQueueFull at once.
	Fail
)

// SubscribeOption configures a subscription.
type SubscribeOption func(*Subscription)

// Sync runs the handler inside Publish (the default).
func Sync() SubscribeOption { return func(s *Subscription) { s.async = false } }

// Async delivers through a bounded queue served by workers goroutines
// (default 1); events of one aggregate always go to the same worker.
func Async() SubscribeOption { return func(s *Subscription) { s.async = true } }

// Workers sets the number of workers of an async subscription.
func Workers(n int) SubscribeOption {
	return func(s *Subscription) {
		if n > 0 {
			s.workers = n
		}
	}
}

// QueueSize sets the capacity of each worker's queue (default 1024).
func QueueSize(n int) SubscribeOption {
	return func(s *Subscription) {
		if n > 0 {
			s.queueSize = n
		}
	}
}

// OnFull sets what Publish does when the queue is full (default Block).
func OnFull(p FullPolicy) SubscribeOption { return func(s *Subscription) { s.onFull = p } }

// Retry sets the retry policy of a failing async handler, as a factory (a
// backoff.BackOff is stateful). Default: exponential from 50ms, at most 5
// retries and 30s.
func Retry(policy func() backoff.BackOff) SubscribeOption {
	return func(s *Subscription) {
		if policy != nil {
			s.retry = policy
		}
	}
}

// DeadLetter receives the events an async handler could not handle after
// its retries, and those left in queues when Close ran out of time.
func DeadLetter(fn func(env Envelope, err error)) SubscribeOption {
	return func(s *Subscription) { s.deadLetter = fn }
}

// Named sets the event type name a typed subscription listens to (default:
// E's Go type name, as package aggregate names events).
func Named(eventType string) SubscribeOption {
	return func(s *Subscription) { s.eventType = eventType }
}

// Label names the subscription in logs and errors.
func Label(name string) SubscribeOption { return func(s *Subscription) { s.name = name } }

func defaultRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxElapsedTime = 30 * time.Second
	b.Reset()
	return backoff.WithMaxRetries(b, 5)
}

// Typed adapts a typed handler to a Handler, the one way typed handlers
// are built for the bus and for durable subscriptions alike. The Handler
// passes the recorded value when the envelope carries one, and otherwise
// decodes Data (JSON) into E. eventType is the name E listens to by
// default: E's Go type name, as package aggregate names events.
func Typed[E any](h func(ctx context.Context, env Envelope, e E) error) (eventType string, handler Handler) {
	t := reflect.TypeFor[E]()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name(), func(ctx context.Context, env Envelope) error {
		if v, ok := env.Value.(E); ok {
			return h(ctx, env, v)
		}
		var e E
		if len(env.Data) > 0 {
			if err := json.Unmarshal(env.Data, &e); err != nil {
				return fmt.Errorf("decode %s into %T: %w", env.EventType, e, err)
			}
		}
		return h(ctx, env, e)
	}
}

// Subscribe registers a handler for events of type E. It receives the
// payload decoded (or, when published by a repository in this process, the
// recorded value itself) with its envelope.
func Subscribe[E any](b *Bus, h func(ctx context.Context, env Envelope, e E) error, opts ...SubscribeOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("eventbus: nil handler")
	}
	name, handler := Typed(h)
	s := newSubscription(b, handler, opts)
	if s.eventType == "" {
		s.eventType = name
	}
	if s.name == "" {
		s.name = s.eventType
	}
	typ := s.eventType
	s.match = func(env *Envelope) bool { return env.EventType == typ }
	return b.add(s)
}

// SubscribeAggregate registers a handler for every event of an aggregate
// type.
func SubscribeAggregate(b *Bus, aggregateType string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("eventbus: nil handler")
	}
	s := newSubscription(b, h, opts)
	if s.name == "" {
		s.name = aggregateType
	}
	s.match = func(env *Envelope) bool { return env.AggregateType == aggregateType }
	return b.add(s)
}

// SubscribeAll registers a handler for every event.
func SubscribeAll(b *Bus, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("eventbus: nil handler")
	}
	s := newSubscription(b, h, opts)
	if s.name == "" {
		s.name = "all"
	}
	s.match = func(*Envelope) bool { return true }
	return b.add(s)
}

func (b *Bus) add(s *Subscription) (*Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	s.start()
	old := *b.subs.Load()
	next := make([]*Subscription, len(old), len(old)+1)
	copy(next, old)
	next = append(next, s)
	b.subs.Store(&next)
	return s, nil
}

func (b *Bus) remove(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.subs.Load()
	next := make([]*Subscription, 0, len(old))
	for _, o := range old {
		if o != s {
			next = append(next, o)
		}
	}
	b.subs.Store(&next)
}
