// Package deletetoken keeps the tokens of the two-step delete for
// transports that run in the process (memory, bolt, or yours): a token is
// issued for one target, is valid for transport.DeleteTokenTTL, and can be
// redeemed once, for that target only.
//
// The registry is bounded: it remembers at most its capacity of tokens
// issued within the TTL (DefaultCapacity unless WithCapacity says
// otherwise), and issuing one more forgets the oldest. Expired tokens are forgotten a few at a time as new
// ones are issued, oldest first, never by a sweep over all of them.
package deletetoken

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// DefaultCapacity is how many live tokens a registry holds by default:
// far more deletes than anyone confirms in transport.DeleteTokenTTL, and a
// bound on what a flood of delete requests can make it hold.
const DefaultCapacity = 100_000

// Registry holds issued tokens. It is safe for concurrent use; the zero
// value is not usable, call New.
type Registry struct {
	now      func() time.Time
	capacity int
	mu       sync.Mutex
	tokens   map[string]issued
	// order holds tokens in the order they were issued, which is the order
	// they expire in (the TTL is fixed); from head on. Entries already
	// redeemed are skipped when they reach the head.
	order []string
	head  int
}

type issued struct {
	target  transport.DeleteTarget
	expires time.Time
}

// Option configures a registry.
type Option func(*Registry)

// WithCapacity bounds the tokens remembered (default DefaultCapacity).
func WithCapacity(n int) Option {
	return func(r *Registry) {
		if n > 0 {
			r.capacity = n
		}
	}
}

// New returns an empty registry reading time from now (time.Now when nil).
func New(now func() time.Time, opts ...Option) *Registry {
	if now == nil {
		now = time.Now
	}
	r := &Registry{now: now, capacity: DefaultCapacity, tokens: make(map[string]issued)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Issue returns a new token for target. It forgets the expired tokens at
// the front of the queue and, when the registry is full, the oldest live
// one.
func (r *Registry) Issue(target transport.DeleteTarget) string {
	token, now := uuid.NewString(), r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetExpired(now)
	for len(r.order)-r.head >= r.capacity { // tokens issued within the TTL, redeemed or not
		delete(r.tokens, r.order[r.head])
		r.pop()
	}
	r.tokens[token] = issued{target: target, expires: now.Add(transport.DeleteTokenTTL)}
	r.order = append(r.order, token)
	return token
}

// forgetExpired drops tokens from the front of the queue while they are
// expired or already redeemed. Each token is pushed and popped once, so the
// work is constant per issued token.
func (r *Registry) forgetExpired(now time.Time) {
	for r.head < len(r.order) {
		tok := r.order[r.head]
		if it, ok := r.tokens[tok]; ok {
			if now.Before(it.expires) {
				break
			}
			delete(r.tokens, tok)
		}
		r.pop()
	}
}

// pop advances the head, and compacts the queue once half of it is spent.
func (r *Registry) pop() {
	r.order[r.head] = ""
	r.head++
	if r.head == len(r.order) {
		r.order, r.head = r.order[:0], 0
		return
	}
	if r.head > 1024 && r.head*2 > len(r.order) {
		n := copy(r.order, r.order[r.head:])
		clear(r.order[n:])
		r.order, r.head = r.order[:n], 0
	}
}

// Len returns the number of tokens held (live, or expired and not yet
// forgotten).
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tokens)
}

// Redeem reports whether token was issued for target and is still valid;
// a redeemed token is gone.
func (r *Registry) Redeem(target transport.DeleteTarget, token string) bool {
	_, ok := r.Take(target, token)
	return ok
}

// Take redeems token as Redeem does, and returns undo, which puts the token
// back as it was (same target, same expiry) for a delete that failed after
// the token was taken: a failed confirmation does not use the token up.
// undo is nil when ok is false.
func (r *Registry) Take(target transport.DeleteTarget, token string) (undo func(), ok bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	it, found := r.tokens[token]
	if !found || it.target != target || !now.Before(it.expires) {
		return nil, false
	}
	delete(r.tokens, token)
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		// Its place in the queue is kept (a redeemed token is skipped, not
		// removed), so it still expires in order; a full registry may
		// have dropped that place, and then the token stays gone.
		if r.stillQueued(token) {
			r.tokens[token] = it
		}
	}, true
}

// stillQueued reports whether token's place in the queue has not been
// dropped yet.
func (r *Registry) stillQueued(token string) bool {
	for i := r.head; i < len(r.order); i++ {
		if r.order[i] == token {
			return true
		}
	}
	return false
}
