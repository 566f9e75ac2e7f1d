// Package pgtest starts a throwaway PostgreSQL server for tests: initdb and
// pg_ctl in a temporary folder, listening only on a private Unix socket,
// removed afterwards. When SOURCED_POSTGRES_URL is set, that server is used
// instead. When neither works, tests skip with a message that says how to
// run them, or fail when SOURCED_REQUIRE_POSTGRES=1 (as CI sets it).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names a server to use instead of starting one.
const EnvURL = "SOURCED_POSTGRES_URL"

// EnvRequire, set to 1, turns a skip for want of PostgreSQL into a failure.
const EnvRequire = "SOURCED_REQUIRE_POSTGRES"

// Cluster is a running server, started by Start or named by EnvURL.
type Cluster struct {
	url   string
	dir   string // empty when the cluster is not ours
	bin   string
	owner string // the OS user that runs the server when we are root
	dbs   atomic.Int64
}

// Start starts a cluster, or returns the one EnvURL names.
func Start(ctx context.Context) (*Cluster, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &Cluster{url: u}, nil
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New("running as root and there is no postgres user to run the server as")
		}
		c.owner = "postgres"
	}
	if c.dir, err = os.MkdirTemp("", "sourced-pg-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return nil, err
	}
	data, sock := filepath.Join(c.dir, "data"), filepath.Join(c.dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
		if c.owner != "" {
			if out, err := exec.Command("chown", c.owner, d).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("chown %s: %v: %s", d, err, out)
			}
		}
	}
	if err := c.run(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		c.remove()
		return nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -c max_connections=300 -c shared_buffers=128MB", sock)
	if err := c.run(ctx, "pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(sock, "server.log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(sock, "server.log"))
		c.remove()
		return nil, fmt.Errorf("%v\n%s", err, log)
	}
	c.url = "postgres://postgres@/postgres?host=" + url.QueryEscape(sock) + "&sslmode=disable"
	return c, nil
}

// binDir finds the server binaries: PATH, or Debian's folders, newest first.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real // the folder with the other binaries, pgbench among them
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb) found; install them (Debian: apt-get install postgresql) or set " + EnvURL)
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.owner != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.owner, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// URL returns the connection string of the cluster's postgres database.
func (c *Cluster) URL() string { return c.url }

// BinDir returns the folder of the server's binaries (pgbench among them),
// or "" for a cluster named by EnvURL.
func (c *Cluster) BinDir() string { return c.bin }

// NewDatabase creates a fresh database and returns its connection string.
func (c *Cluster) NewDatabase(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("sourced_test_%d_%d", os.Getpid(), c.dbs.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := url.Parse(c.url)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Stop stops a cluster this package started and removes its folder.
func (c *Cluster) Stop() {
	if c == nil || c.dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = c.run(ctx, "pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	c.remove()
}

func (c *Cluster) remove() { _ = os.RemoveAll(c.dir) }

// Need returns the cluster for a test. When it could not be started
// (startErr), the test is skipped with how to run it, or fails under
// EnvRequire=1.
func Need(t testing.TB, c *Cluster, startErr error) *Cluster {
	t.Helper()
	if c != nil && startErr == nil {
		return c
	}
	msg := fmt.Sprintf("no PostgreSQL for this test (%v); install the server binaries (apt-get install postgresql) so the test starts its own, or set %s", startErr, EnvURL)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return nil
}

// ServerCPU returns the CPU time (user and system, every process of the
// server: the postmaster, its live children, and the children it has
// reaped) that a cluster this package started has used so far, read from
// /proc (Linux). ok is false when it cannot tell: a cluster named by
// EnvURL, or no /proc. The difference of two readings is what the server
// spent in between, however busy the rest of the machine was; its
// resolution is the kernel's clock tick (10 ms at 100 Hz).
func (c *Cluster) ServerCPU() (cpu time.Duration, ok bool) {
	if c == nil || c.dir == "" {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, false
	}
	// Fields after the command's closing parenthesis: state is [0], ppid
	// [1], utime [11], stime [12], cutime [13], cstime [14].
	fields := func(p string) []string {
		s, err := os.ReadFile(filepath.Join("/proc", p, "stat"))
		if err != nil {
			return nil
		}
		i := bytes.LastIndexByte(s, ')')
		if i < 0 {
			return nil
		}
		return strings.Fields(string(s[i+1:]))
	}
	ticks := func(f []string, idx ...int) int64 {
		var n int64
		for _, i := range idx {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return n
	}
	own := fields(strconv.Itoa(pid))
	if len(own) < 15 {
		return 0, false
	}
	total := ticks(own, 11, 12, 13, 14)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	parent := strconv.Itoa(pid)
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if f := fields(e.Name()); len(f) >= 15 && f[1] == parent {
			total += ticks(f, 11, 12)
		}
	}
	const hz = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return time.Duration(total) * time.Second / hz, true
}
