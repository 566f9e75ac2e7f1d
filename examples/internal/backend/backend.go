// Package backend chooses the store the examples run on: the embedded
// in-memory transport by default, a local bbolt file with -data, or the
// Serialized HTTP API (the local server or the hosted service) when asked
// by flag or environment, or a PostgreSQL database with -postgres. It also says where the examples keep their read
// models and checkpoints, so that a second run picks up where the first
// stopped.
package backend

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/postgres"
)

// Flags are the example binaries' store flags.
type Flags struct {
	API      string
	Data     string
	Views    string
	Postgres string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.API, "api", "", "base URL of a Serialized-compatible API (the local server or https://api.serialized.io); keys from SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY")
	fs.StringVar(&f.Data, "data", "", "keep events in this local file (bbolt), so a second run continues the first")
	fs.StringVar(&f.Postgres, "postgres", "", "keep events (and the read models that can) in this PostgreSQL database (a connection string), which several processes may share")
	fs.StringVar(&f.Views, "views", "", "folder for read models and checkpoints (default: beside -data; for -api, the user cache folder; in memory, a temporary folder)")
}

// Store is the opened store with what the examples need around it.
type Store struct {
	transport.Transport
	// Desc describes the store in one line.
	Desc string
	// Pool is the PostgreSQL pool of -postgres (nil otherwise), for read
	// models kept in the same database.
	Pool  *pgxpool.Pool
	views string
	base  string
	close []func() error
}

// Open returns the chosen store.
func (f *Flags) Open(getenv func(string) string) (*Store, error) {
	return f.OpenContext(context.Background(), getenv)
}

// OpenContext returns the chosen store; ctx bounds connecting to
// PostgreSQL.
func (f *Flags) OpenContext(ctx context.Context, getenv func(string) string) (*Store, error) {
	given := 0
	for _, v := range []string{f.Data, f.API, f.Postgres} {
		if v != "" {
			given++
		}
	}
	if given > 1 {
		return nil, errors.New("give one of -data, -api and -postgres")
	}
	s := &Store{}
	switch {
	case f.Postgres != "":
		tr, err := postgres.Open(ctx, f.Postgres)
		if err != nil {
			return nil, err
		}
		s.Transport, s.Desc, s.Pool = tr, "events in PostgreSQL (shared by every process on the database)", tr.Pool()
		s.close = append(s.close, tr.Close)
		dir, err := os.MkdirTemp("", "sourced-example-")
		if err != nil {
			_ = tr.Close()
			return nil, err
		}
		s.views, s.base = dir, "postgres"
		s.close = append(s.close, func() error { return os.RemoveAll(dir) })
	case f.Data != "":
		tr, err := bolt.Open(f.Data)
		if err != nil {
			return nil, err
		}
		s.Transport, s.Desc = tr, "events in the local file "+f.Data+" (bbolt)"
		s.close = append(s.close, tr.Close)
		s.views, s.base = filepath.Dir(f.Data), strings.TrimSuffix(filepath.Base(f.Data), filepath.Ext(f.Data))
	default:
		tr, desc, remote, err := openBackend(f, getenv)
		if err != nil {
			return nil, err
		}
		s.Transport, s.Desc = tr, desc
		if remote != "" {
			cache, err := os.UserCacheDir()
			if err != nil {
				cache = os.TempDir()
			}
			s.views, s.base = filepath.Join(cache, "sourced-examples"), remote
		} else {
			dir, err := os.MkdirTemp("", "sourced-example-")
			if err != nil {
				return nil, err
			}
			s.views, s.base = dir, "memory"
			s.close = append(s.close, func() error { return os.RemoveAll(dir) })
		}
	}
	if f.Views != "" {
		s.views = f.Views
	}
	if err := os.MkdirAll(s.views, 0o755); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Feeder returns the store's feed, which every store here has.
func (s *Store) Feeder() (transport.Feeder, error) {
	f, ok := s.Transport.(transport.Feeder)
	if !ok {
		return nil, errors.New("this store has no feed")
	}
	return f, nil
}

// ViewPath names the bbolt file of a read model or checkpoint store.
func (s *Store) ViewPath(name string) string {
	return filepath.Join(s.views, s.base+"."+name+".db")
}

// Close closes the store and removes a temporary views folder.
func (s *Store) Close() error {
	var errs []error
	for i := len(s.close) - 1; i >= 0; i-- {
		errs = append(errs, s.close[i]())
	}
	return errors.Join(errs...)
}

func openMemory() (transport.Transport, string, string, error) {
	return memory.New(), "embedded in-memory store (events vanish when the program ends)", "", nil
}
