// Package retry runs an operation under a backoff/v4 policy that is built
// only when it is needed. Most calls succeed at the first attempt; they
// should not pay for a policy, its clock reads, its timer and the closures
// around them on every call of a hot path.
package retry

import (
	"context"
	"errors"

	"github.com/cenkalti/backoff/v4"
)

// Run calls op once. When that fails with an error that op did not mark
// backoff.Permanent, Run builds the policy with newPolicy and hands the rest
// to backoff.RetryNotify, which sees that first error as its own first
// attempt: it notifies, waits and calls op again exactly as it would have
// had it made the first call itself. A permanent error is returned
// unwrapped, as backoff returns it.
func Run(ctx context.Context, op backoff.Operation, newPolicy func() backoff.BackOff, notify backoff.Notify) error {
	first := op()
	if first == nil {
		return nil
	}
	var permanent *backoff.PermanentError
	if errors.As(first, &permanent) {
		return permanent.Err
	}
	replay := func() error {
		if err := first; err != nil {
			first = nil
			return err
		}
		return op()
	}
	return backoff.RetryNotify(replay, backoff.WithContext(newPolicy(), ctx), notify)
}
