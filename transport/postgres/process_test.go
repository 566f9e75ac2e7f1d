package postgres_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

func spawn(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, " "))
	cmd.Stderr = os.Stderr
	return cmd
}

// TestProcessesShareOneDatabase: 4 OS processes, each with its own pool,
// 4 goroutines each, 50 increments each, on the same 3 aggregates: every
// increment lands once.
func TestProcessesShareOneDatabase(t *testing.T) {
	tr := fresh(t)
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	repo := repository.New(tr, counters)
	for _, id := range ids {
		_, err := repo.Create(context.Background(), id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) })
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		cmd := spawn(t, append([]string{"increment", dbURL, tr.Schema(), "4", "50"}, ids...)...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := cmd.Output(); err != nil {
				errs <- fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := 0
	for _, id := range ids {
		root, err := repo.Load(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, int64(root.State().N), root.Version(), "one batch per increment")
		total += root.State().N
	}
	assert.Equal(t, 800, total-len(ids), "800 increments after the 3 creates")
	p, err := tr.FeedHead(context.Background(), transport.Scope{Type: "counter"})
	require.NoError(t, err)
	assert.Equal(t, int64(803), p, "every batch has its feed number")
}

// TestKilledWriterLeavesNothing: a process killed with SIGKILL while its
// store transaction is open leaves no batch and no version behind.
func TestKilledWriterLeavesNothing(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	id := uuid.NewString()
	ref := transport.Ref{Type: "counter", ID: id}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "Incremented"}}, transport.MustNotExist))

	cmd := spawn(t, "hang", dbURL, tr.Schema(), id)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "in transaction\n", line)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	// The server notices the dead connection and rolls back; until it has,
	// the row lock holds this store, which then succeeds at version 2.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, tr.Store(sctx, ref, []transport.Event{{EventType: "Incremented"}}, transport.Exactly(1)))
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(2), p.Version)
	assert.Len(t, p.Events, 2, "the killed writer's two events are nowhere")
	feed, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "counter"}})
	require.NoError(t, err)
	assert.Len(t, feed.Entries, 2)
}

// TestConnectionDroppedMidStore terminates the store's backend just before
// COMMIT: the outcome is unknown to the client (ErrAmbiguous), and the
// repository resolves it: every command lands exactly once.
func TestConnectionDroppedMidStore(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer admin.Close(ctx)

	var drops int
	var mu sync.Mutex
	postgres.SetBeforeCommit(tr, func(ctx context.Context, tx pgx.Tx) {
		mu.Lock()
		defer mu.Unlock()
		if drops >= 3 {
			return
		}
		drops++
		var pid int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return
		}
		_, _ = admin.Exec(context.Background(), "SELECT pg_terminate_backend($1, 5000)", pid)
	})
	id := uuid.NewString()
	ref := transport.Ref{Type: "counter", ID: id}
	err = tr.Store(ctx, ref, []transport.Event{{EventType: "Incremented"}}, transport.MustNotExist)
	require.Error(t, err)
	assert.True(t, errors.Is(err, transport.ErrAmbiguous) || errors.Is(err, transport.ErrUnavailable), "got %v", err)

	repo := repository.New(tr, counters)
	for range 5 {
		_, err := repo.Update(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) })
		if errors.Is(err, transport.ErrNotFound) {
			_, err = repo.Create(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) })
		}
		require.NoError(t, err)
	}
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 5, root.State().N, "five commands, five increments: nothing twice, nothing lost")
	assert.Equal(t, int64(5), root.Version())
	assert.Equal(t, 3, drops)
}

// TestSecretsStayOut: a password in the connection string appears in no
// error and no log line.
func TestSecretsStayOut(t *testing.T) {
	database(t)
	core, logs := observer.New(zap.DebugLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const secret = "hunter2-very-secret"
	for _, url := range []string{
		"postgres://app:" + secret + "@127.0.0.1:1/shop?connect_timeout=1",
		"postgres://app:" + secret + "@[::1/shop",
		"host=127.0.0.1 port=1 user=app password=" + secret + " connect_timeout=1",
		"postgres://app:" + secret + "@127.0.0.1:1/shop?sslmode=bogus",
	} {
		_, err := postgres.Open(ctx, url, postgres.WithLogger(zap.New(core)))
		require.Error(t, err)
		assert.NotContains(t, err.Error(), secret)
		assert.NotContains(t, fmt.Sprintf("%+v %#v", err, err), secret)
	}
	for _, e := range logs.All() {
		assert.NotContains(t, fmt.Sprint(e.Message, e.ContextMap()), secret)
	}
	_, err := postgres.Open(ctx, dbURL, postgres.WithSchema("Bad-Name"))
	assert.ErrorIs(t, err, postgres.ErrConfig)
}

// TestDeleteTokensSurviveARestart: a token issued by one Transport is
// redeemed by another on the same schema.
func TestDeleteTokensSurviveARestart(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	ref := transport.Ref{Type: "counter", ID: uuid.NewString()}
	require.NoError(t, tr.Store(ctx, ref, []transport.Event{{EventType: "Incremented"}}, transport.Any))
	token, err := tr.RequestDelete(ctx, transport.DeleteAggregate(ref))
	require.NoError(t, err)
	require.NoError(t, tr.Close())

	again, err := postgres.Open(ctx, dbURL, postgres.WithSchema(tr.Schema()))
	require.NoError(t, err)
	defer again.Close()
	require.NoError(t, again.ConfirmDelete(ctx, transport.DeleteAggregate(ref), token))
	ok, err := again.Exists(ctx, ref)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.ErrorIs(t, again.ConfirmDelete(ctx, transport.DeleteAggregate(ref), token), transport.ErrBadDeleteToken, "single use")
}

// TestMigrationsRaceSafely: several transports opening one new schema at
// once all succeed.
func TestMigrationsRaceSafely(t *testing.T) {
	database(t)
	schema := "race_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := postgres.Open(context.Background(), dbURL, postgres.WithSchema(schema))
			if err == nil {
				err = tr.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
