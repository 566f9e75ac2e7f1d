package repository

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/tracing"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport"
)

var (
	// ErrPublish: the events were stored, but publishing them failed. The
	// commit stands; the Result returned with this error is valid.
	ErrPublish = errors.New("events stored, but publishing them failed")
	// ErrNilCommand: Create or Update was given a nil command.
	ErrNilCommand = errors.New("nil command")
	// ErrAlreadyExists: Create found the aggregate stored already. The
	// error wraps transport.ErrConflict too.
	ErrAlreadyExists = errors.New("aggregate already exists")
	// ErrNothingRecorded: a Create's command recorded no event, so there
	// was nothing to create; nothing was stored. (An Update whose command
	// records nothing succeeds and stores nothing.)
	ErrNothingRecorded = errors.New("the command recorded no event: nothing to create")
)

// Command changes an aggregate by recording events on its root. Its error
// aborts the call and is returned as it is (wrapped), with nothing stored.
type Command[S any] func(root *aggregate.Root[S]) error

// Publisher receives committed events. *eventbus.Bus implements it. A
// publisher with a method Sequencer() *eventbus.Sequencer (the bus has one)
// keeps the version order of every repository publishing to it; another
// publisher gets one sequencer per repository.
type Publisher interface {
	Publish(ctx context.Context, events []eventbus.Envelope) error
}

// Result is what a write stored.
type Result struct {
	// Version is the aggregate version after the write (the loaded version
	// when nothing was stored).
	Version int64
	// Events is the number of events stored.
	Events int
}

// Option configures a Repository.
type Option func(*config)

type config struct {
	log       *zap.Logger
	retry     func() backoff.BackOff
	publisher Publisher
	pageSize  int
	tenant    string

	tracer trace.Tracer

	cacheSize      int
	snapshots      snapshot.Store
	snapshotSchema int
	snapshotEvery  int
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithRetry sets the retry policy of Update, as a factory since a
// backoff.BackOff is stateful: each call gets a fresh one. Tests inject a
// zero-wait policy, for example
//
//	func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 100) }
func WithRetry(policy func() backoff.BackOff) Option {
	return func(c *config) {
		if policy != nil {
			c.retry = policy
		}
	}
}

// DefaultRetry is the default policy: exponential backoff from 20ms,
// doubling up to 1s between attempts, with ±50% jitter, at most 10 retries
// and 10s in all.
func DefaultRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 20 * time.Millisecond
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxInterval = time.Second
	b.MaxElapsedTime = 10 * time.Second
	b.Reset()
	return backoff.WithMaxRetries(b, 10)
}

// WithPublisher publishes the events of every successful write.
func WithPublisher(p Publisher) Option { return func(c *config) { c.publisher = p } }

// WithPageSize sets how many batches each load asks for while hydrating
// (default and maximum transport.MaxLimit).
func WithPageSize(n int) Option {
	return func(c *config) {
		if n > 0 && n <= transport.MaxLimit {
			c.pageSize = n
		}
	}
}

// WithTracerProvider makes a span of every Load and Update (with the
// attempts, the conflicts met and the final version as attributes), the
// parent of the transport's own spans. Without it no span is made and
// nothing is paid.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracer = tracing.Tracer(tp) }
}

// WithTenant scopes every call to a tenant (a UUID).
func WithTenant(tenant string) Option { return func(c *config) { c.tenant = tenant } }

// Repository loads and stores aggregates of one type through a transport.
// It is safe for concurrent use.
type Repository[S any] struct {
	t   transport.Transport
	def *aggregate.Definition[S]
	cfg config
	// seq keeps publishes in version order: the bus's own (shared by
	// every repository publishing to it) or, for another publisher, this
	// repository's; nil without a publisher.
	seq   *eventbus.Sequencer
	cache *rootCache[S]
	// plain remembers, per event Go type, whether its values come back
	// from encoding/json exactly (plainEvent).
	plain *sync.Map
}

