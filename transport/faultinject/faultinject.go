package faultinject

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourced-go/sourced/transport"
)

// Op names the call a fault applies to.
type Op string

// The operations of a transport, and of the HTTP API as seen by a
// RoundTripper (where Op is the request's method).
const (
	OpLoad          Op = "load"
	OpStore         Op = "store"
	OpStoreBulk     Op = "store bulk"
	OpExists        Op = "exists"
	OpRequestDelete Op = "request delete"
	OpConfirmDelete Op = "confirm delete"
)

// Kind says how a fault strikes.
type Kind int

const (
	// None lets the call through untouched.
	None Kind = iota
	// Before returns the fault's error without making the call.
	Before
	// After makes the call, drops its result and returns the fault's
	// error: the store happened but the caller cannot know it.
	After
	// Delay waits (honouring ctx) and then makes the call.
	Delay
	// Status answers an HTTP request with a canned status code without
	// sending it (RoundTripper only).
	Status
	// ResetBody sends the request and breaks the response body part way
	// through (RoundTripper only).
	ResetBody
	// Later returns the fault's error at once and makes the call later,
	// just before the Calls-th next call passes (or when Land is called):
	// a request that hangs and lands after the client gave up. Its own
	// result is dropped. A RoundTripper answers with a timeout after the
	// request was sent.
	Later
)

// Fault is one injected misbehaviour.
type Fault struct {
	Kind Kind
	// Err is returned by Before and After faults.
	Err error
	// Wait is the delay of a Delay fault.
	Wait time.Duration
	// Code is the status of a Status fault; Header is added to it.
	Code   int
	Header map[string]string
	// Calls is how many later calls a Later fault's call waits for: it
	// is made just before the Calls-th of them (at least 1).
	Calls int
}

// NoFault lets the call through.
var NoFault = Fault{}

// Fail returns err before the call is made.
func Fail(err error) Fault { return Fault{Kind: Before, Err: err} }

// FailAfter makes the call and then returns err, the way a timeout after the
// request went out looks to a client.
func FailAfter(err error) Fault { return Fault{Kind: After, Err: err} }

// LandLater answers err at once and makes the call just before the
// calls-th next call to the transport (any operation) passes, or when
// Transport.Land is called, whichever comes first. The caller cannot know
// whether, or when, its request lands: the ambiguous store that lands
// after the client retried, checked, or gave up.
func LandLater(err error, calls int) Fault {
	return Fault{Kind: Later, Err: err, Calls: max(calls, 1)}
}

// Sleep delays the call by d.
func Sleep(d time.Duration) Fault { return Fault{Kind: Delay, Wait: d} }

// String describes the fault for logs and reports.
func (f Fault) String() string {
	switch f.Kind {
	case None:
		return "none"
	case Before:
		return fmt.Sprintf("fail before: %v", f.Err)
	case After:
		return fmt.Sprintf("fail after: %v", f.Err)
	case Delay:
		return fmt.Sprintf("delay %s", f.Wait)
	case Status:
		return fmt.Sprintf("status %d", f.Code)
	case ResetBody:
		return "reset mid-body"
	case Later:
		return fmt.Sprintf("land %d calls later: %v", f.Calls, f.Err)
	}
	return fmt.Sprintf("kind %d", f.Kind)
}

// Policy decides the fault of one call. It must be safe for concurrent use.
type Policy func(op Op) Fault

// Random injects, with probability rate, one of faults chosen uniformly,
// from a source seeded with seed; the same seed and the same order of calls
// give the same faults.
func Random(seed uint64, rate float64, faults ...Fault) Policy {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(Op) Fault {
		if len(faults) == 0 {
			return NoFault
		}
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() >= rate {
			return NoFault
		}
		return faults[rng.IntN(len(faults))]
	}
}

// Sequence hands out faults in order, one a call, then none.
func Sequence(faults ...Fault) Policy {
	var next atomic.Int64
	return func(Op) Fault {
		i := next.Add(1) - 1
		if i >= int64(len(faults)) {
			return NoFault
		}
		return faults[i]
	}
}

// Only applies p to the listed operations and lets every other call through.
func Only(p Policy, ops ...Op) Policy {
	return func(op Op) Fault {
		for _, o := range ops {
			if o == op {
				return p(op)
			}
		}
		return NoFault
	}
}

// Stats counts calls and injected faults by kind.
// Later counts the calls held back by a Later fault, Landed those of
// them made since.
type Stats struct {
	Calls, Before, After, Delayed, Status, Reset, Later, Landed int64
}

// Injected is the number of calls that got a fault.
func (s Stats) Injected() int64 {
	return s.Before + s.After + s.Delayed + s.Status + s.Reset + s.Later
}

type counters struct {
	calls, before, after, delayed, status, reset, later, landed atomic.Int64
}

func (c *counters) count(f Fault) {
	c.calls.Add(1)
	switch f.Kind {
	case Before:
		c.before.Add(1)
	case After:
		c.after.Add(1)
	case Delay:
		c.delayed.Add(1)
	case Status:
		c.status.Add(1)
	case ResetBody:
		c.reset.Add(1)
	case Later:
		c.later.Add(1)
	}
}

func (c *counters) snapshot() Stats {
	return Stats{Calls: c.calls.Load(), Before: c.before.Load(), After: c.after.Load(),
		Delayed: c.delayed.Load(), Status: c.status.Load(), Reset: c.reset.Load(),
		Later: c.later.Load(), Landed: c.landed.Load()}
}

// Transport is a transport.Transport that injects faults into the calls it
// passes on to the one it wraps.
type Transport struct {
	next   transport.Transport
	policy Policy
	stats  counters
	holder
}

