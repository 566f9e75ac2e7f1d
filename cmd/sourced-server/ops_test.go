package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/faultinject"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
)

// value reads a gauge or a counter.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// switchable fails every call while down is set.
func switchable(down *atomic.Bool) *faultinject.Transport {
	return faultinject.Wrap(memory.New(), func(faultinject.Op) faultinject.Fault {
		if down.Load() {
			return faultinject.Fail(errors.New("connection refused"))
		}
		return faultinject.NoFault
	})
}

// TestOutageLogsChangesNotProbes: through an outage probed 30 times, the
// log says once at Error that the store is unreachable and once at Info
// that it is back; the gauge follows and the failures are counted.
func TestOutageLogsChangesNotProbes(t *testing.T) {
	var down atomic.Bool
	core, logs := observer.New(zapcore.DebugLevel)
	m := newOpsMetrics(prometheus.NewRegistry(), build{})
	mon := newStoreMonitor(switchable(&down), zap.New(core), m)
	ctx := context.Background()
	probes := func(n int) {
		for range n {
			_ = mon.probe(ctx)
		}
	}
	probes(5)
	assert.Equal(t, 1.0, value(m.reachable))
	down.Store(true)
	probes(30)
	assert.Equal(t, 0.0, value(m.reachable))
	down.Store(false)
	probes(5)
	down.Store(true)
	probes(10)
	down.Store(false)
	probes(5)
	assert.Equal(t, 1.0, value(m.reachable))
	assert.Equal(t, 40.0, value(m.probeFailures))
	assert.Equal(t, 2, logs.FilterMessageSnippet("store unreachable").FilterLevelExact(zapcore.ErrorLevel).Len())
	assert.Equal(t, 2, logs.FilterMessage("store reachable again").FilterLevelExact(zapcore.InfoLevel).Len())
	assert.Equal(t, 4, logs.Len(), "one line per change, none per probe")
	assert.Contains(t, logs.All()[0].ContextMap()["error"], "connection refused", "the cause is in the line")
}

// tooNew is a store whose schema check fails the way the postgres
// transport's does when the database was migrated past this binary.
type tooNew struct {
	*memory.Transport
	err atomic.Pointer[error]
}

func (s *tooNew) CheckSchema(context.Context) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// TestSchemaNewerThanBinaryNotReady: when the schema turns out newer than
// the binary while it runs, readiness says so, once in the log at Error.
func TestSchemaNewerThanBinaryNotReady(t *testing.T) {
	store := &tooNew{Transport: memory.New()}
	addr, logs, _, _ := startWith(t, hooks{open: func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		return store, func() {}, "schema-checked memory", nil
	}}, []string{"-addr", "127.0.0.1:0"}, nil)
	assert.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/readyz", "").status)
	err := errors.New("schema version 3 is newer than this binary knows (2)")
	store.err.Store(&err)
	// The probe's answer is reused for a second.
	require.Eventually(t, func() bool {
		return do("GET", "http://"+addr+"/readyz", "").status == http.StatusServiceUnavailable
	}, 10*time.Second, 50*time.Millisecond)
	for range 3 {
		a := do("GET", "http://"+addr+"/readyz", "")
		assert.Equal(t, http.StatusServiceUnavailable, a.status)
		assert.Contains(t, a.body, "schema newer than this binary")
	}
	metrics := do("GET", "http://"+addr+"/metrics", "").body
	assert.Contains(t, metrics, "sourced_store_schema_supported 0")
	assert.Equal(t, 1, strings.Count(logs.String(), "store schema is newer than this binary"), logs.String())
	assert.Contains(t, logs.String(), "schema version 3 is newer")
}

// TestBuildInfoAndStoreMetrics: the build and the store's state are
// metrics; the ready line names the version.
func TestBuildInfoAndStoreMetrics(t *testing.T) {
	addr, logs, _, _ := startWith(t, hooks{}, []string{"-addr", "127.0.0.1:0"}, nil)
	require.Equal(t, http.StatusOK, do("GET", "http://"+addr+"/readyz", "").status)
	body := do("GET", "http://"+addr+"/metrics", "").body
	assert.Regexp(t, `(?m)^sourced_build_info\{goversion="go[^"]+",revision="[^"]*",version="[^"]+"\} 1$`, body)
	assert.Regexp(t, `(?m)^sourced_store_reachable 1$`, body)
	assert.Regexp(t, `(?m)^sourced_store_schema_supported 1$`, body)
	assert.Regexp(t, `(?m)^sourced_trace_export_failures_total 0$`, body)
	assert.Regexp(t, `(?m)^sourced_feed_head 0$`, body)

	store := memory.New()
	for range 3 {
		require.NoError(t, store.Store(context.Background(), transport.Ref{Type: "order", ID: uuid.NewString()},
			[]transport.Event{{EventType: "OrderPlaced", Data: []byte(`{}`)}}, transport.MustNotExist))
	}
	m := newOpsMetrics(prometheus.NewRegistry(), build{})
	newStoreMonitor(store, zap.NewNop(), m).readFeedHead(context.Background())
	assert.Equal(t, 3.0, value(m.feedHead))
	assert.Regexp(t, `"msg":"sourced-server ready".*"version":"[^"]+","revision":"[^"]+"`, logs.String())
}

