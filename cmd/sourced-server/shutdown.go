package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// phase is where the server is in its life.
type phase int32

const (
	// starting: listening, the store not open yet. Health answers,
	// readiness and the API answer 503.
	starting phase = iota
	// serving: the API is up.
	serving
	// draining: a stop was asked for. Readiness answers 503 so that load
	// balancers stop sending; requests are still served.
	draining
	// stopping: no new request starts (503 with Retry-After), waiting
	// feed reads answer at once, requests under way finish or are
	// cancelled.
	stopping
)

// lifecycle is the server's phase, shared by the handlers and the shutdown.
type lifecycle struct {
	phase    atomic.Int32
	api      atomic.Pointer[http.Handler]
	inflight atomic.Int64

	// drain is closed when stopping begins: the API's waiting feed reads
	// answer then (localserver.WithDrain).
	drain     chan struct{}
	drainOnce sync.Once

	// base is the context of every request; cancelled at the end of the
	// grace, it stops the work of requests still under way.
	base   context.Context
	cancel context.CancelFunc
}

func newLifecycle() *lifecycle {
	l := &lifecycle{drain: make(chan struct{})}
	l.base, l.cancel = context.WithCancel(context.Background())
	return l
}

func (l *lifecycle) current() phase { return phase(l.phase.Load()) }

// serve installs the API once the store is open.
func (l *lifecycle) serve(api http.Handler) {
	l.api.Store(&api)
	l.phase.CompareAndSwap(int32(starting), int32(serving))
}

// beginDrain turns readiness off.
func (l *lifecycle) beginDrain() { l.phase.Store(int32(draining)) }

// beginStop refuses new requests and releases waiting feed reads.
func (l *lifecycle) beginStop() {
	l.phase.Store(int32(stopping))
	l.drainOnce.Do(func() { close(l.drain) })
}

// retryAfter is the Retry-After of a 503 while starting or stopping: by then
// another instance (or this one, started) can take the request.
const retryAfter = "1"

// gate serves the API while serving or draining, and answers 503 with
// Retry-After before the store is open and once stopping began: no new
// write starts after that. It counts requests under way, and in refused
// those it turned away, by phase.
func (l *lifecycle) gate(refused *prometheus.CounterVec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.inflight.Add(1)
		defer l.inflight.Add(-1)
		api := l.api.Load()
		msg, reason := "", ""
		switch p := l.current(); {
		case p == stopping:
			msg, reason = "server shutting down", "stopping"
		case p == starting || api == nil:
			msg, reason = "server starting: the store is not open yet", "starting"
		}
		if msg != "" {
			refused.WithLabelValues(reason).Inc()
			w.Header().Set("Retry-After", retryAfter)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"code":503,"message":%q}`, msg)
			return
		}
		(*api).ServeHTTP(w, r)
	})
}

// cancelWindow is how much of the grace is kept for requests to answer
// after their work was cancelled: a quarter, at most two seconds.
func cancelWindow(grace time.Duration) time.Duration { return min(grace/4, 2*time.Second) }

// shutdown stops the servers within grace, counted from began: readiness
// off for drain while requests are still served, then no new request, the
// waiting feed reads answered, and the requests under way given until the
// last cancelWindow of the grace to finish; then their contexts are
// cancelled (a write not yet sent to the store is not sent) and they have
// the rest of the grace to answer. It returns an error only when requests
// were still running at the end of the grace.
func shutdown(l *lifecycle, servers []*server, began time.Time, grace, drain time.Duration, log *zap.Logger) error {
	deadline := began.Add(grace)
	l.beginDrain()
	log.Info("shutting down", zap.Duration("grace", grace), zap.Duration("drain", drain))
	if drain > 0 {
		for _, s := range servers {
			// Responses say Connection: close, so clients reconnect
			// through the load balancer to another instance.
			s.srv.SetKeepAlivesEnabled(false)
		}
		t := time.NewTimer(time.Until(began.Add(drain)))
		<-t.C
	}
	l.beginStop()
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-cancelWindow(grace)))
	err := shutdownAll(ctx, servers)
	cancel()
	if err == nil {
		return nil
	}
	log.Warn("requests still under way near the end of the grace: cancelling them",
		zap.Int64("requests", l.inflight.Load()), zap.Duration("grace", grace))
	l.cancel()
	ctx, cancel = context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err = shutdownAll(ctx, servers)
	if err == nil {
		return nil
	}
	// Connections still open at the deadline are closed. With every handler
	// returned, their answers were written (an HTTP/2 connection lingers a
	// second after its GOAWAY): a clean stop all the same.
	n := l.inflight.Load()
	for _, s := range servers {
		s.close()
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d requests still running at the end of -shutdown-grace %s, cut off: %w", n, grace, err)
}

// shutdownAll shuts the servers down together.
func shutdownAll(ctx context.Context, servers []*server) error {
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			if err := s.shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