// New returns a repository for aggregates defined by def, stored through t.
func New[S any](t transport.Transport, def *aggregate.Definition[S], opts ...Option) *Repository[S] {
	c := config{log: zap.NewNop(), retry: DefaultRetry, pageSize: transport.MaxLimit}
	for _, o := range opts {
		o(&c)
	}
	var seq *eventbus.Sequencer
	if c.publisher != nil {
		if sp, ok := c.publisher.(interface{ Sequencer() *eventbus.Sequencer }); ok {
			seq = sp.Sequencer()
		}
		if seq == nil {
			seq = eventbus.NewSequencer()
		}
	}
	return &Repository[S]{t: t, def: def, cfg: c, seq: seq, cache: newRootCache[S](c.cacheSize), plain: &sync.Map{}}
}

// ForTenant returns a copy of the repository scoped to tenant.
func (r *Repository[S]) ForTenant(tenant string) *Repository[S] {
	c := *r
	c.cfg.tenant = tenant
	return &c
}

// Definition returns the aggregate definition.
func (r *Repository[S]) Definition() *aggregate.Definition[S] { return r.def }

// target returns the ref of id after checking the repository and the ref.
func (r *Repository[S]) target(op, id string) (transport.Ref, error) {
	if r == nil || r.t == nil || r.def == nil {
		return transport.Ref{ID: id}, &transport.Error{Op: op, AggregateID: id, Kind: transport.ErrInvalid,
			Messages: []string{"repository is not set up: use repository.New with a transport and a definition"}}
	}
	ref := transport.Ref{Tenant: r.cfg.tenant, Type: r.def.Type(), ID: id}
	if err := ref.Validate(); err != nil {
		return ref, transport.Wrap(err, op, ref, transport.ErrInvalid)
	}
	return ref, nil
}

// Load returns the aggregate hydrated from its history (from its latest
// usable snapshot on, with WithSnapshots). It fails with an error wrapping
// transport.ErrNotFound when the aggregate does not exist.
func (r *Repository[S]) Load(ctx context.Context, id string) (root *aggregate.Root[S], err error) {
	ref, err := r.target("load", id)
	if err != nil {
		return nil, err
	}
	if r.cfg.tracer != nil {
		var span trace.Span
		ctx, span = r.startSpan(ctx, "load", ref)
		defer func() {
			if root != nil {
				span.SetAttributes(attribute.Int64("sourced.version", root.Version()))
			}
			endSpan(span, err)
		}()
	}
	if r.cfg.snapshots == nil {
		return r.load(ctx, ref)
	}
	root, _, err = r.hydrate(ctx, ref)
	return root, err
}

// load pages through the history, replaying page by page.
func (r *Repository[S]) load(ctx context.Context, ref transport.Ref) (*aggregate.Root[S], error) {
	root := r.def.New(ref.ID)
	since := int64(0)
	for {
		page, err := r.t.Load(ctx, ref, since, r.cfg.pageSize)
		if err != nil {
			return nil, transport.Wrap(err, "load", ref, transport.ErrUnavailable)
		}
		for i := range page.Events {
			e := &page.Events[i]
			if err := root.Replay(e.EventType, e.Data); err != nil {
				return nil, &transport.Error{Op: "load", Tenant: ref.Tenant, AggregateType: ref.Type, AggregateID: ref.ID, Err: err}
			}
		}
		if !page.HasMore || page.Version <= since {
			root.Commit(page.Version)
			return root, nil
		}
		since = page.Version
	}
}

// Exists reports whether the aggregate has been stored.
func (r *Repository[S]) Exists(ctx context.Context, id string) (bool, error) {
	ref, err := r.target("exists", id)
	if err != nil {
		return false, err
	}
	ok, err := r.t.Exists(ctx, ref)
	return ok, transport.Wrap(err, "exists", ref, transport.ErrUnavailable)
}

