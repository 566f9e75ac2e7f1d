package postgres_test

// The findings of the adversarial review (issue 26), each a test that
// fails without its fix.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
	"github.com/sourced-go/sourced/transport/transporttest"
)

var placed = []transport.Event{{EventType: "OrderPlaced"}}

// waitUntilBlocked polls until a session runs query and waits for a lock
// (true), or done fires first: the statement did not wait (false; what
// done gave is given back to done).
func waitUntilBlocked(t *testing.T, pool *pgxpool.Pool, query string, done chan error) bool {
	t.Helper()
	for range 4000 {
		var waiting bool
		require.NoError(t, pool.QueryRow(context.Background(),
			`SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = $1)`, query).Scan(&waiting))
		if waiting {
			return true
		}
		select {
		case err := <-done:
			done <- err
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return false
}

// TestDeleteRacingAStoreLeavesNothing (item 1): a delete confirmed while a
// store of the aggregate is in flight waits for it and deletes what it
// wrote; nothing of the aggregate remains, and a store expecting a version
// of it then fails. Both for one aggregate and for a whole type.
func TestDeleteRacingAStoreLeavesNothing(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("type=%v", all), func(t *testing.T) {
			tr := fresh(t)
			deleter := sameStore(t, tr)
			ctx := context.Background()
			scope := transport.Scope{Type: "order"}
			ref := transport.Ref{Type: "order", ID: uuid.NewString()}
			for v := range int64(3) {
				require.NoError(t, tr.Store(ctx, ref, placed, transport.Exactly(v)))
			}
			inTx, release := make(chan struct{}), make(chan struct{})
			postgres.SetBeforeCommit(tr, func(context.Context, pgx.Tx) {
				close(inTx)
				<-release
			})
			stored := make(chan error, 1)
			go func() {
				stored <- tr.StoreBulk(ctx, scope, []transport.Batch{
					{AggregateID: ref.ID, Events: placed, Expected: transport.Exactly(3)},
					{AggregateID: uuid.NewString(), Events: placed, Expected: transport.MustNotExist},
				})
			}()
			<-inTx
			target, lock := transport.DeleteAggregate(ref), "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2)"
			if all {
				target, lock = transport.DeleteAllOfType(scope), "SELECT pg_advisory_xact_lock($1)"
			}
			token, err := deleter.RequestDelete(ctx, target)
			require.NoError(t, err)
			deleted := make(chan error, 1)
			go func() { deleted <- deleter.ConfirmDelete(ctx, target, token) }()
			waited := waitUntilBlocked(t, tr.Pool(), lock, deleted)
			close(release)
			assert.True(t, waited, "the delete waits for the store in flight")
			require.NoError(t, <-stored)
			require.NoError(t, <-deleted)
			postgres.SetBeforeCommit(tr, nil)

			_, err = tr.Load(ctx, ref, 0, 0)
			require.ErrorIs(t, err, transport.ErrNotFound, "nothing of the aggregate remains")
			require.ErrorIs(t, tr.Store(ctx, ref, placed, transport.Exactly(4)), transport.ErrConflict)
			require.NoError(t, tr.Store(ctx, ref, placed, transport.MustNotExist), "it can start again")
		})
	}
}

// TestSchemaNameLeavesRoomForTheChannel (item 2): the notification channel
// is the schema's name with "_feed"; a name that leaves it too long is
// refused up front instead of breaking every feed read later.
func TestSchemaNameLeavesRoomForTheChannel(t *testing.T) {
	url := database(t)
	ctx := context.Background()
	_, err := postgres.Open(ctx, url, postgres.WithSchema("s"+strings.Repeat("x", 58)))
	require.ErrorIs(t, err, postgres.ErrConfig)
	name := fmt.Sprintf("s%d_", os.Getpid())
	name += strings.Repeat("x", 58-len(name))
	tr, err := postgres.Open(ctx, url, postgres.WithSchema(name))
	require.NoError(t, err, "58 bytes leave room")
	defer tr.Close()
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, placed, transport.MustNotExist))
	_, err = tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: time.Millisecond})
	require.NoError(t, err)
}

