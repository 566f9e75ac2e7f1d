package subscription

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// PageOption configures a page handler (OnPage).
type PageOption func(*pageHandler)

// WritesCheckpoint says that the page handler writes the subscription's
// checkpoint itself, at the last entry of each slice it applies, in the
// transaction that applies them (as package subscription/projection
// does): Run then writes none after such a page. Run still saves the
// checkpoint past an entry that was parked, since the handler never saw
// it through.
func WritesCheckpoint() PageOption { return func(p *pageHandler) { p.writesCheckpoint = true } }

type pageHandler struct {
	fn               func(ctx context.Context, entries []transport.FeedEntry) error
	writesCheckpoint bool
}

// OnPage registers a handler for whole pages of entries (each read of the
// feed): h applies all of entries or none of them, typically in one
// transaction of a read model with its checkpoint, so that catching up
// costs one commit per page rather than one per entry. Entries reach h
// upcast (Upcast).
//
// When h fails (or panics) on a page, Run falls back to one entry at a
// time: it calls h with a one-entry slice for each entry of the page, in
// order, under the retry policy, and an entry that still fails is parked
// or stops the subscription (OnFailure), as with other handlers. An entry
// whose upcast fails takes that path too. So a failure never applies half
// a page and never skips an entry: h must leave nothing behind when it
// fails.
//
// A page handler must be the subscription's only handler: Run refuses
// any other set-up with ErrSetup (when another handler failed, the
// checkpoint would already be past its entry).
func (s *Subscription) OnPage(h func(ctx context.Context, entries []transport.FeedEntry) error, opts ...PageOption) {
	if h == nil {
		panic("subscription: nil page handler")
	}
	s.mustNotRun()
	p := pageHandler{fn: h}
	for _, o := range opts {
		if o != nil {
			o(&p)
		}
	}
	s.pages = append(s.pages, p)
}

// checkPages refuses a page handler beside any other handler.
func (s *Subscription) checkPages() error {
	if len(s.pages) == 0 || s.handlers() == 1 {
		return nil
	}
	return fmt.Errorf("subscription %q: %w: a page handler (OnPage) must be the subscription's only handler (it has %d): when another one failed, the checkpoint would already be past its entry; give the other handlers a subscription of their own",
		s.name, ErrSetup, s.handlers())
}

// handlePage gives entries to the page handler in one call; when that
// fails, one entry at a time (handlePageEntries). last stands on the last
// entry handled or parked (zero when none was), written is the sequence
// number of the last one whose checkpoint the handler wrote itself (0
// when none).
func (s *Subscription) handlePage(ctx context.Context, entries []transport.FeedEntry) (last Checkpoint, written int64, _ error) {
	if len(entries) == 0 {
		return Checkpoint{}, 0, nil
	}
	p := s.pages[0]
	page, ok := s.upcastPage(entries)
	if ok {
		err := recovered(func() error { return p.fn(ctx, page) })
		if err == nil {
			last = CheckpointOf(entries[len(entries)-1])
			if p.writesCheckpoint {
				written = last.Sequence
			}
			return last, written, nil
		}
		if ctx.Err() != nil {
			s.log.Info("subscription page handler stopped by Close; the page will be delivered again", zap.String("subscription", s.name),
				zap.Int64("from", entries[0].Sequence), zap.Error(err))
			return Checkpoint{}, 0, errAborted
		}
		s.log.Warn("subscription page failed, applying it one entry at a time", zap.String("subscription", s.name),
			zap.Int64("from", entries[0].Sequence), zap.Int64("to", entries[len(entries)-1].Sequence), zap.Error(err))
	}
	return s.handlePageEntries(ctx, p, entries)
}

// handlePageEntries calls the page handler with one entry at a time, each
// with the retry policy, then the failure policy.
func (s *Subscription) handlePageEntries(ctx context.Context, p pageHandler, entries []transport.FeedEntry) (last Checkpoint, written int64, _ error) {
	for i := range entries {
		e := &entries[i]
		cur, parked, err := s.upcastEntry(ctx, e)
		if err != nil {
			return last, written, err
		}
		if !parked {
			one := []transport.FeedEntry{*cur}
			parked, err = s.call(ctx, e, envelope(s.query.Feed.Tenant, e, nil), func() error { return p.fn(ctx, one) })
			if err != nil {
				return last, written, err
			}
			if !parked && p.writesCheckpoint {
				written = e.Sequence
			}
		}
		last = CheckpointOf(*e)
	}
	return last, written, nil
}

// upcastPage returns entries upcast, the same slice when no entry needs
// it, and false when an upcast fails (the entries then go one at a time,
// where the failing one is retried and parked or stops the subscription).
func (s *Subscription) upcastPage(entries []transport.FeedEntry) ([]transport.FeedEntry, bool) {
	if len(s.upcast) == 0 {
		return entries, true
	}
	var out []transport.FeedEntry
	for i := range entries {
		e := &entries[i]
		up := s.upcast[e.AggregateType]
		if up == nil || len(e.Events) == 0 {
			continue
		}
		if out == nil {
			out = make([]transport.FeedEntry, len(entries))
			copy(out, entries)
		}
		cur, err := upcastCopy(up, e)
		if err != nil {
			return nil, false
		}
		out[i] = *cur
	}
	if out == nil {
		return entries, true
	}
	return out, true
}
