// Command sourced-server runs a server that speaks the Serialized
// Aggregates API, for development and CI where the hosted service is out of
// reach, and for self-hosting on PostgreSQL.
//
//	SERIALIZED_ACCESS_KEY=dev SERIALIZED_SECRET_ACCESS_KEY=dev \
//		go run ./cmd/sourced-server -addr 127.0.0.1:8080
//
// The keys come from the same variables the HTTP transport reads (or from
// files named by SERIALIZED_ACCESS_KEY_FILE and
// SERIALIZED_SECRET_ACCESS_KEY_FILE), so one export serves both. They are
// never printed. Without keys the server serves loopback only; to listen
// elsewhere without keys, say so with -insecure-no-keys.
//
// Events live in memory unless -data names a bbolt file or -postgres (or
// SOURCED_POSTGRES_URL) a PostgreSQL database, which several servers and
// app instances can share. -tls-cert and -tls-key serve HTTPS;
// -otlp-endpoint exports traces. /healthz,
// /readyz and /metrics (Prometheus) need no keys; /console/ is a read-only
// web console behind the keys, on by default on a loopback address.
//
// On SIGTERM or SIGINT it stops within -shutdown-grace: see
// docs/operations.md. -version prints the build; -h lists the flags and
// the environment variables.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/internal/httpguard"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the default comes back: a second one ends the
	// process at once, without waiting for the grace.
	go func() { <-ctx.Done(); stop() }()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sourced-server:", err)
		os.Exit(1)
	}
}

type config struct {
	addr        string
	data        string
	postgres    string
	pgSchema    string
	maxBody     int64
	rateLimit   int
	rateWindow  time.Duration
	logLevel    string
	grace       time.Duration
	drain       time.Duration
	storeWait   time.Duration
	tlsCert     string
	tlsKey      string
	metricsAddr string
	console     string
	insecure    bool
	otlp        string
	version     bool
	sec         securityConfig // limits, proxies, cookie (limits.go)
}

// hooks are what tests put in place of the real store and timings; the
// zero value is the real thing.
type hooks struct {
	open opener // nil: openBackend
}

// run serves until ctx ends, then shuts down within -shutdown-grace. ready,
// when not nil, receives the address once the API serves.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer, ready chan<- string) error {
	return runWith(ctx, hooks{}, args, getenv, logOut, ready)
}

// envHelp is the end of -h: the environment variables.
const envHelp = `
Environment variables:
  SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY
        the keys every API request must carry (headers Serialized-Access-Key
        and Serialized-Secret-Access-Key); never printed
  SERIALIZED_ACCESS_KEY_FILE, SERIALIZED_SECRET_ACCESS_KEY_FILE
        read each key from a file instead (a trailing newline is dropped)
  SOURCED_POSTGRES_URL
        the PostgreSQL connection string, when -postgres is not given
  SOURCED_TLS_CERT, SOURCED_TLS_KEY
        defaults of -tls-cert and -tls-key
`

// parseFlags reads the command line.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sourced-server", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: sourced-server [flags]\n\nServes the Serialized Aggregates API. Flags:\n")
		fs.PrintDefaults()
		fmt.Fprint(out, envHelp)
	}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.data, "data", "", "keep events in this file (bbolt); empty keeps them in memory")
	fs.StringVar(&c.postgres, "postgres", "", "keep events in this PostgreSQL database (a connection string; prefer SOURCED_POSTGRES_URL, which ps does not show)")
	fs.StringVar(&c.pgSchema, "postgres-schema", "sourced", "PostgreSQL schema of the tables")
	fs.Int64Var(&c.maxBody, "max-body", localserver.DefaultMaxBodyBytes, "largest request body in bytes")
	fs.IntVar(&c.rateLimit, "rate-limit", 100_000, "requests allowed per rate window; more get 429")
	fs.DurationVar(&c.rateWindow, "rate-window", time.Minute, "rate-limit window")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&c.grace, "shutdown-grace", 10*time.Second, "on SIGTERM, exit within this long: the drain, then requests under way finish or are cancelled")
	fs.DurationVar(&c.drain, "shutdown-drain", 0, "on SIGTERM, first answer /readyz with 503 for this long while still serving, so load balancers stop sending (part of -shutdown-grace; e.g. 5s without a preStop hook in Kubernetes)")
	fs.DurationVar(&c.storeWait, "store-wait", 30*time.Second, "at start, wait this long for an unreachable PostgreSQL database (not ready meanwhile); 0 tries once")
	fs.StringVar(&c.tlsCert, "tls-cert", getenv("SOURCED_TLS_CERT"), "TLS certificate file (PEM); with -tls-key the server speaks HTTPS (env SOURCED_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", getenv("SOURCED_TLS_KEY"), "TLS private key file (PEM) (env SOURCED_TLS_KEY)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve /metrics on this address (plain HTTP, no keys) instead of the main one")
	fs.StringVar(&c.console, "console", "auto", "the web console at /console/: on, off, or auto (on when listening on loopback)")
	fs.StringVar(&c.otlp, "otlp-endpoint", "", "export traces over OTLP/HTTP to this URL (for example http://127.0.0.1:4318); requests that carry a traceparent header join the caller's trace")
	fs.BoolVar(&c.insecure, "insecure-no-keys", false, "allow listening on a non-loopback address without keys: anyone who reaches it can read, write and delete")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	c.sec.register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := c.sec.check(); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.postgres == "" {
		c.postgres = getenv("SOURCED_POSTGRES_URL")
	}
	if c.grace <= 0 || c.drain < 0 || c.drain >= c.grace {
		return c, fmt.Errorf("-shutdown-drain (%s) must be shorter than -shutdown-grace (%s), which must be positive", c.drain, c.grace)
	}
	if c.storeWait < 0 {
		return c, errors.New("-store-wait must not be negative")
	}
	return c, nil
}