// backlog leaves n batches of n transactions each without a number in
// schema, as writers whose sequencers stopped would.
func backlog(t *testing.T, pool *pgxpool.Pool, schema string, n int) {
	t.Helper()
	conn, err := pool.Acquire(context.Background())
	require.NoError(t, err)
	defer conn.Release()
	s := pgx.Identifier{schema}.Sanitize()
	_, err = conn.Exec(context.Background(), `SET synchronous_commit = off`)
	require.NoError(t, err)
	_, err = conn.Conn().PgConn().Exec(context.Background(), `DO $$ BEGIN FOR i IN 1..`+fmt.Sprint(n)+` LOOP
			INSERT INTO `+s+`.batches (tenant, aggregate_type, aggregate_id, version, stored_at, event_count, event_types, id_hash, payload, tx)
			VALUES ('', 'order', gen_random_uuid()::text, 1, now(), 1, '{OrderPlaced}', 0, '\x01'::bytea, pg_current_xact_id());
			COMMIT;
		END LOOP; END $$`).ReadAll()
	require.NoError(t, err)
}

// TestBacklogNumberedInChunks (item 3): a backlog is numbered in runs of
// bounded size (a transaction's batches never split), in order.
func TestBacklogNumberedInChunks(t *testing.T) {
	tr := fresh(t, postgres.WithSequencerInterval(time.Hour))
	ctx := context.Background()
	postgres.SetSequencerChunk(tr, 3)
	var mu sync.Mutex
	var runs []int64
	postgres.SetOnRun(tr, func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			runs = append(runs, n)
		}
	})
	postgres.StopBackground(tr) // only the reads below number
	var ids []string
	for range 7 {
		ref := transport.Ref{Type: "order", ID: uuid.NewString()}
		require.NoError(t, tr.Store(ctx, ref, placed, transport.MustNotExist))
		ids = append(ids, ref.ID)
	}
	var bulk []transport.Batch
	for range 5 {
		bulk = append(bulk, transport.Batch{AggregateID: uuid.NewString(), Events: placed})
	}
	require.NoError(t, tr.StoreBulk(ctx, transport.Scope{Type: "order"}, bulk))

	head, err := tr.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, int64(12), head)
	mu.Lock()
	assert.Equal(t, []int64{3, 3, 1, 5}, runs, "three at a time; the bulk's transaction whole")
	mu.Unlock()
	p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}})
	require.NoError(t, err)
	require.Len(t, p.Entries, 12)
	for i, id := range ids {
		assert.Equal(t, id, p.Entries[i].AggregateID, "in transaction order")
	}
}

// TestSequencerIgnoresAShortStatementTimeout (item 3): a role or session
// with a statement_timeout shorter than numbering a backlog takes does not
// stop the feed: the sequencer sets its own.
func TestSequencerIgnoresAShortStatementTimeout(t *testing.T) {
	w := fresh(t)
	schema := w.Schema()
	require.NoError(t, w.Close()) // no sequencer of its own numbers the backlog
	pool, err := pgxpool.New(context.Background(), database(t))
	require.NoError(t, err)
	defer pool.Close()
	backlog(t, pool, schema, 30000)

	ctx := context.Background()
	reader, err := postgres.Open(ctx, database(t)+"&statement_timeout=100", postgres.WithSchema(schema), postgres.WithSequencerInterval(time.Hour))
	require.NoError(t, err)
	defer reader.Close()
	postgres.SetSequencerChunk(reader, 1_000_000) // one run for all: the timeout alone is under test
	head, err := reader.FeedHead(ctx, transport.Scope{Type: "order"})
	require.NoError(t, err)
	assert.Equal(t, int64(30000), head)
}

