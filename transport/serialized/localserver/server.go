package localserver

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// Server is a local API server listening on a loopback port, for tests and
// development, in the spirit of httptest.Server.
type Server struct {
	// URL is the base URL, http://127.0.0.1:<port>.
	URL      string
	listener net.Listener
	srv      *http.Server
	done     chan struct{}
}

// NewServer starts serving the API over backend (a fresh memory transport
// when nil) on 127.0.0.1 at a free port. It panics if it cannot listen, as
// httptest.NewServer does; use Listen for an error instead. Like
// httptest.Server it sets no read, write or idle timeouts: it serves the
// test that started it, over loopback, and Close ends every connection.
func NewServer(backend transport.Transport, opts ...Option) *Server {
	s, err := listen("127.0.0.1:0", backend, false, opts...)
	if err != nil {
		panic("localserver: " + err.Error())
	}
	return s
}

// Listen starts serving the API over backend (a fresh memory transport when
// nil) on addr, with the timeouts a server reachable by other processes
// needs: headers within 10 s, whole requests within 60 s, responses within
// 90 s (a feed read may wait up to 60 s before it answers), idle
// connections closed after 2 minutes.
func Listen(addr string, backend transport.Transport, opts ...Option) (*Server, error) {
	return listen(addr, backend, true, opts...)
}

func listen(addr string, backend transport.Transport, timeouts bool, opts ...Option) (*Server, error) {
	if backend == nil {
		backend = memory.New()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: NewHandler(backend, opts...), MaxHeaderBytes: 64 << 10}
	if timeouts {
		srv.ReadHeaderTimeout = 10 * time.Second
		srv.ReadTimeout = 60 * time.Second
		srv.WriteTimeout = transport.MaxFeedWait + 30*time.Second
		srv.IdleTimeout = 2 * time.Minute
	}
	s := &Server{URL: "http://" + l.Addr().String(), listener: l, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(l)
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Shutdown stops accepting connections and waits for requests under way
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// Close stops the server at once.
func (s *Server) Close() {
	_ = s.srv.Close()
	<-s.done
}