// newLogger writes JSON lines with ISO-8601 timestamps. Warn and Error
// lines are sampled, so that a failure hit by every request cannot flood
// the log: of each message, the first 10 a second, then one in 100. Info
// and Debug lines (one per request) are all written.
func newLogger(level string, out io.Writer) (*zap.Logger, error) {
	var l zapcore.Level
	if err := l.Set(level); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = zapcore.ISO8601TimeEncoder
	enc, sink := zapcore.NewJSONEncoder(cfg), zapcore.Lock(zapcore.AddSync(out))
	quiet := zap.LevelEnablerFunc(func(x zapcore.Level) bool { return x >= l && x < zapcore.WarnLevel })
	loud := zap.LevelEnablerFunc(func(x zapcore.Level) bool { return x >= l && x >= zapcore.WarnLevel })
	return zap.New(zapcore.NewTee(
		zapcore.NewCore(enc, sink, quiet),
		zapcore.NewSamplerWithOptions(zapcore.NewCore(enc.Clone(), sink, loud), time.Second, 10, 100),
	)), nil
}

func runWith(ctx context.Context, h hooks, args []string, getenv func(string) string, logOut io.Writer, ready chan<- string) error {
	c, err := parseFlags(args, getenv, logOut)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	b := readBuild()
	if c.version {
		_, err := fmt.Fprintln(logOut, b)
		return err
	}
	log, err := newLogger(c.logLevel, logOut)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	access, secret, err := keys(getenv)
	if err != nil {
		return err
	}
	loopback, err := isLoopback(c.addr)
	if err != nil {
		return err
	}
	if access == "" && !loopback && !c.insecure {
		return fmt.Errorf("refusing to listen on %s without keys: set SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY (or their _FILE forms), or pass -insecure-no-keys to accept every request from the network on purpose", c.addr)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("give both -tls-cert and -tls-key, or neither")
	}
	consoleOn := c.console == "on" || (c.console == "auto" && loopback)
	if c.console != "on" && c.console != "off" && c.console != "auto" {
		return fmt.Errorf("-console must be on, off or auto, not %q", c.console)
	}
	if c.data != "" && c.postgres != "" {
		return errors.New("give -data or -postgres, not both")
	}
	if err := warnUnsafe(c, access != "", loopback, log); err != nil {
		return err
	}

	metrics := newMetrics()
	ops := newOpsMetrics(metrics.reg, b)
	life := newLifecycle()
	cleanups := []func(){life.cancel} // run in reverse once the servers stopped
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	opts := []localserver.Option{localserver.WithLogger(log), localserver.WithMaxBodyBytes(c.maxBody),
		localserver.WithRateLimit(c.rateLimit, c.rateWindow), localserver.WithDrain(life.drain)}
	anyHost := access == "" && !loopback // keyless beyond loopback, on purpose (-insecure-no-keys)
	opts = append(opts, c.sec.serverOptions(c.rateWindow, anyHost)...)
	consoleOpts := c.sec.consoleOptions(anyHost)
	warnFileLimit(log, c.sec.maxConns)
	var flushTraces func(context.Context) error
	if c.otlp != "" {
		cleanups = append(cleanups, otelErrors(log))
		tp, shutdown, err := tracing(ctx, c.otlp, func(e sdktrace.SpanExporter) sdktrace.SpanExporter {
			return &countingExporter{SpanExporter: e, log: log, m: ops}
		})
		if err != nil {
			return err
		}
		flushTraces = shutdown
		cleanups = append(cleanups, func() { // when run ends early; a stop flushes within the grace
			if flushTraces != nil {
				fctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_ = flushTraces(fctx)
			}
		})
		opts = append(opts, localserver.WithTracerProvider(tp))
	}
	if access != "" {
		opts = append(opts, localserver.WithKeys(access, secret))
		consoleOpts = append(consoleOpts, console.WithKeys(access, secret))
	} else {
		log.Warn("no keys set (SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY): accepting every request", zap.Bool("loopback", loopback))
	}

	// Listen first: health answers and readiness says 503 while the store
	// opens (which may wait for the database).
	var monitor atomic.Pointer[storeMonitor]
	mux := http.NewServeMux()
	mux.Handle("/", life.gate(ops.refused))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("GET /readyz", readyz(life, cacheAnswer(readyCacheTTL, nil, probe(&monitor))))
	if c.metricsAddr == "" {
		mux.Handle("GET /metrics", metrics.handler())
	}
	errLog, err := zap.NewStdLogAt(log, zapcore.WarnLevel)
	if err != nil {
		return err
	}
	// Without keys, the routes outside the API (health, readiness, metrics)
	// answer loopback host names and their own origin only, like the API:
	// a DNS-rebinding page must not read the metrics either.
	var root http.Handler = mux
	if access == "" && !anyHost {
		root = httpguard.LoopbackOnly(mux)
	}
	srv, err := listen(c.addr, root, c.tlsCert, c.tlsKey, newConnLimiter(c.sec.maxConns, metrics.connections), errLog, life.base)
	if err != nil {
		return err
	}
	servers := []*server{srv}
	if c.metricsAddr != "" {
		m := http.NewServeMux()
		m.Handle("GET /metrics", metrics.handler())
		var mroot http.Handler = m
		if access == "" && !anyHost {
			mroot = httpguard.LoopbackOnly(m)
		}
		ms, err := listen(c.metricsAddr, mroot, "", "", newConnLimiter(metricsMaxConns, nil), errLog, life.base)
		if err != nil {
			srv.close()
			return err
		}
		servers = append(servers, ms)
		log.Info("metrics", zap.String("addr", ms.addr()))
	}
	log.Info("listening", zap.String("addr", srv.addr()), zap.String("url", srv.url()))

	open := h.open
	if open == nil {
		open = openBackend
	}
	policy := storeBackOff(c.storeWait)
	if c.postgres == "" { // a file or memory: nothing to wait for
		policy = &backoff.StopBackOff{}
	}
	backend, closeBackend, desc, err := openWaiting(ctx, open, c, log, policy)
	if err != nil {
		if ctx.Err() != nil { // stopped while waiting for the store
			serr := shutdown(life, servers, time.Now(), c.grace, 0, log)
			log.Info("stopped")
			return serr
		}
		for _, s := range servers {
			s.close()
		}
		return fmt.Errorf("opening the store: %w", err)
	}
	cleanups = append(cleanups, closeBackend)

	mon := newStoreMonitor(backend, log, ops)
	ops.registerStore(metrics.reg, backend)
	monitor.Store(mon)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { mon.watch(watchCtx, probeEvery) })

	api := http.NewServeMux()
	api.Handle("/", localserver.NewHandler(backend, opts...))
	if consoleOn {
		con, err := console.New(backend, append(consoleOpts, console.WithLogger(log))...)
		if err != nil {
			stopWatch()
			watching.Wait()
			for _, s := range servers {
				s.close()
			}
			return err
		}
		api.Handle(console.Prefix, con)
	}
	if bh := backupHandler(backend, access, secret, log); bh != nil {
		api.Handle(backupPath, bh)
	}
	life.serve(withConsoleRedirect(metrics.wrap(api), consoleOn))
	readyFields := []zap.Field{zap.String("addr", srv.addr()), zap.String("url", srv.url()),
		zap.String("store", desc), zap.Bool("auth", access != ""), zap.Bool("tls", c.tlsCert != ""), zap.Bool("console", consoleOn)}
	if consoleOn {
		readyFields = append(readyFields, zap.String("console_url", srv.url()+console.Prefix))
	}
	readyFields = append(readyFields, zap.String("version", b.Version), zap.String("revision", b.Revision), zap.Bool("modified", b.Modified))
	log.Info("sourced-server ready", readyFields...)
	if ready != nil {
		ready <- srv.addr()
	}

	<-ctx.Done()
	began := time.Now()
	err = shutdown(life, servers, began, c.grace, c.drain, log)
	stopWatch()
	watching.Wait()
	if flushTraces != nil {
		// What is left of the grace, at most 5 s, flushes the spans.
		fctx, cancel := context.WithDeadline(context.Background(), minTime(began.Add(c.grace), time.Now().Add(5*time.Second)))
		if ferr := flushTraces(fctx); ferr != nil {
			log.Warn("traces not all exported", zap.Error(ferr))
		}
		cancel()
		flushTraces = nil
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
	if err != nil {
		log.Error("stopped; requests were cut off", zap.Error(err))
		return err
	}
	log.Info("stopped")
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// keys reads the API keys from the environment, or from the files the
// _FILE variables name (a trailing newline is dropped).
func keys(getenv func(string) string) (access, secret string, err error) {
	read := func(name string) (string, error) {
		v, file := getenv(name), getenv(name+"_FILE")
		switch {
		case v != "" && file != "":
			return "", fmt.Errorf("set %s or %s_FILE, not both", name, name)
		case file != "":
			b, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("%s_FILE: %w", name, err)
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		return v, nil
	}
	if access, err = read("SERIALIZED_ACCESS_KEY"); err != nil {
		return "", "", err
	}
	if secret, err = read("SERIALIZED_SECRET_ACCESS_KEY"); err != nil {
		return "", "", err
	}
	if (access == "") != (secret == "") {
		return "", "", errors.New("set both SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY, or neither")
	}
	return access, secret, nil
}

// isLoopback reports whether addr listens on loopback only. An empty host
// ("":8080) listens everywhere.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("-addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// readyz answers 200 when the store answers a probe within two seconds and
// its schema is one this binary knows, 503 otherwise: while the store opens,
// once shutting down (at once, whatever probe caches), when the store does
// not answer. It says nothing about the data.
func readyz(life *lifecycle, probe http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch life.current() {
		case starting:
			http.Error(w, "starting: store not open yet", http.StatusServiceUnavailable)
			return
		case draining, stopping:
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		probe.ServeHTTP(w, r)
	}
}

// probe answers whether the store answers the monitor's probe.
func probe(monitor *atomic.Pointer[storeMonitor]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mon := monitor.Load()
		if mon == nil {
			http.Error(w, "starting: store not open yet", http.StatusServiceUnavailable)
			return
		}
		if err := mon.probe(r.Context()); err != nil {
			if errors.Is(err, errSchemaNotSupported) {
				http.Error(w, "store schema newer than this binary", http.StatusServiceUnavailable)
				return
			}
			http.Error(w, "store not answering", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	}
}

// server is one listening http.Server.
type server struct {
	srv  *http.Server
	l    net.Listener
	tls  bool
	done chan struct{} // closed when Serve returned
}

// listen serves h on addr with the timeouts a server reachable by other
// processes needs (a feed read may wait 60 s before it answers), over TLS
// 1.2 or newer when a certificate is given, with at most limit's connections
// when limit is not nil. Its own errors (a failed TLS
// handshake) go to errLog; every request's context derives from base.
func listen(addr string, h http.Handler, cert, key string, limit *connLimiter, errLog *stdlog.Logger, base context.Context) (*server, error) {
	srv := &http.Server{Handler: h, MaxHeaderBytes: 16 << 10, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second, WriteTimeout: transport.MaxFeedWait + 30*time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: errLog, BaseContext: func(net.Listener) context.Context { return base }}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate and key: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if limit != nil { // at most -max-conns connections; idle ones closed early near the cap
		l, srv.ConnState = limit.wrap(l), limit.track
	}
	s := &server{srv: srv, l: l, tls: cert != "", done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if s.tls {
			_ = srv.ServeTLS(l, "", "")
		} else {
			_ = srv.Serve(l)
		}
	}()
	return s, nil
}

func (s *server) addr() string { return s.l.Addr().String() }

func (s *server) url() string {
	if s.tls {
		return "https://" + s.addr()
	}
	return "http://" + s.addr()
}

// shutdown stops the server gracefully; it may be called again after an
// error, with a later deadline.
func (s *server) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

func (s *server) close() {
	_ = s.srv.Close()
	<-s.done
}

// openBackend opens the store the server serves.
func openBackend(ctx context.Context, c config, log *zap.Logger) (transport.Transport, func(), string, error) {
	switch {
	case c.data != "":
		return openFile(c.data)
	case c.postgres != "":
		return openPostgres(ctx, c.postgres, c.pgSchema, log)
	}
	return memory.New(), func() {}, "memory", nil
}