// TestAnyNeverConflicts (item 4): stores that expect any version never
// fail for want of one, however many race on one aggregate, alone or in
// bulk.
func TestAnyNeverConflicts(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 15 {
				var err error
				if g%3 == 0 {
					err = tr.StoreBulk(ctx, ref.Scope(), []transport.Batch{
						{AggregateID: ref.ID, Events: placed},
						{AggregateID: uuid.NewString(), Events: placed},
					})
				} else {
					err = tr.Store(ctx, ref, placed, transport.Any)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(24*15), p.Version)
}

// TestWaitingReaderWakesAfterTheListenerReconnects (item 5): a
// notification sent while the listener was reconnecting is lost; the
// reconnection itself wakes the waiting readers.
func TestWaitingReaderWakesAfterTheListenerReconnects(t *testing.T) {
	writer := fresh(t)
	reader := sameStore(t, writer, postgres.WithSequencerInterval(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	firstRead := make(chan struct{})
	var once sync.Once
	postgres.SetAfterRead(reader, func() { once.Do(func() { close(firstRead) }) })
	got := make(chan transport.FeedPage, 1)
	go func() {
		p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: time.Minute})
		assert.NoError(t, err)
		got <- p
	}()
	<-firstRead
	_, err := writer.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1`,
		"LISTEN "+pgx.Identifier{writer.Schema() + "_feed"}.Sanitize())
	require.NoError(t, err)
	require.NoError(t, writer.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, placed, transport.MustNotExist))
	p := <-got
	assert.Len(t, p.Entries, 1, "the reader woke before its context ended")
}

// TestWaitingReaderReadsAgainAtItsDeadline (item 5): when a wait ends
// without a wake-up, the read looks once more (and numbers what it must)
// rather than return the page it had before the wait.
func TestWaitingReaderReadsAgainAtItsDeadline(t *testing.T) {
	writer := fresh(t)
	postgres.StopBackground(writer) // stores, but never numbers nor notifies
	reader := sameStore(t, writer, postgres.WithSequencerInterval(time.Hour))
	ctx := context.Background()
	var once sync.Once
	postgres.SetAfterRead(reader, func() {
		// Stored after the first read, before the wait.
		once.Do(func() {
			require.NoError(t, writer.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, placed, transport.MustNotExist))
		})
	})
	p, err := reader.ReadFeed(ctx, transport.FeedQuery{Feed: transport.Scope{Type: "order"}, Wait: 200 * time.Millisecond})
	require.NoError(t, err)
	assert.Len(t, p.Entries, 1)
}

// TestBulkInOppositeOrdersDoesNotDeadlock (item 6): StoreBulk([x, y])
// and StoreBulk([y, x]) at once: the batches are written in one order
// whatever the caller's, so the second waits for the first and then
// conflicts, instead of a deadlock.
func TestBulkInOppositeOrdersDoesNotDeadlock(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	a := fresh(t, postgres.WithLogger(zap.New(core)))
	b := sameStore(t, a, postgres.WithLogger(zap.New(core)))
	ctx := context.Background()
	scope := transport.Scope{Type: "order"}
	x, y := uuid.NewString(), uuid.NewString()
	aPaused, aGo := make(chan struct{}), make(chan struct{})
	postgres.SetBeforeBatch(a, func(i int) {
		if i == 1 {
			close(aPaused)
			<-aGo
		}
	})
	bSecond := make(chan error, 1)
	postgres.SetBeforeBatch(b, func(i int) {
		if i == 1 {
			bSecond <- nil
		}
	})
	aDone, bDone := make(chan error, 1), make(chan error, 1)
	go func() {
		aDone <- a.StoreBulk(ctx, scope, []transport.Batch{
			{AggregateID: x, Events: placed, Expected: transport.MustNotExist},
			{AggregateID: y, Events: placed, Expected: transport.MustNotExist},
		})
	}()
	<-aPaused
	go func() {
		bDone <- b.StoreBulk(ctx, scope, []transport.Batch{
			{AggregateID: y, Events: placed, Expected: transport.MustNotExist},
			{AggregateID: x, Events: placed, Expected: transport.MustNotExist},
		})
	}()
	// b either waits for a at its first batch or (written in the caller's
	// order) got past it.
	for waiting := false; !waiting; {
		select {
		case <-bSecond:
			waiting = true
		case <-time.After(5 * time.Millisecond):
			require.NoError(t, a.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database())`).Scan(&waiting))
		}
	}
	close(aGo)
	require.NoError(t, <-aDone)
	require.ErrorIs(t, <-bDone, transport.ErrConflict)
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if f.Type == zapcore.ErrorType {
				assert.NotContains(t, f.Interface.(error).Error(), "40P01", "no deadlock")
			}
		}
	}
}

// TestUnderSerializableByDefault (item 7): a SERIALIZABLE default makes no
// store, load or read fail: each statement picks the isolation it needs.
func TestUnderSerializableByDefault(t *testing.T) {
	underDefaultIsolation(t, "serializable")
}