// holder keeps the calls of Later faults not made yet; landing serialises
// making them, so each is made once and in the order it is due.
type holder struct {
	heldMu  sync.Mutex
	held    []*heldCall
	landing sync.Mutex
}

// heldCall is a call a Later fault holds back.
type heldCall struct {
	calls int // later calls still to pass before it is made
	call  func()
}

// hold keeps call until calls later calls have come.
func (h *holder) hold(calls int, call func()) {
	h.heldMu.Lock()
	h.held = append(h.held, &heldCall{calls: max(calls, 1), call: call})
	h.heldMu.Unlock()
}

var _ transport.Transport = (*Transport)(nil)

// Wrap returns next behind policy. A nil policy injects nothing.
func Wrap(next transport.Transport, policy Policy) *Transport {
	if policy == nil {
		policy = func(Op) Fault { return NoFault }
	}
	return &Transport{next: next, policy: policy}
}

// Stats returns what was injected so far.
func (t *Transport) Stats() Stats { return t.stats.snapshot() }

// do runs call under the fault the policy picks for op.
func (t *Transport) do(ctx context.Context, op Op, ref transport.Ref, call func(ctx context.Context) error) error {
	if t == nil || t.next == nil {
		e := transport.NewError(string(op), ref, transport.ErrInvalid)
		e.Messages = []string{"faultinject: no transport to wrap"}
		return e
	}
	t.landDue(false, &t.stats)
	f := t.policy(op)
	t.stats.count(f)
	switch f.Kind {
	case Later:
		// The call outlives the caller's context, as a request in flight
		// does.
		bg := context.WithoutCancel(ctx)
		t.hold(f.Calls, func() { _ = call(bg) })
		return t.wrap(f.Err, op, ref)
	case Before:
		return t.wrap(f.Err, op, ref)
	case After:
		if err := call(ctx); err != nil {
			return err
		}
		return t.wrap(f.Err, op, ref)
	case Delay:
		timer := time.NewTimer(f.Wait)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return transport.Wrap(ctx.Err(), string(op), ref, transport.ErrUnavailable)
		case <-timer.C:
		}
	}
	return call(ctx)
}

// landDue makes the held calls that are due: all of them with all, else
// those whose count of later calls has run out with this one.
func (h *holder) landDue(all bool, c *counters) {
	h.heldMu.Lock()
	if len(h.held) == 0 {
		h.heldMu.Unlock()
		return
	}
	var due []*heldCall
	keep := h.held[:0]
	for _, hc := range h.held {
		if hc.calls--; all || hc.calls <= 0 {
			due = append(due, hc)
		} else {
			keep = append(keep, hc)
		}
	}
	clear(h.held[len(keep):])
	h.held = keep
	// Take the landing lock before letting go of the list, so that calls
	// due later are made after these.
	h.landing.Lock()
	h.heldMu.Unlock()
	defer h.landing.Unlock()
	for _, hc := range due {
		hc.call()
		c.landed.Add(1)
	}
}

// Held returns how many calls Later faults hold back.
func (h *holder) Held() int {
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	return len(h.held)
}

// Land makes every call still held back by a Later fault now.
func (t *Transport) Land() { t.landDue(true, &t.stats) }

func (t *Transport) wrap(err error, op Op, ref transport.Ref) error {
	if err == nil {
		err = transport.ErrUnavailable
	}
	e := transport.NewError(string(op), ref, err)
	e.Messages = []string{"injected fault"}
	return e
}

// Load passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) Load(ctx context.Context, ref transport.Ref, since int64, limit int) (transport.Page, error) {
	var page transport.Page
	err := t.do(ctx, OpLoad, ref, func(ctx context.Context) (err error) {
		page, err = t.next.Load(ctx, ref, since, limit)
		return err
	})
	if err != nil {
		return transport.Page{}, err
	}
	return page, nil
}

// Store passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) Store(ctx context.Context, ref transport.Ref, events []transport.Event, expected transport.ExpectedVersion) error {
	return t.do(ctx, OpStore, ref, func(ctx context.Context) error { return t.next.Store(ctx, ref, events, expected) })
}

// StoreBulk passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) StoreBulk(ctx context.Context, scope transport.Scope, batches []transport.Batch) error {
	ref := transport.Ref{Tenant: scope.Tenant, Type: scope.Type}
	return t.do(ctx, OpStoreBulk, ref, func(ctx context.Context) error { return t.next.StoreBulk(ctx, scope, batches) })
}

// Exists passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) Exists(ctx context.Context, ref transport.Ref) (bool, error) {
	var ok bool
	err := t.do(ctx, OpExists, ref, func(ctx context.Context) (err error) {
		ok, err = t.next.Exists(ctx, ref)
		return err
	})
	return ok && err == nil, err
}

// RequestDelete passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) RequestDelete(ctx context.Context, target transport.DeleteTarget) (string, error) {
	var token string
	ref := transport.Ref{Tenant: target.Tenant, Type: target.Type, ID: target.ID}
	err := t.do(ctx, OpRequestDelete, ref, func(ctx context.Context) (err error) {
		token, err = t.next.RequestDelete(ctx, target)
		return err
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// ConfirmDelete passes on to the wrapped transport, unless a fault strikes.
func (t *Transport) ConfirmDelete(ctx context.Context, target transport.DeleteTarget, token string) error {
	ref := transport.Ref{Tenant: target.Tenant, Type: target.Type, ID: target.ID}
	return t.do(ctx, OpConfirmDelete, ref, func(ctx context.Context) error { return t.next.ConfirmDelete(ctx, target, token) })
}
