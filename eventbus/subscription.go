package eventbus

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
)

// Subscription is one registered handler.
type Subscription struct {
	bus        *Bus
	name       string
	eventType  string
	match      func(*Envelope) bool
	handle     Handler
	async      bool
	workers    int
	queueSize  int
	onFull     FullPolicy
	retry      func() backoff.BackOff
	deadLetter func(Envelope, error)

	queues   []chan Envelope
	quit     chan struct{} // closed to make workers stop at once
	closing  chan struct{} // closed when stop begins: blocked senders give up
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	sendMu   sync.RWMutex // held for reading while sending; for writing to close queues
	stopped  bool
}

func newSubscription(b *Bus, h Handler, opts []SubscribeOption) *Subscription {
	s := &Subscription{bus: b, handle: h, workers: 1, queueSize: 1024, retry: defaultRetry, closing: make(chan struct{})}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	return s
}

// Name returns the subscription's label.
func (s *Subscription) Name() string { return s.name }

func (s *Subscription) start() {
	if !s.async {
		return
	}
	s.quit = make(chan struct{})
	s.queues = make([]chan Envelope, s.workers)
	for i := range s.queues {
		q := make(chan Envelope, s.queueSize)
		s.queues[i] = q
		s.wg.Add(1)
		go s.work(q)
	}
}

// call runs the handler, turning a panic into an error.
func (s *Subscription) call(ctx context.Context, env Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, p)
			s.bus.log.Error("event handler panicked", s.fields(env, 0, err, zap.Stack("stack"))...)
		}
	}()
	return s.handle(ctx, env)
}

func (s *Subscription) deliver(ctx context.Context, env *Envelope) error {
	if !s.async {
		if err := s.call(ctx, *env); err != nil {
			return &HandlerError{Subscription: s.name, Event: *env, Err: err}
		}
		return nil
	}
	s.sendMu.RLock()
	defer s.sendMu.RUnlock()
	if s.stopped {
		return nil // unsubscribed meanwhile
	}
	q := s.queues[0]
	if len(s.queues) > 1 {
		q = s.queues[maphash.String(s.bus.seed, env.AggregateID)%uint64(len(s.queues))]
	}
	select {
	case q <- *env:
		return nil
	default:
	}
	if s.onFull == Fail {
		return &HandlerError{Subscription: s.name, Event: *env, Err: ErrQueueFull}
	}
	select {
	case q <- *env:
		return nil
	case <-ctx.Done():
		return &HandlerError{Subscription: s.name, Event: *env, Err: ctx.Err()}
	case <-s.closing:
		return &HandlerError{Subscription: s.name, Event: *env, Err: ErrClosed}
	}
}

func (s *Subscription) work(q chan Envelope) {
	defer s.wg.Done()
	for {
		select {
		case <-s.quit:
			for env := range q { // whatever is left is undelivered
				s.dead(env, errors.New("bus closed before delivery"), 0)
			}
			return
		case env, ok := <-q:
			if !ok {
				return
			}
			s.handleWithRetry(env)
		}
	}
}

func (s *Subscription) handleWithRetry(env Envelope) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	attempts := 0
	err := backoff.RetryNotify(func() error {
		attempts++
		return s.call(ctx, env)
	}, backoff.WithContext(s.retry(), ctx), func(err error, wait time.Duration) {
		s.bus.log.Debug("event handler failed, retrying", s.fields(env, attempts, err, zap.Duration("wait", wait))...)
	})
	if err != nil {
		s.dead(env, err, attempts)
	}
}

func (s *Subscription) dead(env Envelope, err error, attempts int) {
	s.bus.log.Error("event not delivered, dead-lettered", s.fields(env, attempts, err)...)
	if s.deadLetter != nil {
		s.deadLetter(env, err)
	}
}

func (s *Subscription) fields(env Envelope, attempts int, err error, extra ...zap.Field) []zap.Field {
	return append([]zap.Field{
		zap.String("subscription", s.name), zap.String("aggregate_type", env.AggregateType),
		zap.String("aggregate_id", env.AggregateID), zap.Int64("version", env.Version),
		zap.String("event_type", env.EventType), zap.String("event_id", env.EventID),
		zap.Int("attempts", attempts), zap.Error(err),
	}, extra...)
}

// stop closes the queues, lets the workers drain them until ctx ends, then
// makes them stop.
func (s *Subscription) stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		close(s.closing)
		if !s.async {
			return
		}
		s.sendMu.Lock()
		s.stopped = true
		for _, q := range s.queues {
			close(q)
		}
		s.sendMu.Unlock()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			close(s.quit)
			<-done
			s.stopErr = ctx.Err()
			return
		}
		close(s.quit)
	})
	return s.stopErr
}

// Unsubscribe removes the subscription; an async one drains its queue until
// ctx ends.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	s.bus.remove(s)
	return s.stop(ctx)
}