// TestPayloadsByteForByte (item 8): Data and EncryptedData come back as
// they were given, through Load and ReadFeed.
func TestPayloadsByteForByte(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	events := []transport.Event{
		{EventType: "Spaced", Data: []byte(`{"a": 1}`)},
		{EventType: "Html", Data: []byte(`"<b>&amp;</b>"`)},
		{EventType: "Separator", Data: []byte("\"a\u2028b\"")},
		{EventType: "Opaque", EncryptedData: "<b>&amp;</b> \u2028 é"},
	}
	require.NoError(t, tr.Store(ctx, ref, events, transport.MustNotExist))
	p, err := tr.Load(ctx, ref, 0, 0)
	require.NoError(t, err)
	f, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: ref.Scope()})
	require.NoError(t, err)
	require.Len(t, f.Entries, 1)
	for _, got := range [][]transport.Event{p.Events, f.Entries[0].Events} {
		require.Len(t, got, len(events))
		for i, e := range events {
			assert.Equal(t, string(e.Data), string(got[i].Data))
			assert.Equal(t, []byte(e.EncryptedData), []byte(got[i].EncryptedData))
			assert.NotEmpty(t, got[i].EventID)
		}
	}
}

// TestHeadNeverFallsAfterATypeDelete (item 9).
func TestHeadNeverFallsAfterATypeDelete(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "payment", ID: uuid.NewString()}, placed, transport.MustNotExist))
	for range 2 {
		require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, placed, transport.MustNotExist))
	}
	heads := func() (int64, int64) {
		all, err := tr.FeedHead(ctx, transport.Scope{Type: transport.AllTypes})
		require.NoError(t, err)
		orders, err := tr.FeedHead(ctx, transport.Scope{Type: "order"})
		require.NoError(t, err)
		return all, orders
	}
	all, orders := heads()
	require.Equal(t, int64(3), all)
	require.Equal(t, int64(3), orders)
	target := transport.DeleteAllOfType(transport.Scope{Type: "order"})
	token, err := tr.RequestDelete(ctx, target)
	require.NoError(t, err)
	require.NoError(t, tr.ConfirmDelete(ctx, target, token))
	all, orders = heads()
	assert.Equal(t, int64(3), all)
	assert.Equal(t, int64(3), orders)
	require.NoError(t, tr.Store(ctx, transport.Ref{Type: "order", ID: uuid.NewString()}, placed, transport.MustNotExist))
	all, orders = heads()
	assert.Equal(t, int64(4), all)
	assert.Equal(t, int64(4), orders)
}

// TestDeleteTokensByTheDatabaseClock (item 10): a token issued by a
// process whose clock is 11 minutes behind is good for one whose clock is
// right (the database's clock decides), and issuing a token purges the
// expired ones.
func TestDeleteTokensByTheDatabaseClock(t *testing.T) {
	behind := fresh(t, postgres.WithClock(func() time.Time { return time.Now().Add(-11 * time.Minute) }))
	right := sameStore(t, behind)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, right.Store(ctx, ref, placed, transport.MustNotExist))
	target := transport.DeleteAggregate(ref)
	token, err := behind.RequestDelete(ctx, target)
	require.NoError(t, err)
	require.NoError(t, right.ConfirmDelete(ctx, target, token))

	clock := transporttest.NewClock(time.Now())
	moving := sameStore(t, behind, postgres.WithClock(clock.Now))
	_, err = moving.RequestDelete(ctx, target)
	require.NoError(t, err)
	clock.Advance(transport.DeleteTokenTTL + time.Minute)
	_, err = moving.RequestDelete(ctx, target)
	require.NoError(t, err)
	var n int
	require.NoError(t, moving.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{moving.Schema()}.Sanitize()+".delete_tokens").Scan(&n))
	assert.Equal(t, 1, n, "the expired token was purged")
}

