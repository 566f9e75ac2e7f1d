package console

import (
	"sync"
	"time"
)

// Sign-in throttling: each client address may fail freeTries times; after
// that every failure locks it out for a time that doubles with each
// further failure, from lockBase up to lockMax. A success clears the
// address. At most maxTracked addresses are remembered.
const (
	freeTries  = 5
	lockBase   = time.Second
	lockMax    = 15 * time.Minute
	maxTracked = 10_000
)

type failures struct {
	count int
	until time.Time // locked out until then
	last  time.Time
}

// throttle remembers failed sign-ins per client address.
type throttle struct {
	mu    sync.Mutex
	addrs map[string]*failures
}

func newThrottle() *throttle { return &throttle{addrs: map[string]*failures{}} }

// locked returns how long addr must still wait, or 0.
func (t *throttle) locked(addr string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.addrs[addr]
	if !ok || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// fail counts a failed sign-in from addr and returns the failures so far
// and the lockout it now serves (0 while it has tries left).
func (t *throttle) fail(addr string, now time.Time) (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.addrs[addr]
	if !ok {
		if len(t.addrs) >= maxTracked {
			t.prune(now)
		}
		f = &failures{}
		t.addrs[addr] = f
	}
	f.count++
	f.last = now
	if f.count <= freeTries {
		return f.count, 0
	}
	lock := lockMax
	if n := f.count - freeTries - 1; n < 20 {
		lock = min(lockBase<<n, lockMax)
	}
	f.until = now.Add(lock)
	return f.count, lock
}

// succeed forgets addr's failures.
func (t *throttle) succeed(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.addrs, addr)
}

// prune drops addresses that are not locked out and have not failed for
// lockMax; if that frees nothing, it starts over, so the map stays bounded
// whatever the number of addresses trying.
func (t *throttle) prune(now time.Time) {
	for a, f := range t.addrs {
		if !now.Before(f.until) && now.Sub(f.last) >= lockMax {
			delete(t.addrs, a)
		}
	}
	if len(t.addrs) >= maxTracked {
		clear(t.addrs)
	}
}
