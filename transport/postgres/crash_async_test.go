package postgres_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// crashable is a cluster of this test's own, which it can crash (an
// immediate shutdown: no checkpoint, WAL not yet flushed is lost, as
// after kill -9) and start again on the same data.
type crashable struct {
	t               *testing.T
	bin, data, sock string
	opts            string
}

func (c *crashable) run(args ...string) {
	c.t.Helper()
	name := filepath.Join(c.bin, args[0])
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args[1:]...)...)
	} else {
		cmd = exec.Command(name, args[1:]...)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(c.t, err, "%s: %s", args[0], out)
}

func (c *crashable) start() {
	c.run("pg_ctl", "-D", c.data, "-o", c.opts, "-l", filepath.Join(c.sock, "server.log"), "-w", "-t", "60", "start")
}
func (c *crashable) crash() { c.run("pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop") }

func (c *crashable) url() string {
	return "postgres://postgres@/postgres?host=" + url.QueryEscape(c.sock) + "&sslmode=disable"
}

func newCrashable(t *testing.T) *crashable {
	database(t) // skips (or fails) as the other tests do without PostgreSQL
	dir, err := os.MkdirTemp("", "sourced-pg-crash-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	c := &crashable{t: t, bin: cluster.BinDir(), data: filepath.Join(dir, "data"), sock: filepath.Join(dir, "sock")}
	for _, d := range []string{c.data, c.sock} {
		require.NoError(t, os.Mkdir(d, 0o700))
		if os.Geteuid() == 0 {
			out, err := exec.Command("chown", "postgres", d).CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
	}
	c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	// The WAL writer flushes an asynchronous commit only after 10 s: a
	// crash before then loses it.
	c.opts = "-c listen_addresses='' -k " + c.sock + " -c wal_writer_delay=10000 -c fsync=on"
	c.start()
	t.Cleanup(func() { c.run("pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop") })
	return c
}

// TestNumbersSurviveACrashWhileAStoreBelowWasOpen (issue 23): a
// numbering run R numbers U while a store T with a lower transaction id
// is still open; T commits (durably) after R's snapshot and before R
// commits; a reader reads U's number; the server crashes. If R's commit
// were not flushed (synchronous_commit off), the run after the restart
// would number T first and give U another number: the reader, past U's
// first number, would skip T. R's commit must wait for the flush.
func TestNumbersSurviveACrashWhileAStoreBelowWasOpen(t *testing.T) {
	c := newCrashable(t)
	ctx := context.Background()
	schema := "crash"
	open := func() *postgres.Transport {
		tr, err := postgres.Open(ctx, c.url(), postgres.WithSchema(schema), postgres.WithSequencerInterval(time.Hour))
		require.NoError(t, err)
		postgres.StopBackground(tr) // runs only where the test says
		return tr
	}
	tr, writer := open(), open()
	holding, release := make(chan struct{}), make(chan struct{})
	postgres.SetBeforeCommit(writer, func(ctx context.Context, tx pgx.Tx) {
		close(holding)
		<-release
	})
	feed := transport.Scope{Type: "order"}
	x, u := uuid.NewString(), uuid.NewString()
	stored := make(chan error, 1)
	go func() {
		stored <- writer.StoreBulk(ctx, feed, []transport.Batch{{AggregateID: x, Events: placed}, {AggregateID: uuid.NewString(), Events: placed}})
	}()
	<-holding // T is open, its id taken
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: u}, placed, transport.Any))

	pool, err := pgxpool.New(ctx, c.url())
	require.NoError(t, err)
	defer pool.Close()
	// R takes its snapshot, then waits at the counter's row, held here.
	locker, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = locker.Exec(ctx, `SELECT * FROM `+schema+`.feed_counter FOR UPDATE`)
	require.NoError(t, err)
	type read struct {
		p   transport.FeedPage
		err error
	}
	reads := make(chan read, 1)
	go func() {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: feed})
		reads <- read{p, err}
	}()
	defer func() { _ = locker.Rollback(ctx) }()
	require.Eventually(t, func() bool {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'transactionid' AND query LIKE 'WITH counter AS%')`).Scan(&waiting)
		if err != nil {
			t.Log(err)
		}
		return waiting
	}, 10*time.Second, 5*time.Millisecond, "the run waits at the counter")
	close(release) // T commits, durably, after R's snapshot
	require.NoError(t, <-stored)
	require.NoError(t, locker.Rollback(ctx)) // R goes on and commits
	r := <-reads
	require.NoError(t, r.err)
	require.Len(t, r.p.Entries, 1)
	require.Equal(t, u, r.p.Entries[0].AggregateID)
	seen := r.p.Entries[0].Sequence // a reader's checkpoint, kept elsewhere

	pool.Close()
	tr.Close()
	writer.Close()
	c.crash()
	c.start()

	after := open()
	defer after.Close()
	p, err := after.ReadFeed(ctx, transport.FeedQuery{Feed: feed})
	require.NoError(t, err)
	require.Len(t, p.Entries, 3)
	require.Equal(t, u, p.Entries[seen-1].AggregateID, "U keeps the number the reader saw")
	rest, err := after.ReadFeed(ctx, transport.FeedQuery{Feed: feed, Since: seen})
	require.NoError(t, err)
	require.Len(t, rest.Entries, 2, "the reader past U's number still gets T's batches")
}
