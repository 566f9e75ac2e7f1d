// Package deletetoken keeps the tokens of the two-step delete for
// transports that run in the process (memory, bolt, or yours): a token is
// issued for one target, is valid for transport.DeleteTokenTTL, and can be
// redeemed once, for that target only.
package deletetoken

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/transport"
)

// Registry holds issued tokens. It is safe for concurrent use; the zero
// value is not usable, call New.
type Registry struct {
	now    func() time.Time
	mu     sync.Mutex
	tokens map[string]issued
}

type issued struct {
	target  transport.DeleteTarget
	expires time.Time
}

// New returns an empty registry reading time from now (time.Now when nil).
func New(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, tokens: make(map[string]issued)}
}

// Issue returns a new token for target, and forgets expired ones.
func (r *Registry) Issue(target transport.DeleteTarget) string {
	token, now := uuid.NewString(), r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, it := range r.tokens {
		if !now.Before(it.expires) {
			delete(r.tokens, k)
		}
	}
	r.tokens[token] = issued{target: target, expires: now.Add(transport.DeleteTokenTTL)}
	return token
}

// Redeem reports whether token was issued for target and is still valid;
// a redeemed token is gone.
func (r *Registry) Redeem(target transport.DeleteTarget, token string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	it, ok := r.tokens[token]
	if !ok || it.target != target || !now.Before(it.expires) {
		return false
	}
	delete(r.tokens, token)
	return true
}
