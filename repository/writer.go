package repository

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/retry"
	"github.com/sourced-go/sourced/transport"
)

// writer runs one write (Create, Save or Update) to its end: store, retry on
// conflict (Update only), resolve ambiguous outcomes, publish.
//
// An ambiguous store (the request may or may not land, now or later) is
// resolved by sending the same batch again, with the same event ids and
// the same expected version N, until the outcome is known: the first
// request and its resends all expect N, so at most one of them lands. A
// resend that succeeds is the success; one that conflicts means version N+1
// is taken, and the batch there says by whom: ours (it landed: success) or
// someone else's (none of ours can land any more: a conflict, and Update
// runs the command again). The command is never run again while a request
// of ours could still land.
type writer[S any] struct {
	repo *Repository[S]
	op   string
	ref  transport.Ref
	// final is the root of the successful attempt, at the stored version,
	// and lastID the id of the last event it stored (empty when it stored
	// nothing).
	final  *aggregate.Root[S]
	lastID string
	// stored are the events the successful attempt stored.
	stored []aggregate.Recorded
	// attempts and conflicts count this write's tries, for its span.
	attempts, conflicts int
	// announced is the version this writer holds in the sequencer (0:
	// none): from before its store until its publish ends or it is known
	// not to have stored.
	announced int64
	// sentBefore: the batch may have been sent by an earlier call (Save
	// of a root whose last Save returned ErrAmbiguous: same event ids,
	// same expected version). A conflict then looks at version N+1 before
	// it is believed.
	sentBefore bool
}

// run stores what prepare returns. With rerun, conflicts are retried by
// calling prepare again (Update); without, a conflict is final (Save,
// Create) and prepare's root is resent only to resolve ambiguity.
func (w *writer[S]) run(ctx context.Context, prepare func() (*aggregate.Root[S], error), rerun bool) (Result, error) {
	var (
		res       Result
		published []aggregate.Recorded
		attempt   int
		root      *aggregate.Root[S]
		// pending: root's batch was sent and its outcome is unknown.
		pending bool
	)
	// Whatever happens (an error, a panic in a transport), a version slot
	// taken is given back.
	defer w.release()
	log := w.repo.cfg.log
	seq := w.repo.seq
	success := func(events []aggregate.Recorded) {
		base := root.Version()
		root.Commit(base + 1)
		res, published = Result{Version: base + 1, Events: len(events)}, events
		w.final, w.lastID, w.stored = root, events[len(events)-1].EventID, events
	}
	op := func() error {
		attempt++
		w.attempts = attempt
		if !pending {
			if root == nil || rerun {
				var err error
				if root, err = prepare(); err != nil {
					return backoff.Permanent(err)
				}
			}
			if len(root.Uncommitted()) == 0 {
				res = Result{Version: root.Version()}
				w.final, w.lastID = root, ""
				return nil
			}
			if seq != nil {
				w.announced = root.Version() + 1
				seq.Announce(w.ref.Tenant, w.ref.Type, w.ref.ID, w.announced)
			}
		}
		events := root.Uncommitted()
		base := root.Version()
		err := w.repo.t.Store(ctx, w.ref, toWire(events), transport.Exactly(base))
		switch {
		case err == nil:
			success(events)
			return nil
		case errors.Is(err, transport.ErrAmbiguous):
			pending = true
			return err
		case errors.Is(err, transport.ErrConflict):
			if !pending && w.sentBefore {
				// An earlier call's request may be the one that took N+1.
				if landed, known, lerr := w.landed(ctx, base, events); lerr == nil && known && landed {
					log.Info("a store of an earlier call had landed", w.fields(zap.Int64("version", base+1))...)
					success(events)
					return nil
				}
			}
			if pending {
				landed, known, lerr := w.landed(ctx, base, events)
				switch {
				case lerr != nil:
					return lerr // try again after a wait; still pending
				case !known:
					return err // version N+1 is not there: resend
				case landed:
					log.Info("an ambiguous store had landed", w.fields(zap.Int64("version", base+1))...)
					success(events)
					return nil
				}
				pending = false // someone else's batch is at N+1: ours never lands
			}
			w.release()
			if rerun {
				w.conflicts++
				return err
			}
			return backoff.Permanent(err)
		case pending && (errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrRateLimited)):
			return err // resend after a wait
		case pending:
			return backoff.Permanent(err)
		}
		w.release()
		return backoff.Permanent(err)
	}
	notify := func(err error, wait time.Duration) {
		log.Info("store did not go through, retrying", w.fields(zap.Int("attempt", attempt),
			zap.Duration("wait", wait), zap.Error(err))...)
	}
	// The policy is built only if the first attempt fails.
	err := retry.Run(ctx, op, w.repo.cfg.retry, notify)
	if err != nil {
		if pending && !errors.Is(err, transport.ErrAmbiguous) {
			// The last error is not the ambiguous one, but a request may
			// still land: the outcome is unknown.
			e := transport.NewError(w.op, w.ref, transport.ErrAmbiguous)
			e.Err = err
			err = e
		}
		return Result{}, err
	}
	if attempt > 1 {
		log.Debug("stored after retries", w.fields(zap.Int("attempts", attempt), zap.Int64("version", res.Version))...)
	}
	if perr := w.publish(ctx, res.Version, published); perr != nil {
		return res, perr
	}
	return res, nil
}

// release gives back the version slot this writer holds, if any.
func (w *writer[S]) release() {
	if w.announced > 0 {
		w.repo.seq.Done(w.ref.Tenant, w.ref.Type, w.ref.ID, w.announced)
		w.announced = 0
	}
}

