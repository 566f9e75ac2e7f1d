package main

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// opsMetrics are the metrics that alerts on the process and its store need,
// beside the request metrics of metrics.go.
type opsMetrics struct {
	buildInfo      *prometheus.GaugeVec
	reachable      prometheus.Gauge
	probeFailures  prometheus.Counter
	schemaOK       prometheus.Gauge
	schemaVersion  prometheus.Gauge
	exportFailures prometheus.Counter
	spansDropped   prometheus.Counter
	refused        *prometheus.CounterVec
	feedHead       prometheus.Gauge
}

// newOpsMetrics makes the metrics and registers them on reg.
func newOpsMetrics(reg prometheus.Registerer, b build) *opsMetrics {
	m := &opsMetrics{
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sourced_build_info",
			Help: "Always 1; the labels say which build runs: module version, VCS revision, Go version."},
			[]string{"version", "revision", "goversion"}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_store_reachable",
			Help: "1 when the store answered the last probe (every 10 s and on each /readyz), 0 when it did not."}),
		probeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_store_probe_failures_total",
			Help: "Store probes that failed (the store did not answer, or its schema is newer than this binary)."}),
		schemaOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_store_schema_supported",
			Help: "0 when the database's schema is newer than this binary knows (stop this instance or upgrade it), 1 otherwise."}),
		schemaVersion: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_schema_version",
			Help: "The newest migration applied to the PostgreSQL schema (PostgreSQL only; 0 until read)."}),
		exportFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_trace_export_failures_total",
			Help: "Trace exports (batches of spans) that failed; their spans are dropped."}),
		spansDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "sourced_trace_spans_dropped_total",
			Help: "Spans dropped because their export failed."}),
		feedHead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sourced_feed_head",
			Help: "The default tenant's feed head (the _all feed's newest sequence number), read every 10 s: stores without it rising mean the feed is stuck."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sourced_http_refused_total",
			Help: "API requests answered 503 with Retry-After because the server was starting (store not open) or stopping."}, []string{"phase"}),
	}
	rev := b.Revision
	if b.Modified {
		rev += "-modified"
	}
	m.buildInfo.WithLabelValues(b.Version, rev, b.GoVersion).Set(1)
	m.schemaOK.Set(1)
	reg.MustRegister(m.buildInfo, m.reachable, m.probeFailures, m.schemaOK, m.exportFailures, m.spansDropped, m.refused, m.feedHead)
	return m
}

// pooled is a store with a PostgreSQL connection pool (the postgres
// transport).
type pooled interface{ Pool() *pgxpool.Pool }

// registerStore adds the metrics of the store's own: the schema version and
// the connection pool's statistics, when the store is PostgreSQL.
func (m *opsMetrics) registerStore(reg prometheus.Registerer, backend any) {
	p, ok := backend.(pooled)
	if !ok {
		return
	}
	reg.MustRegister(m.schemaVersion, &poolCollector{pool: p.Pool()})
	if f, ok := backend.(sequencerFailures); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sourced_pg_sequencer_failures_total",
			Help: "Background feed-numbering runs that failed (each is retried with backoff); rising while the feed head stands still is an outage.",
		}, func() float64 { return float64(f.SequencerFailures()) }))
	}
}

// sequencerFailures is a store whose background feed sequencer counts its
// failed runs (the postgres transport).
type sequencerFailures interface{ SequencerFailures() int64 }

// poolCollector reports pgxpool's statistics at each scrape.
type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolAcquired    = poolDesc("sourced_pg_pool_acquired_conns", "Connections in use.")
	poolIdle        = poolDesc("sourced_pg_pool_idle_conns", "Idle connections.")
	poolTotal       = poolDesc("sourced_pg_pool_total_conns", "Connections open or being opened.")
	poolConstruct   = poolDesc("sourced_pg_pool_constructing_conns", "Connections being opened.")
	poolMax         = poolDesc("sourced_pg_pool_max_conns", "The pool's size (pool_max_conns).")
	poolAcquires    = poolDesc("sourced_pg_pool_acquires_total", "Connections handed out.")
	poolWaited      = poolDesc("sourced_pg_pool_empty_acquires_total", "Acquires that had to wait for a connection: a pool too small, or a slow database.")
	poolCanceled    = poolDesc("sourced_pg_pool_canceled_acquires_total", "Acquires given up because their context ended.")
	poolWaitSeconds = poolDesc("sourced_pg_pool_acquire_seconds_total", "Time spent acquiring connections.")
	poolNew         = poolDesc("sourced_pg_pool_new_conns_total", "Connections opened.")
)

func poolDesc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolAcquired, poolIdle, poolTotal, poolConstruct, poolMax,
		poolAcquires, poolWaited, poolCanceled, poolWaitSeconds, poolNew} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(poolAcquired, float64(s.AcquiredConns()))
	gauge(poolIdle, float64(s.IdleConns()))
	gauge(poolTotal, float64(s.TotalConns()))
	gauge(poolConstruct, float64(s.ConstructingConns()))
	gauge(poolMax, float64(s.MaxConns()))
	counter(poolAcquires, float64(s.AcquireCount()))
	counter(poolWaited, float64(s.EmptyAcquireCount()))
	counter(poolCanceled, float64(s.CanceledAcquireCount()))
	counter(poolWaitSeconds, s.AcquireDuration().Seconds())
	counter(poolNew, float64(s.NewConnsCount()))
}