// Create runs cmd on a new aggregate and stores its events on the condition
// that the aggregate does not exist yet. If it exists, Create fails with an
// error wrapping ErrAlreadyExists and transport.ErrConflict; it is not
// retried. A command that records nothing fails with ErrNothingRecorded:
// an aggregate exists only through its events.
func (r *Repository[S]) Create(ctx context.Context, id string, cmd Command[S]) (Result, error) {
	ref, err := r.target("create", id)
	if err != nil {
		return Result{}, err
	}
	if cmd == nil {
		return Result{}, transport.Wrap(ErrNilCommand, "create", ref, transport.ErrInvalid)
	}
	root := r.def.New(id)
	if err := cmd(root); err != nil {
		return Result{}, commandError("create", ref, err)
	}
	if len(root.Uncommitted()) == 0 {
		return Result{}, fmt.Errorf("create %s/%s: %w", ref.Type, ref.ID, ErrNothingRecorded)
	}
	w := &writer[S]{repo: r, op: "save", ref: ref}
	res, err := w.run(ctx, func() (*aggregate.Root[S], error) { return root, nil }, false)
	if errors.Is(err, transport.ErrConflict) && !errors.Is(err, transport.ErrAmbiguous) {
		err = fmt.Errorf("create %s/%s: %w: %w", ref.Type, ref.ID, ErrAlreadyExists, err)
	}
	if err == nil || errors.Is(err, ErrPublish) {
		r.afterWrite(ctx, ref, w.final, w.lastID, w.stored, true)
	}
	return res, err
}

// Save stores the events recorded on root, expecting the version root was
// loaded at. A conflict is returned, not retried: use Update for that.
// After ErrAmbiguous, saving the same root again is safe: if an earlier
// request of it had landed, Save finds its batch at the next version and
// succeeds (once) instead of reporting a conflict.
func (r *Repository[S]) Save(ctx context.Context, root *aggregate.Root[S]) (Result, error) {
	if root == nil {
		return Result{}, &transport.Error{Op: "save", Kind: transport.ErrInvalid, Messages: []string{"nil root"}}
	}
	ref, err := r.target("save", root.ID())
	if err != nil {
		return Result{}, err
	}
	// The root's batch may have gone out in an earlier Save that returned
	// ErrAmbiguous: saving it again must find it rather than conflict.
	w := &writer[S]{repo: r, op: "save", ref: ref, sentBefore: true}
	res, err := w.run(ctx, func() (*aggregate.Root[S], error) { return root, nil }, false)
	if err == nil || errors.Is(err, ErrPublish) {
		// The caller keeps root: it is snapshotted, never cached.
		r.afterWrite(ctx, ref, w.final, w.lastID, w.stored, false)
	}
	return res, err
}

// Update loads the aggregate, runs cmd and stores what it recorded,
// expecting the loaded version. On a conflict it backs off, reloads and runs
// cmd again on the fresh state, within the retry policy. cmd may therefore
// run more than once and must not have side effects outside the root.
func (r *Repository[S]) Update(ctx context.Context, id string, cmd Command[S]) (_ Result, err error) {
	ref, err := r.target("update", id)
	if err != nil {
		return Result{}, err
	}
	if cmd == nil {
		return Result{}, transport.Wrap(ErrNilCommand, "update", ref, transport.ErrInvalid)
	}
	w := &writer[S]{repo: r, op: "update", ref: ref}
	if r.cfg.tracer != nil {
		var span trace.Span
		ctx, span = r.startSpan(ctx, "update", ref)
		defer func() {
			span.SetAttributes(attribute.Int("sourced.attempts", w.attempts), attribute.Int("sourced.conflicts", w.conflicts))
			if w.final != nil {
				span.SetAttributes(attribute.Int64("sourced.version", w.final.Version()))
			}
			endSpan(span, err)
		}()
	}
	var marker string
	res, err := w.run(ctx, func() (*aggregate.Root[S], error) {
		var root *aggregate.Root[S]
		var err error
		if r.cache == nil && r.cfg.snapshots == nil {
			root, err = r.load(ctx, ref)
		} else {
			// A root from the cache is ours alone until it goes back.
			root, marker, err = r.checkout(ctx, ref)
		}
		if err != nil {
			return nil, err
		}
		if err := cmd(root); err != nil {
			return nil, commandError("update", ref, err)
		}
		return root, nil
	}, true)
	if (err == nil || errors.Is(err, ErrPublish)) && (r.cache != nil || r.cfg.snapshots != nil) {
		if w.lastID != "" {
			marker = w.lastID
		}
		r.afterWrite(ctx, ref, w.final, marker, w.stored, true)
	}
	return res, err
}