func (w *writer[S]) fields(extra ...zap.Field) []zap.Field {
	return w.repo.fields(w.ref, extra...)
}

// landed looks at version base+1 after a resend conflicted: known is
// false when that version is not there (the conflict has another cause,
// such as the aggregate deleted meanwhile); otherwise landed says whether
// it holds our batch, event for event.
func (w *writer[S]) landed(ctx context.Context, base int64, events []aggregate.Recorded) (landed, known bool, err error) {
	page, err := w.repo.t.Load(ctx, w.ref, base, 1)
	switch {
	case errors.Is(err, transport.ErrNotFound):
		return false, false, nil
	case err != nil:
		return false, false, transport.Wrap(err, "load", w.ref, transport.ErrUnavailable)
	}
	if len(page.Events) == 0 || page.Version <= base {
		return false, false, nil
	}
	// The whole batch, not only its first event: a Save of a root sent
	// before and recorded on since holds more events than landed.
	if len(page.Events) != len(events) {
		return false, true, nil
	}
	for i := range events {
		if page.Events[i].EventID != events[i].EventID {
			return false, true, nil
		}
	}
	return true, true, nil
}

func toWire(events []aggregate.Recorded) []transport.Event {
	out := make([]transport.Event, len(events))
	for i, e := range events {
		out[i] = transport.Event{EventID: e.EventID, EventType: e.EventType, Data: e.Data, EncryptedData: e.EncryptedData}
	}
	return out
}

// publishing is what a publish in progress keeps in its context, so that a
// write made by a sync handler during it (the handler passes its ctx on)
// is published after it instead of inside it: the write waits neither for
// the version slot the publish holds nor for its own turn while handlers
// run, and every subscriber sees the batches of an aggregate in version
// order.
//
// It is the context itself (its parent's, plus itself as a value): one
// allocation per publish.
type publishing struct {
	context.Context
	mu    sync.Mutex
	later []deferred
	over  bool // a write that comes after this publishes itself
}

// add keeps d for after the publish, unless that is over.
func (f *publishing) add(d deferred) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.over {
		return false
	}
	f.later = append(f.later, d)
	return true
}

// next returns the i-th deferred batch, or marks the publish over.
func (f *publishing) next(i int) (deferred, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i < len(f.later) {
		return f.later[i], true
	}
	f.over = true
	return deferred{}, false
}

type publishingKey struct{}

// Value returns the publishing for publishingKey, else the parent's value.
func (f *publishing) Value(key any) any {
	if key == (publishingKey{}) {
		return f
	}
	return f.Context.Value(key)
}

// deferred is a batch stored during a publish, with the version slot its
// writer held, to be published when that publish is over.
type deferred struct {
	seq     *eventbus.Sequencer
	p       Publisher
	ref     transport.Ref
	version int64
	slot    int64
	envs    []eventbus.Envelope
}

func (w *writer[S]) publish(ctx context.Context, version int64, events []aggregate.Recorded) error {
	p := w.repo.cfg.publisher
	if p == nil || len(events) == 0 {
		return nil
	}
	envs := make([]eventbus.Envelope, len(events))
	for i, e := range events {
		envs[i] = eventbus.Envelope{
			Tenant: w.ref.Tenant, AggregateType: w.ref.Type, AggregateID: w.ref.ID, Version: version,
			EventID: e.EventID, EventType: e.EventType, Data: e.Data, Value: e.Value,
		}
	}
	d := deferred{seq: w.repo.seq, p: p, ref: w.ref, version: version, slot: w.announced, envs: envs}
	w.announced = 0 // the slot goes with the batch
	if outer, ok := ctx.Value(publishingKey{}).(*publishing); ok && outer.add(d) {
		return nil
	}
	frame := &publishing{Context: ctx}
	ctx = frame
	pos := 0 // the first deferred batch not taken yet
	defer func() {
		if p := recover(); p != nil {
			// A publisher panicked: the batches not published give their
			// version slots back, or their aggregates' next publishes
			// would wait for ever.
			for i := pos; ; i++ {
				later, ok := frame.next(i)
				if !ok {
					break
				}
				if later.slot > 0 {
					later.seq.Done(later.ref.Tenant, later.ref.Type, later.ref.ID, later.slot)
				}
			}
			panic(p)
		}
	}()
	err := d.publish(ctx)
	// Batches written by sync handlers meanwhile (and by theirs), in the
	// order they were written.
	for {
		later, ok := frame.next(pos)
		if !ok {
			return err
		}
		pos++
		if perr := later.publish(ctx); perr != nil {
			err = errors.Join(err, perr)
		}
	}
}

// publish waits for the batch's turn, publishes it and gives its slot back.
func (d *deferred) publish(ctx context.Context) (err error) {
	if d.slot > 0 {
		defer d.seq.Done(d.ref.Tenant, d.ref.Type, d.ref.ID, d.slot)
	}
	if d.seq != nil {
		if err := d.seq.Wait(ctx, d.ref.Tenant, d.ref.Type, d.ref.ID, d.version); err != nil {
			return fmt.Errorf("%s/%s version %d: %w: waiting for version %d to be published: %w", d.ref.Type, d.ref.ID, d.version, ErrPublish, d.version-1, err)
		}
	}
	if err := d.p.Publish(ctx, d.envs); err != nil {
		return fmt.Errorf("%s/%s version %d: %w: %w", d.ref.Type, d.ref.ID, d.version, ErrPublish, err)
	}
	return nil
}
