package repository

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/retry"
	"github.com/sourced-go/sourced/transport"
)

// sent is a batch whose store failed ambiguously: it may still land, and
// only as version base+1.
type sent struct {
	base    int64
	firstID string
	events  []aggregate.Recorded
}

// writer runs one write (Save or Update) to its end: store, retry on
// conflict (Update only), resolve ambiguous outcomes, publish.
type writer[S any] struct {
	repo       *Repository[S]
	op         string
	ref        transport.Ref
	unresolved []sent
	// fromResolve: the success is an earlier ambiguous batch, whose
	// announcement was already ended.
	fromResolve bool
	// final is the root of the successful attempt, at the stored version,
	// and lastID the id of the last event it stored (empty when it stored
	// nothing).
	final  *aggregate.Root[S]
	lastID string
	// attempts and conflicts count this write's tries, for its span.
	attempts, conflicts int
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
	)
	log := w.repo.cfg.log
	op := func() error {
		attempt++
		w.attempts = attempt
		if len(w.unresolved) > 0 {
			b, landed, err := w.resolve(ctx)
			if err != nil {
				// The check itself failed: never run the command again
				// without knowing; try the check again after a wait.
				if errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrRateLimited) {
					return err
				}
				return backoff.Permanent(err)
			}
			if landed {
				w.fromResolve = true
				res, published = Result{Version: b.base + 1, Events: len(b.events)}, b.events
				return nil
			}
		}
		if root == nil || rerun {
			var err error
			if root, err = prepare(); err != nil {
				return backoff.Permanent(err)
			}
		}
		events := root.Uncommitted()
		if len(events) == 0 {
			res = Result{Version: root.Version()}
			w.final, w.lastID = root, ""
			return nil
		}
		base := root.Version()
		seq := w.repo.cfg.publisher != nil
		if seq {
			w.repo.seq.announce(w.ref.Tenant, w.ref.ID, base+1)
		}
		err := w.repo.t.Store(ctx, w.ref, toWire(events), transport.Exactly(base))
		if seq && err != nil {
			w.repo.seq.done(w.ref.Tenant, w.ref.ID, base+1)
		}
		switch {
		case err == nil:
			root.Commit(base + 1)
			res, published = Result{Version: base + 1, Events: len(events)}, events
			w.final, w.lastID = root, events[len(events)-1].EventID
			return nil
		case errors.Is(err, transport.ErrAmbiguous):
			w.unresolved = append(w.unresolved, sent{base: base, firstID: events[0].EventID, events: events})
			return err
		case errors.Is(err, transport.ErrConflict) && (rerun || len(w.unresolved) > 0):
			w.conflicts++
			return err
		}
		return backoff.Permanent(err)
	}
	notify := func(err error, wait time.Duration) {
		log.Info("store did not go through, retrying",
			zap.String("aggregate_type", w.ref.Type), zap.String("aggregate_id", w.ref.ID),
			zap.String("tenant", w.ref.Tenant), zap.Int("attempt", attempt),
			zap.Duration("wait", wait), zap.Error(err))
	}
	// The policy is built only if the first attempt fails.
	err := retry.Run(ctx, op, w.repo.cfg.retry, notify)
	if err != nil {
		if len(w.unresolved) > 0 && !errors.Is(err, transport.ErrAmbiguous) {
			// The last error is not the ambiguous one, but an earlier batch
			// may still land: the outcome is unknown.
			e := transport.NewError(w.op, w.ref, transport.ErrAmbiguous)
			e.Err = err
			err = e
		}
		return Result{}, err
	}
	if attempt > 1 {
		log.Debug("stored after retries", zap.String("aggregate_type", w.ref.Type),
			zap.String("aggregate_id", w.ref.ID), zap.Int("attempts", attempt), zap.Int64("version", res.Version))
	}
	if perr := w.publish(ctx, res.Version, published); perr != nil {
		return res, perr
	}
	return res, nil
}

// resolve checks the batches whose store was ambiguous: one that landed is
// the success; one whose version was taken by another batch can never land
// and is forgotten.
func (w *writer[S]) resolve(ctx context.Context) (sent, bool, error) {
	keep := w.unresolved[:0]
	for _, b := range w.unresolved {
		page, err := w.repo.t.Load(ctx, w.ref, b.base, 1)
		switch {
		case errors.Is(err, transport.ErrNotFound):
			keep = append(keep, b) // nothing stored yet: it may still land
			continue
		case err != nil:
			return sent{}, false, transport.Wrap(err, "load", w.ref, transport.ErrUnavailable)
		}
		if len(page.Events) > 0 && page.Events[0].EventID == b.firstID {
			w.repo.cfg.log.Info("an ambiguous store had landed",
				zap.String("aggregate_type", w.ref.Type), zap.String("aggregate_id", w.ref.ID),
				zap.Int64("version", b.base+1))
			w.unresolved = nil
			return b, true, nil
		}
		if page.Version <= b.base {
			keep = append(keep, b) // version base+1 is still free
		}
	}
	w.unresolved = keep
	return sent{}, false, nil
}

func toWire(events []aggregate.Recorded) []transport.Event {
	out := make([]transport.Event, len(events))
	for i, e := range events {
		out[i] = transport.Event{EventID: e.EventID, EventType: e.EventType, Data: e.Data, EncryptedData: e.EncryptedData}
	}
	return out
}

func (w *writer[S]) publish(ctx context.Context, version int64, events []aggregate.Recorded) error {
	p := w.repo.cfg.publisher
	if p == nil || len(events) == 0 {
		return nil
	}
	if !w.fromResolve {
		w.repo.seq.waitTurn(w.ref.Tenant, w.ref.ID, version)
		defer w.repo.seq.done(w.ref.Tenant, w.ref.ID, version)
	}
	envs := make([]eventbus.Envelope, len(events))
	for i, e := range events {
		envs[i] = eventbus.Envelope{
			Tenant: w.ref.Tenant, AggregateType: w.ref.Type, AggregateID: w.ref.ID, Version: version,
			EventID: e.EventID, EventType: e.EventType, Data: e.Data, Value: e.Value,
		}
	}
	if err := p.Publish(ctx, envs); err != nil {
		return fmt.Errorf("%s/%s version %d: %w: %w", w.ref.Type, w.ref.ID, version, ErrPublish, err)
	}
	return nil
}
