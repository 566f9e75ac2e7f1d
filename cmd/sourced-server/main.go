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
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sourced-go/sourced/console"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	tlsCert     string
	tlsKey      string
	metricsAddr string
	console     string
	insecure    bool
	otlp        string
	sec         securityConfig // limits, proxies, cookie (limits.go)
}

// run serves until ctx ends, then shuts down gracefully. ready, when not
// nil, receives the address once the server listens.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer, ready chan<- string) error {
	var c config
	fs := flag.NewFlagSet("sourced-server", flag.ContinueOnError)
	fs.SetOutput(logOut)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.data, "data", "", "keep events in this file (bbolt); empty keeps them in memory")
	fs.StringVar(&c.postgres, "postgres", "", "keep events in this PostgreSQL database (a connection string; prefer SOURCED_POSTGRES_URL, which ps does not show)")
	fs.StringVar(&c.pgSchema, "postgres-schema", "sourced", "PostgreSQL schema of the tables")
	fs.Int64Var(&c.maxBody, "max-body", localserver.DefaultMaxBodyBytes, "largest request body in bytes")
	fs.IntVar(&c.rateLimit, "rate-limit", 100_000, "requests allowed per rate window; more get 429")
	fs.DurationVar(&c.rateWindow, "rate-window", time.Minute, "rate-limit window")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&c.grace, "shutdown-grace", 10*time.Second, "how long requests under way may finish on shutdown")
	fs.StringVar(&c.tlsCert, "tls-cert", getenv("SOURCED_TLS_CERT"), "TLS certificate file (PEM); with -tls-key the server speaks HTTPS (env SOURCED_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", getenv("SOURCED_TLS_KEY"), "TLS private key file (PEM) (env SOURCED_TLS_KEY)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve /metrics on this address instead of the main one")
	fs.StringVar(&c.console, "console", "auto", "the web console at /console/: on, off, or auto (on when listening on loopback)")
	fs.StringVar(&c.otlp, "otlp-endpoint", "", "export traces over OTLP/HTTP to this URL (for example http://127.0.0.1:4318); requests that carry a traceparent header join the caller's trace")
	fs.BoolVar(&c.insecure, "insecure-no-keys", false, "allow listening on a non-loopback address without keys: anyone who reaches it can read, write and delete")
	c.sec.register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.sec.check(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var level zapcore.Level
	if err := level.Set(c.logLevel); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logOut), level))
	defer func() { _ = log.Sync() }()
	if c.postgres == "" {
		c.postgres = getenv("SOURCED_POSTGRES_URL")
	}

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

	backend, closeBackend, desc, err := openBackend(ctx, c, log)
	if err != nil {
		return err
	}
	defer closeBackend()

	opts := []localserver.Option{localserver.WithLogger(log), localserver.WithMaxBodyBytes(c.maxBody),
		localserver.WithRateLimit(c.rateLimit, c.rateWindow)}
	anyHost := access == "" && !loopback // keyless beyond loopback, on purpose (-insecure-no-keys)
	opts = append(opts, c.sec.serverOptions(c.rateWindow, anyHost)...)
	consoleOpts := c.sec.consoleOptions(anyHost)
	warnFileLimit(log, c.sec.maxConns)
	if c.otlp != "" {
		tp, shutdown, err := tracing(ctx, c.otlp)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(sctx); err != nil {
				log.Warn("traces not all exported", zap.Error(err))
			}
		}()
		opts = append(opts, localserver.WithTracerProvider(tp))
	}
	if access != "" {
		opts = append(opts, localserver.WithKeys(access, secret))
		consoleOpts = append(consoleOpts, console.WithKeys(access, secret))
	} else {
		log.Warn("no keys set (SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY): accepting every request", zap.Bool("loopback", loopback))
	}
	metrics := newMetrics()
	mux := http.NewServeMux()
	mux.Handle("/", withConsoleRedirect(metrics.wrap(localserver.NewHandler(backend, opts...)), consoleOn))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("GET /readyz", cacheAnswer(readyCacheTTL, nil, readyz(backend)))
	if c.metricsAddr == "" {
		mux.Handle("GET /metrics", metrics.handler())
	}
	if consoleOn {
		con, err := console.New(backend, append(consoleOpts, console.WithLogger(log))...)
		if err != nil {
			return err
		}
		mux.Handle(console.Prefix, con)
	}

	srv, err := listen(c.addr, mux, c.tlsCert, c.tlsKey, newConnLimiter(c.sec.maxConns, metrics.connections))
	if err != nil {
		return err
	}
	servers := []*server{srv}
	if c.metricsAddr != "" {
		m := http.NewServeMux()
		m.Handle("GET /metrics", metrics.handler())
		ms, err := listen(c.metricsAddr, m, "", "", nil)
		if err != nil {
			srv.close()
			return err
		}
		servers = append(servers, ms)
		log.Info("metrics", zap.String("addr", ms.addr()))
	}
	readyFields := []zap.Field{zap.String("addr", srv.addr()), zap.String("url", srv.url()),
		zap.String("store", desc), zap.Bool("auth", access != ""), zap.Bool("tls", c.tlsCert != ""), zap.Bool("console", consoleOn)}
	if consoleOn {
		readyFields = append(readyFields, zap.String("console_url", srv.url()+console.Prefix))
	}
	log.Info("sourced-server ready", readyFields...)
	if ready != nil {
		ready <- srv.addr()
	}
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), c.grace)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	log.Info("stopped")
	return errors.Join(errs...)
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

// readyz answers 200 when the store answers within two seconds, 503
// otherwise; it says nothing about the data.
func readyz(backend transport.Transport) http.HandlerFunc {
	probe := transport.Ref{Type: "readiness-probe", ID: "00000000-0000-0000-0000-000000000000"}
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := backend.Exists(ctx, probe); err != nil {
			http.Error(w, "store not answering", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	}
}

// server is one listening http.Server.
type server struct {
	srv *http.Server
	l   net.Listener
	tls bool
	err chan error
}

// listen serves h on addr with the timeouts a server reachable by other
// processes needs (a feed read may wait 60 s before it answers), over TLS
// 1.2 or newer when a certificate is given.
func listen(addr string, h http.Handler, cert, key string, limit *connLimiter) (*server, error) {
	srv := &http.Server{Handler: h, MaxHeaderBytes: 64 << 10, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second, WriteTimeout: transport.MaxFeedWait + 30*time.Second, IdleTimeout: 2 * time.Minute}
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
	s := &server{srv: srv, l: l, tls: cert != "", err: make(chan error, 1)}
	go func() {
		if s.tls {
			s.err <- srv.ServeTLS(l, "", "")
		} else {
			s.err <- srv.Serve(l)
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

func (s *server) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.err
	return err
}

func (s *server) close() {
	_ = s.srv.Close()
	<-s.err
}

// openBackend opens the store the server serves.
func openBackend(ctx context.Context, c config, log *zap.Logger) (transport.Transport, func(), string, error) {
	switch {
	case c.data != "" && c.postgres != "":
		return nil, nil, "", errors.New("give -data or -postgres, not both")
	case c.data != "":
		return openFile(c.data)
	case c.postgres != "":
		return openPostgres(ctx, c.postgres, c.pgSchema, log)
	}
	return memory.New(), func() {}, "memory", nil
}
