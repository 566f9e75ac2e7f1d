package localserver

import (
	"context"

	"github.com/sourced-go/sourced/transport"
)

// WithDrain makes feed reads that wait (waitTime > 0) answer once drain is
// closed, with what the feed holds then (often an empty page, a valid
// answer), instead of holding a server's shutdown for their whole wait;
// reads that arrive after it closed do not wait.
func WithDrain(drain <-chan struct{}) Option {
	return func(h *handler) { h.drain = drain }
}

// readFeedPage reads a feed page, cutting its wait short when the handler
// drains.
func (h *handler) readFeedPage(ctx context.Context, f transport.Feeder, q transport.FeedQuery) (transport.FeedPage, error) {
	if q.Wait <= 0 || h.drain == nil {
		return f.ReadFeed(ctx, q)
	}
	select {
	case <-h.drain:
		q.Wait = 0
		return f.ReadFeed(ctx, q)
	default:
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.drain:
			cancel()
		case <-wctx.Done():
		}
	}()
	page, err := f.ReadFeed(wctx, q)
	if wctx.Err() == nil || ctx.Err() != nil || (err == nil && len(page.Entries) > 0) {
		return page, err
	}
	// Drained during the wait: answer with what is there now.
	q.Wait = 0
	return f.ReadFeed(ctx, q)
}
