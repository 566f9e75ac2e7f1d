package console

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Sign-in throttling: each client address may fail freeTries times; after
// that every failure locks it out for a time that doubles with each
// further failure, from lockBase up to lockMax. A success clears the
// address. At most maxTracked addresses are remembered.
//
// An attempt is counted when it starts, before its keys are checked, so
// sign-ins sent all at once cannot pass the lockout check together: the
// attempt after the free ones is locked out however many run at the same
// time. An IPv6 client counts by its /64 (one host usually holds a whole
// /64), an IPv4 one by its address.
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

// throttleKey is what addr counts under: an IPv6 address's /64, any other
// address as it is.
func throttleKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// attempt counts a sign-in from addr as it starts. It returns how long
// addr must still wait (and then the attempt is not counted), or 0 with
// the attempts counted so far and the lockout addr serves if this one
// fails.
func (t *throttle) attempt(addr string, now time.Time) (wait time.Duration, count int, lock time.Duration) {
	key := throttleKey(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.addrs[key]
	if ok && now.Before(f.until) {
		return f.until.Sub(now), f.count, 0
	}
	if !ok {
		if len(t.addrs) >= maxTracked {
			t.prune(now)
		}
		f = &failures{}
		t.addrs[key] = f
	}
	f.count++
	f.last = now
	if f.count <= freeTries {
		return 0, f.count, 0
	}
	lock = lockMax
	if n := f.count - freeTries - 1; n < 20 {
		lock = min(lockBase<<n, lockMax)
	}
	f.until = now.Add(lock)
	return 0, f.count, lock
}

// succeed forgets addr's failures.
func (t *throttle) succeed(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.addrs, throttleKey(addr))
}

// prune makes room: it drops the addresses that are not locked out and
// have not failed for lockMax; if that frees nothing, every address not
// locked out; and if all are locked out, the tenth whose lockouts end
// first. A locked-out address is never forgotten while others can be, so
// failing from many addresses does not lift a lockout.
func (t *throttle) prune(now time.Time) {
	for a, f := range t.addrs {
		if !now.Before(f.until) && now.Sub(f.last) >= lockMax {
			delete(t.addrs, a)
		}
	}
	if len(t.addrs) < maxTracked {
		return
	}
	for a, f := range t.addrs {
		if !now.Before(f.until) {
			delete(t.addrs, a)
		}
	}
	if len(t.addrs) < maxTracked {
		return
	}
	// All locked out: drop the tenth that are freed soonest.
	ends := make([]time.Time, 0, len(t.addrs))
	for _, f := range t.addrs {
		ends = append(ends, f.until)
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	cut := ends[len(ends)/10]
	for a, f := range t.addrs {
		if !f.until.After(cut) {
			delete(t.addrs, a)
		}
	}
}
