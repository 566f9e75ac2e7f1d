package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/internal/retry"
)

var errFlaky = errors.New("flaky")

func zero(max uint64) func() backoff.BackOff {
	return func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, max) }
}

func TestFirstSuccessBuildsNoPolicy(t *testing.T) {
	calls := 0
	err := retry.Run(context.Background(), func() error { calls++; return nil },
		func() backoff.BackOff { t.Fatal("policy built for a call that needed none"); return nil }, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, calls)
}

func TestRetriesUntilSuccessAndNotifiesEachFailure(t *testing.T) {
	calls, notified := 0, 0
	err := retry.Run(context.Background(), func() error {
		calls++
		if calls < 3 {
			return errFlaky
		}
		return nil
	}, zero(5), func(err error, _ time.Duration) {
		notified++
		assert.ErrorIs(t, err, errFlaky)
	})
	require.NoError(t, err)
	assert.Equal(t, 3, calls)
	assert.Equal(t, 2, notified, "one notice per failed attempt, the first included")
}

func TestMaxRetriesCountsTheFirstAttempt(t *testing.T) {
	calls := 0
	err := retry.Run(context.Background(), func() error { calls++; return errFlaky }, zero(2), nil)
	assert.ErrorIs(t, err, errFlaky)
	assert.Equal(t, 3, calls, "the first attempt and two retries, as backoff.Retry would make")
}

func TestPermanentStopsAndUnwraps(t *testing.T) {
	for _, failOn := range []int{1, 2} {
		calls := 0
		err := retry.Run(context.Background(), func() error {
			calls++
			if calls == failOn {
				return backoff.Permanent(errFlaky)
			}
			return errors.New("transient")
		}, zero(5), nil)
		assert.Same(t, errFlaky, err, "failing on attempt %d", failOn)
		assert.Equal(t, failOn, calls)
	}
}

func TestEndedContextStopsBeforeTheSecondAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry.Run(ctx, func() error { calls++; cancel(); return errFlaky }, zero(5), nil)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, calls)
}
