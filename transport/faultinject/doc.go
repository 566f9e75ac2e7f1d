// Package faultinject makes a store misbehave on purpose, so that tests can
// prove nothing is lost or doubled when the network and the server fail.
//
// Two wrappers share one vocabulary:
//
//   - Wrap puts a fault-injecting layer around any transport.Transport:
//     errors before the call (a 409 storm, 429, 503), delays, and errors
//     after the call went through (the store happened, the caller hears a
//     failure: the ambiguous case), and calls that land later than their
//     answer (LandLater: the caller hears a failure at once and the call
//     is made just before a later call passes, as a request that hung does
//     when it lands after the client checked or retried).
//   - NewRoundTripper does the same one level lower, around an
//     http.RoundTripper: canned 429/5xx responses, a refused connection
//     before anything is sent, a timeout after the request went out, a
//     request that times out and lands later, a connection reset in the
//     middle of a response body, delays.
//
// Which call gets which fault is decided by a Policy. Random draws faults
// from a seeded source, so a failing run can be replayed with the same seed;
// Sequence scripts faults call by call. Both wrappers count what they
// injected (Stats), so a test can report and assert on it.
//
// Use them in your own tests:
//
//	store := faultinject.Wrap(memory.New(), faultinject.Random(42, 0.2,
//		faultinject.Fail(transport.ErrConflict),
//		faultinject.FailAfter(transport.ErrAmbiguous)))
//
// Experimental: this package is outside the compatibility promise (see
// README, "Compatibility"); its API may change in any minor version.
package faultinject