func commandError(op string, ref transport.Ref, err error) error {
	return fmt.Errorf("%s %s/%s: command: %w", op, ref.Type, ref.ID, err)
}

// RequestDelete asks to delete the aggregate and returns the token that
// ConfirmDelete needs, valid for ten minutes.
func (r *Repository[S]) RequestDelete(ctx context.Context, id string) (string, error) {
	ref, err := r.target("request delete", id)
	if err != nil {
		return "", err
	}
	tok, err := r.t.RequestDelete(ctx, transport.DeleteAggregate(ref))
	return tok, transport.Wrap(err, "request delete", ref, transport.ErrUnavailable)
}

// ConfirmDelete deletes the aggregate for good.
func (r *Repository[S]) ConfirmDelete(ctx context.Context, id, token string) error {
	ref, err := r.target("confirm delete", id)
	if err != nil {
		return err
	}
	r.cache.drop(cacheKey{ref.Tenant, ref.ID})
	err = r.t.ConfirmDelete(ctx, transport.DeleteAggregate(ref), token)
	if err == nil && r.cfg.snapshots != nil {
		if serr := r.cfg.snapshots.Delete(ctx, ref); serr != nil {
			r.cfg.log.Warn("snapshot delete failed (a later load ignores it anyway)", r.fields(ref, zap.Error(serr))...)
		}
	}
	if err == nil {
		r.cfg.log.Info("aggregate deleted", zap.String("aggregate_type", ref.Type), zap.String("aggregate_id", ref.ID), zap.String("tenant", ref.Tenant))
	}
	return transport.Wrap(err, "confirm delete", ref, transport.ErrUnavailable)
}

// typeTarget returns the delete target of every aggregate of this type.
func (r *Repository[S]) typeTarget(op string) (transport.DeleteTarget, transport.Ref, error) {
	if r == nil || r.t == nil || r.def == nil {
		return transport.DeleteTarget{}, transport.Ref{}, &transport.Error{Op: op, Kind: transport.ErrInvalid,
			Messages: []string{"repository is not set up: use repository.New with a transport and a definition"}}
	}
	target := transport.DeleteAllOfType(transport.Scope{Tenant: r.cfg.tenant, Type: r.def.Type()})
	ref := transport.Ref{Tenant: target.Tenant, Type: target.Type}
	if err := target.Validate(); err != nil {
		return target, ref, transport.Wrap(err, op, ref, transport.ErrInvalid)
	}
	return target, ref, nil
}

// RequestDeleteAll asks to delete every aggregate of this type (of this
// repository's tenant) and returns the token ConfirmDeleteAll needs.
func (r *Repository[S]) RequestDeleteAll(ctx context.Context) (string, error) {
	target, ref, err := r.typeTarget("request delete")
	if err != nil {
		return "", err
	}
	tok, err := r.t.RequestDelete(ctx, target)
	return tok, transport.Wrap(err, "request delete", ref, transport.ErrUnavailable)
}

// ConfirmDeleteAll deletes every aggregate of this type for good.
func (r *Repository[S]) ConfirmDeleteAll(ctx context.Context, token string) error {
	target, ref, err := r.typeTarget("confirm delete")
	if err != nil {
		return err
	}
	r.cache.clear()
	err = r.t.ConfirmDelete(ctx, target, token)
	if err == nil {
		r.cfg.log.Info("aggregate type deleted", zap.String("aggregate_type", ref.Type), zap.String("tenant", ref.Tenant))
	}
	return transport.Wrap(err, "confirm delete", ref, transport.ErrUnavailable)
}

func (r *Repository[S]) startSpan(ctx context.Context, op string, ref transport.Ref) (context.Context, trace.Span) {
	return r.cfg.tracer.Start(ctx, "sourced.repository."+op, trace.WithAttributes(
		attribute.String("sourced.aggregate_type", ref.Type), attribute.String("sourced.aggregate_id", ref.ID),
		attribute.String("sourced.tenant", ref.Tenant)))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