func TestVersion(t *testing.T) {
	out := &syncBuffer{}
	require.NoError(t, run(context.Background(), []string{"-version"}, env(nil), out, nil))
	assert.Regexp(t, `^sourced-server \S+, revision \S+`, out.String())

	b := buildOf(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "f5cbf24abc"}, {Key: "vcs.modified", Value: "true"}}})
	assert.Equal(t, build{Version: "v1.4.0", Revision: "f5cbf24abc", Modified: true, GoVersion: "go1.26.8"}, b)
	assert.Equal(t, "sourced-server v1.4.0, revision f5cbf24abc (modified), go1.26.8", b.String())
}

// TestHelpListsEnvironment: -h is no error, and names the variables.
func TestHelpListsEnvironment(t *testing.T) {
	out := &syncBuffer{}
	require.NoError(t, run(context.Background(), []string{"-h"}, env(nil), out, nil))
	for _, v := range []string{"SERIALIZED_ACCESS_KEY", "SERIALIZED_SECRET_ACCESS_KEY_FILE", "SOURCED_POSTGRES_URL", "SOURCED_TLS_CERT", "-shutdown-drain", "-store-wait", "-version"} {
		assert.Contains(t, out.String(), v)
	}
}

// TestStoreFailureLoggedAtError: a 503 because the store failed is logged
// at Error with its cause.
func TestStoreFailureLoggedAtError(t *testing.T) {
	store := faultinject.Wrap(memory.New(), func(op faultinject.Op) faultinject.Fault {
		if op == faultinject.OpStore {
			return faultinject.Fail(transport.ErrUnavailable)
		}
		return faultinject.NoFault
	})
	addr, logs, _, _ := startWith(t, hooks{open: func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		return store, func() {}, "failing memory", nil
	}}, []string{"-addr", "127.0.0.1:0"}, nil)
	a := do("POST", "http://"+addr+"/aggregates/order/"+uuid.NewString()+"/events", `{"events":[{"eventType":"OrderPlaced","data":{}}],"expectedVersion":0}`)
	require.NoError(t, a.err)
	assert.Equal(t, http.StatusServiceUnavailable, a.status)
	assert.Regexp(t, `\{"level":"error","ts":"[^"]+","msg":"store unavailable","method":"POST","path":"/aggregates/order/[^"]+","error":"[^"]*injected fault[^"]*"\}`, logs.String())
}

// TestUnsafeDefaultsWarn: keys in clear text beyond loopback, memory beyond
// loopback and metrics in plain HTTP beyond loopback each warn at start;
// on loopback nothing warns.
func TestUnsafeDefaultsWarn(t *testing.T) {
	keys := map[string]string{"SERIALIZED_ACCESS_KEY": "u-a", "SERIALIZED_SECRET_ACCESS_KEY": "u-s"}
	_, logs := start(t, []string{"-addr", "0.0.0.0:0", "-metrics-addr", "0.0.0.0:0"}, keys)
	out := logs.String()
	assert.Contains(t, out, `"level":"warn","ts"`)
	assert.Contains(t, out, "UNSAFE: keys travel in clear text")
	assert.Contains(t, out, "UNSAFE: events are kept in memory only")
	assert.Contains(t, out, "metrics are served in plain HTTP")

	certFile, keyFile, _ := selfSigned(t)
	_, logs = start(t, []string{"-addr", "0.0.0.0:0", "-tls-cert", certFile, "-tls-key", keyFile, "-data", t.TempDir() + "/e.db"}, keys)
	assert.NotContains(t, logs.String(), "UNSAFE", "TLS and a file: nothing unsafe")
	_, logs = start(t, []string{"-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"}, keys)
	assert.NotContains(t, logs.String(), "UNSAFE")
	assert.NotContains(t, logs.String(), "plain HTTP")
}

