package subscription

import (
	"context"
	"errors"
	"fmt"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/subscription/internal/runinfo"
	"github.com/sourced-go/sourced/transport"
)

// ErrStaleCheckpoint: Run found, as it started, that the feed no longer
// holds the entry its checkpoint stands on: the feed's head is below the
// checkpoint, or the entry at the checkpoint's sequence number is another
// one (another first event id). The store was reset or replaced (a server
// restarted on memory, a database restored from an older backup), and the
// read model holds what the feed does not. Run does not go on with a
// stale read model: it returns this error, or rebuilds with
// OnStale(Rebuild(clear)).
var ErrStaleCheckpoint = errors.New("subscription checkpoint is not in the feed (stale)")

// StalePolicy says what Run does with a stale checkpoint (see
// ErrStaleCheckpoint): FailStale() (the default) or Rebuild(clear).
type StalePolicy struct {
	clear func(ctx context.Context) error
}

// FailStale makes Run return an error wrapping ErrStaleCheckpoint when its
// checkpoint is stale (the default).
func FailStale() StalePolicy { return StalePolicy{} }

// Rebuild makes Run rebuild the read model when its checkpoint is stale:
// it calls clear, which must empty the read model (in a partitioned
// subscription, the partition's part of it: NameOf(ctx) names the
// partition; in a consumer group, check the partition's fence in clear's
// transaction, as pgcheckpoint's CheckFence does), then resets the
// checkpoint to 0 and handles the feed from its start. A failing clear is retried with the retry policy, checkpoint
// check included, and the checkpoint is reset only after clear succeeded.
func Rebuild(clear func(ctx context.Context) error) StalePolicy {
	return StalePolicy{clear: clear}
}

// OnStale sets what Run does when, as it starts, the feed no longer holds
// the entry its checkpoint stands on: FailStale() (the default) or
// Rebuild(clear).
func OnStale(p StalePolicy) Option { return func(s *Subscription) { s.stale = p } }

// loadCheckpoint returns the saved checkpoint, with its entry's event id
// when the store keeps it.
func (s *Subscription) loadCheckpoint(ctx context.Context) (Checkpoint, bool, error) {
	if ec, ok := s.cps.(EntryCheckpoints); ok {
		return ec.LoadCheckpoint(ctx, s.name)
	}
	seq, ok, err := s.cps.Load(ctx, s.name)
	return Checkpoint{Sequence: seq}, ok, err
}

// saveCheckpoint saves c, with its event id when the store keeps it.
func (s *Subscription) saveCheckpoint(ctx context.Context, c Checkpoint) error {
	if ec, ok := s.cps.(EntryCheckpoints); ok {
		return ec.SaveCheckpoint(ctx, s.name, c)
	}
	return s.cps.Save(ctx, s.name, c.Sequence)
}

// staleness returns why the feed no longer holds the entry c stands on,
// "" when it does (or cannot tell), and the feed's head. A checkpoint
// without an event id (saved by a store that does not keep it, by
// FromHead, or by a reset) is checked against the tenant's head only. An entry
// that is missing at c's sequence number (deleted with its aggregate) is
// not stale by itself: the feed's numbers are never reused.
func (s *Subscription) staleness(ctx context.Context, c Checkpoint) (string, int64, error) {
	if c.Sequence <= 0 {
		return "", 0, nil
	}
	scope := s.query.Feed
	if c.EventID == "" {
		// A checkpoint set by Reset (or FromHead) may stand on any number
		// of the tenant's feed, past the last entry of a type feed's type:
		// only the tenant's head tells that it is gone.
		scope.Type = transport.AllTypes
	}
	head, err := s.feed.FeedHead(ctx, scope)
	if err != nil {
		return "", 0, err
	}
	if head < c.Sequence {
		return fmt.Sprintf("the feed's head %d is below it", head), head, nil
	}
	if c.EventID == "" {
		return "", head, nil
	}
	q := s.query
	q.Since, q.Limit, q.Wait = c.Sequence-1, 1, 0
	page, err := s.feed.ReadFeed(ctx, q)
	if err != nil {
		return "", head, err
	}
	if len(page.Entries) == 0 || page.Entries[0].Sequence != c.Sequence {
		return "", head, nil // deleted since: numbers are never reused
	}
	if got := CheckpointOf(page.Entries[0]); got.EventID != c.EventID {
		return fmt.Sprintf("the feed's entry %d holds event %s (head %d)", c.Sequence, got.EventID, head), head, nil
	}
	return "", head, nil
}

// checkStale returns the position to start from: c's sequence number when
// the feed holds c's entry; 0 after a rebuild; an error wrapping
// ErrStaleCheckpoint (not retried) when it does not and the policy is
// FailStale.
func (s *Subscription) checkStale(ctx context.Context, c Checkpoint) (int64, error) {
	why, head, err := s.staleness(ctx, c)
	if err != nil || why == "" {
		return c.Sequence, err
	}
	feed := s.query.Feed.Type
	if s.query.Feed.Tenant != "" {
		feed = s.query.Feed.Tenant + "/" + feed
	}
	stale := fmt.Errorf("subscription %q: %w: checkpoint at sequence number %d (event %q) of feed %q, but %s; the store was reset or replaced: rebuild the read model (subscription.OnStale(subscription.Rebuild(...))) or reset the checkpoint (subscription.Reset)",
		s.name, ErrStaleCheckpoint, c.Sequence, c.EventID, feed, why)
	if s.stale.clear == nil {
		s.log.Error("subscription checkpoint is stale", zap.String("subscription", s.name), zap.Int64("checkpoint", c.Sequence),
			zap.String("event_id", c.EventID), zap.Int64("head", head), zap.Error(stale))
		return 0, backoff.Permanent(stale)
	}
	s.log.Warn("subscription checkpoint is stale: rebuilding the read model", zap.String("subscription", s.name),
		zap.Int64("checkpoint", c.Sequence), zap.String("event_id", c.EventID), zap.Int64("head", head), zap.String("why", why))
	rctx := runinfo.With(ctx, runinfo.Info{Name: s.name, Handlers: s.handlers(), Rebuilding: true})
	if err := recovered(func() error { return s.stale.clear(rctx) }); err != nil {
		return 0, fmt.Errorf("clearing the read model for a rebuild: %w", err)
	}
	if r, ok := s.cps.(Resetter); ok {
		err = r.ResetTo(rctx, 0, s.name)
	} else {
		err = s.cps.Save(rctx, s.name, 0)
		if seq, _, lerr := s.cps.Load(rctx, s.name); err == nil && (lerr != nil || seq != 0) {
			err = errors.Join(lerr, fmt.Errorf("%w: the checkpoint store (%T) kept %d on a save of 0 and is no Resetter", ErrReset, s.cps, seq))
			err = backoff.Permanent(err)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("resetting the checkpoint for a rebuild: %w", err)
	}
	return 0, nil
}
