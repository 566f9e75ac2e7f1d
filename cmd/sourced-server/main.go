// Command sourced-server runs a local server that speaks the Serialized
// Aggregates API, for development and CI where the hosted service is out of
// reach.
//
//	SERIALIZED_ACCESS_KEY=dev SERIALIZED_SECRET_ACCESS_KEY=dev \
//		go run ./cmd/sourced-server -addr 127.0.0.1:8080
//
// The keys come from the same variables the HTTP transport reads, so one
// export serves both. Without them the server accepts every request and
// says so. Events live in memory unless -data names a file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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
	addr       string
	data       string
	maxBody    int64
	rateLimit  int
	rateWindow time.Duration
	logLevel   string
	grace      time.Duration
}

// run serves until ctx ends, then shuts down gracefully. ready, when not
// nil, receives the address once the server listens.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer, ready chan<- string) error {
	var c config
	fs := flag.NewFlagSet("sourced-server", flag.ContinueOnError)
	fs.SetOutput(logOut)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.data, "data", "", "keep events in this file (bbolt); empty keeps them in memory")
	fs.Int64Var(&c.maxBody, "max-body", localserver.DefaultMaxBodyBytes, "largest request body in bytes")
	fs.IntVar(&c.rateLimit, "rate-limit", 100_000, "requests allowed per rate window; more get 429")
	fs.DurationVar(&c.rateWindow, "rate-window", time.Minute, "rate-limit window")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&c.grace, "shutdown-grace", 10*time.Second, "how long requests under way may finish on shutdown")
	if err := fs.Parse(args); err != nil {
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

	backend, closeBackend, desc, err := openBackend(c)
	if err != nil {
		return err
	}
	defer closeBackend()

	opts := []localserver.Option{localserver.WithLogger(log), localserver.WithMaxBodyBytes(c.maxBody),
		localserver.WithRateLimit(c.rateLimit, c.rateWindow)}
	access, secret := getenv("SERIALIZED_ACCESS_KEY"), getenv("SERIALIZED_SECRET_ACCESS_KEY")
	switch {
	case access != "" && secret != "":
		opts = append(opts, localserver.WithKeys(access, secret))
	case access != "" || secret != "":
		return errors.New("set both SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY, or neither")
	default:
		log.Warn("no keys set (SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY): accepting every request")
	}

	srv, err := localserver.Listen(c.addr, backend, opts...)
	if err != nil {
		return err
	}
	log.Info("sourced-server ready", zap.String("addr", srv.Addr()), zap.String("url", srv.URL),
		zap.String("store", desc), zap.Bool("auth", access != ""))
	if ready != nil {
		ready <- srv.Addr()
	}
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), c.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// openBackend opens the store the server serves.
func openBackend(c config) (transport.Transport, func(), string, error) {
	if c.data != "" {
		return openFile(c.data)
	}
	return memory.New(), func() {}, "memory", nil
}