// TestLogsAreJSONWithISOTimes: the standard library's own errors (a
// failed TLS handshake) come through zap, and every line is JSON with an
// ISO-8601 time.
func TestLogsAreJSONWithISOTimes(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	addr, logs := start(t, []string{"-addr", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile}, nil)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, _ = conn.Write([]byte("this is not a TLS client hello\r\n\r\n"))
	_, _ = conn.Read(make([]byte, 64))
	conn.Close()
	// A proper client too, so the line above is not the only traffic.
	c := tls.Client(mustDial(t, addr), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test of the log, not of trust
	_ = c.Handshake()
	c.Close()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "TLS handshake error") }, 10*time.Second, 10*time.Millisecond)
	iso := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "not JSON: %s", line)
		assert.Regexp(t, iso, m["ts"], line)
		if strings.Contains(line, "TLS handshake error") {
			assert.Equal(t, "warn", m["level"])
		}
	}
}

func mustDial(t *testing.T, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	return c
}

// failingExporter fails every export.
type failingExporter struct{ tracetest.InMemoryExporter }

func (*failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("connection refused")
}

// TestTraceExportFailuresCounted: failed exports are counted, their spans
// counted as dropped, logged once at Warn, and once at Info when exports
// work again; nothing reaches OpenTelemetry's plain-text handler.
func TestTraceExportFailuresCounted(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	m := newOpsMetrics(prometheus.NewRegistry(), build{})
	failing := &countingExporter{SpanExporter: &failingExporter{}, log: zap.New(core), m: m}
	spans := tracetest.SpanStubs{{Name: "a"}, {Name: "b"}, {Name: "c"}}.Snapshots()
	for range 4 {
		require.NoError(t, failing.ExportSpans(context.Background(), spans))
	}
	assert.Equal(t, 4.0, value(m.exportFailures))
	assert.Equal(t, 12.0, value(m.spansDropped))
	failing.SpanExporter = tracetest.NewInMemoryExporter()
	require.NoError(t, failing.ExportSpans(context.Background(), spans))
	assert.Equal(t, 1, logs.FilterLevelExact(zapcore.WarnLevel).Len())
	assert.Equal(t, 1, logs.FilterMessage("trace export works again").Len())
	assert.Equal(t, int64(12), logs.FilterMessage("trace export works again").All()[0].ContextMap()["dropped_spans"])
}

// TestErrorsCannotFloodTheLog: a failure hit by every request logs its
// first lines and then a sample; request lines are all kept.
func TestErrorsCannotFloodTheLog(t *testing.T) {
	out := &syncBuffer{}
	log, err := newLogger("info", out)
	require.NoError(t, err)
	for range 1000 {
		log.Error("store unavailable", zap.String("path", "/aggregates/order/x"))
		log.Info("request", zap.Int("status", 503))
	}
	lines := out.String()
	assert.Equal(t, 1000, countLines(lines, `"msg":"request"`))
	n := countLines(lines, `"msg":"store unavailable"`)
	assert.GreaterOrEqual(t, n, 10)
	assert.LessOrEqual(t, n, 40, "sampled: the first 10 a second, then one in 100")
	_, err = newLogger("loud", out)
	assert.Error(t, err)
}

// probeOf is the readiness probe of a store, as run wires it.
func probeOf(backend transport.Transport) http.Handler {
	monitor := &atomic.Pointer[storeMonitor]{}
	monitor.Store(newStoreMonitor(backend, zap.NewNop(), newOpsMetrics(prometheus.NewRegistry(), build{})))
	return probe(monitor)
}

// TestAmbiguousStoreIsNotResent: a store whose outcome the store cannot
// tell (it went through, then the answer was lost) is answered 500, which
// the HTTP client reports as ErrAmbiguous instead of resending it; a 503
// made the client store the batch twice.
func TestAmbiguousStoreIsNotResent(t *testing.T) {
	inner := memory.New()
	var calls atomic.Int64
	store := faultinject.Wrap(inner, func(op faultinject.Op) faultinject.Fault {
		if op == faultinject.OpStore && calls.Add(1) == 1 {
			return faultinject.FailAfter(transport.ErrAmbiguous)
		}
		return faultinject.NoFault
	})
	addr, logs, _, _ := startWith(t, hooks{open: func(context.Context, config, *zap.Logger) (transport.Transport, func(), string, error) {
		return store, func() {}, "ambiguous memory", nil
	}}, []string{"-addr", "127.0.0.1:0"}, nil)
	client, err := serialized.New(serialized.WithBaseURL("http://" + addr))
	require.NoError(t, err)
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	err = client.Store(context.Background(), ref, []transport.Event{{EventType: "OrderPlaced", Data: []byte(`{}`)}}, transport.Any)
	require.ErrorIs(t, err, transport.ErrAmbiguous)
	page, err := inner.Load(context.Background(), ref, 0, 0)
	require.NoError(t, err)
	assert.Len(t, page.Events, 1, "stored once, not resent")
	assert.Contains(t, logs.String(), `"msg":"store outcome unknown"`)
}
