package transport

import "strconv"

// ExpectedVersion is the optimistic concurrency check of a Store. Its zero
// value is Any (no check). Exactly(0) means "the aggregate must not exist
// yet", Exactly(n) means "the current version must be n".
type ExpectedVersion struct {
	n   int64
	set bool
}

// Any performs no concurrency check.
var Any = ExpectedVersion{}

// MustNotExist requires that the aggregate has no stored batch yet.
var MustNotExist = ExpectedVersion{n: 0, set: true}

// Exactly requires the current version to be n. A negative n is reported as
// invalid by Check and by every transport.
func Exactly(n int64) ExpectedVersion { return ExpectedVersion{n: n, set: true} }

// IsAny reports whether no check is asked for.
func (e ExpectedVersion) IsAny() bool { return !e.set }

// Value returns the expected version and true, or 0 and false for Any.
func (e ExpectedVersion) Value() (int64, bool) { return e.n, e.set }

// Valid reports whether the expected version is Any or not negative.
func (e ExpectedVersion) Valid() bool { return !e.set || e.n >= 0 }

// Check reports whether a store against current satisfies e.
func (e ExpectedVersion) Check(current int64) bool { return !e.set || e.n == current }

// String returns "any" or the number.
func (e ExpectedVersion) String() string {
	if !e.set {
		return "any"
	}
	return strconv.FormatInt(e.n, 10)
}
