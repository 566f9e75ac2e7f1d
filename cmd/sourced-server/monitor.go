package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/transport"
)

// probeTimeout bounds one probe of the store; probeEvery is how often the
// server probes it when nothing asks /readyz.
const (
	probeTimeout = 2 * time.Second
	probeEvery   = 10 * time.Second
)

// probeRef is what a probe asks the store about: an aggregate that never
// exists.
var probeRef = transport.Ref{Type: "readiness-probe", ID: "00000000-0000-0000-0000-000000000000"}

// schemaChecker is a store that can tell whether the database's schema is
// still one this binary knows (the postgres transport's CheckSchema: an
// error wrapping postgres.ErrSchemaTooNew when it is newer).
type schemaChecker interface {
	CheckSchema(ctx context.Context) error
}

// schemaNamer is a store whose tables live in a named PostgreSQL schema.
type schemaNamer interface {
	pooled
	Schema() string
}

// storeHealth is what the last probe found.
type storeHealth int

const (
	healthUnknown storeHealth = iota
	healthUp
	healthDown
	healthSchemaTooNew
)

// errSchemaNotSupported is what a probe reports when the store answers but
// its schema check fails.
var errSchemaNotSupported = errors.New("the database's schema is not one this binary knows (newer?)")

// storeMonitor probes the store, keeps the reachable gauge, and logs
// changes, not probes: once at Error when the store stops answering (or its
// schema turns out newer than this binary), once at Info when it is back.
type storeMonitor struct {
	backend transport.Transport
	log     *zap.Logger
	m       *opsMetrics

	mu    sync.Mutex
	state storeHealth
	since time.Time
	fails int
}

func newStoreMonitor(backend transport.Transport, log *zap.Logger, m *opsMetrics) *storeMonitor {
	return &storeMonitor{backend: backend, log: log, m: m}
}

// probe asks the store whether it answers, records the answer and returns
// the error that makes the server not ready (nil when ready). A probe cut
// short by ctx (the caller went away) records nothing.
func (s *storeMonitor) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	health, err := healthUp, error(nil)
	if _, err = s.backend.Exists(pctx, probeRef); err != nil {
		health = healthDown
	} else if sc, ok := s.backend.(schemaChecker); ok {
		if serr := sc.CheckSchema(pctx); serr != nil && (unreachable(serr) || pctx.Err() != nil) {
			health, err = healthDown, serr
		} else if serr != nil {
			health, err = healthSchemaTooNew, errors.Join(errSchemaNotSupported, serr)
		}
	}
	if ctx.Err() != nil {
		return err
	}
	s.record(health, err)
	return err
}

// record keeps what a probe found and logs a change.
func (s *storeMonitor) record(health storeHealth, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	if health == healthUp {
		s.m.reachable.Set(1)
		s.m.schemaOK.Set(1)
	} else {
		s.m.probeFailures.Inc()
		s.fails++
		s.m.reachable.Set(boolGauge(health == healthSchemaTooNew))
		s.m.schemaOK.Set(boolGauge(health != healthSchemaTooNew))
	}
	if health == prev {
		return
	}
	now := time.Now()
	switch {
	case health == healthDown:
		s.log.Error("store unreachable: not ready until it answers; further failures are counted in sourced_store_probe_failures_total, not logged",
			zap.Error(err))
	case health == healthSchemaTooNew:
		s.log.Error("store schema is newer than this binary knows: not ready; stop this instance or upgrade it",
			zap.Error(err))
	case prev == healthDown || prev == healthSchemaTooNew:
		s.log.Info("store reachable again", zap.Duration("after", now.Sub(s.since)), zap.Int("failed_probes", s.fails))
	}
	if health == healthUp {
		s.fails = 0
	}
	s.state, s.since = health, now
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readSchemaVersion sets sourced_schema_version from the database, when the
// store is PostgreSQL.
func (s *storeMonitor) readSchemaVersion(ctx context.Context) {
	sn, ok := s.backend.(schemaNamer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var v int64
	table := pgx.Identifier{sn.Schema(), "schema_migrations"}.Sanitize()
	if err := sn.Pool().QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+table).Scan(&v); err == nil {
		s.m.schemaVersion.Set(float64(v))
	}
}

// readFeedHead sets sourced_feed_head from the default tenant's _all feed.
func (s *storeMonitor) readFeedHead(ctx context.Context) {
	f, ok := s.backend.(transport.Feeder)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if head, err := f.FeedHead(ctx, transport.Scope{Type: transport.AllTypes}); err == nil {
		s.m.feedHead.Set(float64(head))
	}
}

// watch probes every interval until ctx ends, so the gauge and the logs
// follow the store even when nothing asks /readyz.
func (s *storeMonitor) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if s.probe(ctx) == nil {
			s.readSchemaVersion(ctx)
			s.readFeedHead(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