// TestOpenWithDataRightsOnly (item 11): a role that may read and write the
// tables but not create anything opens a migrated schema.
func TestOpenWithDataRightsOnly(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	role := fmt.Sprintf("data_only_%d_%s", os.Getpid(), uuid.NewString()[:8]) // a new role each run: -count=2 met the last one's grants
	s := pgx.Identifier{tr.Schema()}.Sanitize()
	for _, q := range []string{
		"DROP ROLE IF EXISTS " + role,
		"CREATE ROLE " + role + " LOGIN",
		"GRANT USAGE ON SCHEMA " + s + " TO " + role,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + s + " TO " + role,
		"GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + s + " TO " + role,
	} {
		_, err := tr.Pool().Exec(ctx, q)
		require.NoError(t, err, q)
	}
	url := strings.Replace(database(t), "postgres://postgres@", "postgres://"+role+"@", 1)
	require.NotEqual(t, database(t), url)
	limited, err := postgres.Open(ctx, url, postgres.WithSchema(tr.Schema()))
	require.NoError(t, err)
	defer limited.Close()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	require.NoError(t, limited.Store(ctx, ref, placed, transport.MustNotExist))
	head, err := limited.FeedHead(ctx, ref.Scope())
	require.NoError(t, err)
	assert.Equal(t, int64(1), head)
	require.NoError(t, limited.CheckSchema(ctx))
}

// TestSchemaTooNew (issue 25): a schema migrated by a newer release is
// refused by Open and reported by CheckSchema.
func TestSchemaTooNew(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	require.NoError(t, tr.CheckSchema(ctx))
	_, err := tr.Pool().Exec(ctx, "INSERT INTO "+pgx.Identifier{tr.Schema()}.Sanitize()+".schema_migrations (version) VALUES ($1)", postgres.SchemaVersion+1)
	require.NoError(t, err)
	err = tr.CheckSchema(ctx)
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
	assert.Contains(t, err.Error(), fmt.Sprint(postgres.SchemaVersion+1))
	_, err = postgres.Open(ctx, database(t), postgres.WithSchema(tr.Schema()))
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
}

// TestSequencerBacksOffAndLogsOnce (issue 25): while the store cannot be
// used, the background sequencer counts its failures and logs one error;
// once it is back, one info.
func TestSequencerBacksOffAndLogsOnce(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	tr := fresh(t, postgres.WithLogger(zap.New(core)))
	ctx := context.Background()
	s := pgx.Identifier{tr.Schema()}.Sanitize()
	_, err := tr.Pool().Exec(ctx, "ALTER TABLE "+s+".feed_counter RENAME TO feed_counter_away")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tr.SequencerFailures() >= 4 }, 20*time.Second, 5*time.Millisecond)
	errorsLogged := logs.FilterLevelExact(zap.ErrorLevel).Len()
	assert.Equal(t, 1, errorsLogged)
	assert.Zero(t, logs.FilterLevelExact(zap.WarnLevel).Len())
	_, err = tr.Pool().Exec(ctx, "ALTER TABLE "+s+".feed_counter_away RENAME TO feed_counter")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return logs.FilterMessageSnippet("reachable again").Len() == 1 }, 20*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, logs.FilterLevelExact(zap.ErrorLevel).Len())
}

// TestPagesBoundedInBytes (item 12): Load and ReadFeed stop adding batches
// once a page holds transport.MaxPageBytes, and say there is more.
func TestPagesBoundedInBytes(t *testing.T) {
	tr := fresh(t)
	ctx := context.Background()
	ref := transport.Ref{Type: "order", ID: uuid.NewString()}
	big := []transport.Event{{EventType: "Big", Data: []byte(`"` + strings.Repeat("x", transport.MaxPageBytes/3) + `"`)}}
	for v := range int64(7) {
		require.NoError(t, tr.Store(ctx, ref, big, transport.Exactly(v)))
	}
	var loaded int
	for since := int64(0); ; {
		p, err := tr.Load(ctx, ref, since, 0)
		require.NoError(t, err)
		assert.LessOrEqual(t, len(p.Events), 3)
		loaded += len(p.Events)
		since = p.Version
		if !p.HasMore {
			break
		}
	}
	assert.Equal(t, 7, loaded)
	var read int
	for since := int64(0); ; {
		p, err := tr.ReadFeed(ctx, transport.FeedQuery{Feed: ref.Scope(), Since: since})
		require.NoError(t, err)
		assert.LessOrEqual(t, len(p.Entries), 3)
		read += len(p.Entries)
		if !p.HasMore {
			break
		}
		since = p.Entries[len(p.Entries)-1].Sequence
	}
	assert.Equal(t, 7, read)
}
