// Package docs_test compiles every Go block of the documentation: each block
// in docs/*.md and README.md must appear, line for line, in this file (see
// TestDocBlocksCompile), and this file is compiled and run by go test.
package docs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/aggregate/gojson"
	"github.com/sourced-go/sourced/eventbus"
	"github.com/sourced-go/sourced/internal/pgtest"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/subscription"
	"github.com/sourced-go/sourced/subscription/boltcheckpoint"
	"github.com/sourced-go/sourced/subscription/group"
	"github.com/sourced-go/sourced/subscription/pgcheckpoint"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/serialized"
	"github.com/sourced-go/sourced/transport/serialized/localserver"
	"github.com/sourced-go/sourced/transport/transporttest"
)

// README: about twenty lines, verbatim inside a function.

var errAlreadyClosed = errors.New("already closed")

func readme(ctx context.Context) (repository.Result, error) {
	type Ticket struct {
		Title  string
		Closed bool
	}
	type TicketOpened struct {
		Title string `json:"title"`
	}
	type TicketClosed struct{}

	var tickets = aggregate.MustNew[Ticket]("ticket",
		aggregate.On(func(t *Ticket, e TicketOpened) { t.Title = e.Title }),
		aggregate.On(func(t *Ticket, _ TicketClosed) { t.Closed = true }),
	)

	repo := repository.New(memory.New(), tickets) // the embedded store; HTTP: see below
	id := uuid.NewString()
	repo.Create(ctx, id, func(t *aggregate.Root[Ticket]) error {
		return t.Record(TicketOpened{Title: "Printer on fire"})
	})
	res, err := repo.Update(ctx, id, func(t *aggregate.Root[Ticket]) error {
		if t.State().Closed {
			return errAlreadyClosed
		}
		return t.Record(TicketClosed{}) // stored with expectedVersion 1; on 409: reload, rerun
	})
	return res, err
}

// getting-started.md

type Account struct {
	Owner   string
	Balance int64
}

type AccountOpened struct {
	Owner string `json:"owner"`
}

type MoneyDeposited struct {
	Amount int64 `json:"amount"`
}

var accounts = aggregate.MustNew[Account]("account",
	aggregate.On(func(a *Account, e AccountOpened) { a.Owner = e.Owner }),
	aggregate.On(func(a *Account, e MoneyDeposited) { a.Balance += e.Amount }),
)

var ErrBadAmount = errors.New("amount must be positive")

func Open(owner string) func(*aggregate.Root[Account]) error {
	return func(r *aggregate.Root[Account]) error {
		return r.Record(AccountOpened{Owner: owner})
	}
}

func Deposit(amount int64) func(*aggregate.Root[Account]) error {
	return func(r *aggregate.Root[Account]) error {
		if amount <= 0 {
			return ErrBadAmount
		}
		return r.Record(MoneyDeposited{Amount: amount})
	}
}

func gettingStarted() error {
	ctx := context.Background()
	repo := repository.New(memory.New(), accounts)

	id := uuid.NewString()
	if _, err := repo.Create(ctx, id, Open("ann")); err != nil {
		return err
	}
	res, err := repo.Update(ctx, id, Deposit(250))
	if err != nil {
		return err
	}
	fmt.Println("stored", res.Events, "event at version", res.Version)

	acct, err := repo.Load(ctx, id)
	if err != nil {
		return err
	}
	fmt.Println(acct.State().Owner, acct.State().Balance, acct.Version())
	return nil
}

func gettingStartedHTTP() error {
	client, err := serialized.NewFromEnv() // SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY
	if err != nil {
		return err
	}
	repo := repository.New(client, accounts)
	_, err = repo.Create(context.Background(), uuid.NewString(), Open("bob"))
	return err
}

// concepts.md

func conceptsErrors(ctx context.Context, repo *repository.Repository[Account], id string) {
	_, err := repo.Update(ctx, id, Deposit(-5))
	switch {
	case errors.Is(err, ErrBadAmount):
		// the command refused: nothing was stored
	case errors.Is(err, transport.ErrNotFound):
		// no such account
	case errors.Is(err, transport.ErrConflict):
		// still conflicting after every retry
	case errors.Is(err, transport.ErrAmbiguous):
		// the outcome is unknown: reload before deciding
	}
	var te *transport.Error
	if errors.As(err, &te) {
		fmt.Println(te.Op, te.AggregateType, te.AggregateID, te.StatusCode, te.Messages)
	}
}

func conceptsBus(ctx context.Context, store transport.Transport) error {
	bus := eventbus.New()
	defer bus.Close(ctx)

	_, err := eventbus.Subscribe(bus, func(ctx context.Context, env eventbus.Envelope, e MoneyDeposited) error {
		fmt.Printf("%s got %d (version %d)\n", env.AggregateID, e.Amount, env.Version)
		return nil
	}, eventbus.Async(), eventbus.DeadLetter(func(env eventbus.Envelope, err error) {
		fmt.Println("could not handle", env.EventID, err)
	}))
	if err != nil {
		return err
	}
	repo := repository.New(store, accounts, repository.WithPublisher(bus))
	_ = repo
	return nil
}

// transports.md

func transportsLocal() {
	srv := localserver.NewServer(memory.New(), localserver.WithKeys("key", "secret"))
	defer srv.Close()
	client, _ := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("key", "secret"))
	_ = client
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return memory.New() // your transport here, fresh and empty for each subtest
	})
}

// operations.md

func operations(logger *zap.Logger, store transport.Transport) {
	client, err := serialized.New(
		serialized.WithKeys("access", "secret"),
		serialized.WithTimeout(10*time.Second),
		serialized.WithHTTPClient(&http.Client{
			Transport: http.DefaultTransport,
			// Redirects would carry the keys along: refuse them.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}),
		serialized.WithRetry(func() backoff.BackOff {
			return backoff.WithMaxRetries(backoff.NewExponentialBackOff(), 3)
		}),
		serialized.WithLogger(logger),
	)
	_, _ = client, err

	repo := repository.New(store, accounts,
		repository.WithLogger(logger),
		repository.WithRetry(func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 10 * time.Millisecond
			b.MaxElapsedTime = 5 * time.Second
			return backoff.WithMaxRetries(b, 20)
		}),
	)
	acme := repo.ForTenant("6f1c9b2e-4a57-4c1d-9a8e-3b2f1d0c9e7a")
	_ = acme
}

// docs/feeds.md: a subscription, and a read model with its checkpoint in
// one transaction.

type revenueReport struct {
	mu    sync.Mutex
	total map[string]int
}

func (r *revenueReport) Add(_ context.Context, id string, _ int64, amount int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total[id] += amount
	return nil
}

func (r *revenueReport) of(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total[id]
}

type feedOrderPaid struct {
	Amount int `json:"amount"`
}

func feedsSubscription(ctx context.Context, store transport.Feeder, checkpoints subscription.Checkpoints, report *revenueReport) error {
	type OrderPaid = feedOrderPaid
	sub, err := subscription.New(store, "revenue", checkpoints, subscription.Feed("order"))
	if err != nil {
		return err
	}
	subscription.On(sub, func(ctx context.Context, env eventbus.Envelope, e OrderPaid) error {
		return report.Add(ctx, env.AggregateID, env.Sequence, e.Amount)
	})
	return sub.Run(ctx) // catch up, then follow live until ctx ends or sub.Close
}

func feedsReadModel(ctx context.Context, store transport.Feeder, db *bbolt.DB) error {
	cps, err := boltcheckpoint.New(db) // db: the read model's own bbolt file
	if err != nil {
		return err
	}
	sub, err := subscription.New(store, "order-list", cps, subscription.Feed("order"))
	if err != nil {
		return err
	}
	sub.OnEntry(cps.Apply(sub.Name(), func(ctx context.Context, tx *bbolt.Tx, e transport.FeedEntry) error {
		orders, err := tx.CreateBucketIfNotExists([]byte("orders")) // the read model's own bucket
		if err != nil {
			return err
		}
		return orders.Put([]byte(e.AggregateID), []byte(e.Events[0].EventType))
	}))
	return sub.Run(ctx)
}

func feedHead(ctx context.Context, store transport.Feeder) (int64, error) {
	return store.FeedHead(ctx, transport.Scope{Type: "order"}) // or Type: transport.AllTypes
}

func TestFeedsSnippets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := memory.New()
	id := uuid.NewString()
	require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))

	report := &revenueReport{total: map[string]int{}}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- feedsSubscription(sctx, store, subscription.NewMemoryCheckpoints(), report) }()
	require.Eventually(t, func() bool { return report.of(id) == 7 }, 5*time.Second, time.Millisecond)
	stop()
	require.NoError(t, <-done)

	db, err := bbolt.Open(filepath.Join(t.TempDir(), "view.db"), 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	rctx, stopModel := context.WithCancel(ctx)
	go func() { done <- feedsReadModel(rctx, store, db) }()
	require.Eventually(t, func() bool {
		var v []byte
		_ = db.View(func(tx *bbolt.Tx) error {
			if b := tx.Bucket([]byte("orders")); b != nil {
				v = b.Get([]byte(id))
			}
			return nil
		})
		return string(v) == "feedOrderPaid"
	}, 5*time.Second, time.Millisecond)
	stopModel()
	require.NoError(t, <-done)
	head, err := feedHead(ctx, store)
	require.NoError(t, err)
	require.Equal(t, int64(1), head)
}

// docs/long-histories.md

type Ledger struct{ Balance int64 }

type EntryPosted struct {
	Cents int64 `json:"cents"`
}

var ledgers = aggregate.MustNew[Ledger]("ledger",
	aggregate.WithCodec[Ledger](gojson.Codec{}), // faster decoding
	aggregate.On(func(l *Ledger, e EntryPosted) { l.Balance += e.Cents }),
	aggregate.Upcast[Ledger]("Posted", aggregate.Rename("EntryPosted")), // an old name
)

func ledgerRepository(store transport.Transport, snapshots snapshot.Store) *repository.Repository[Ledger] {
	return repository.New(store, ledgers,
		repository.WithCache(10_000),                // keep hot roots, read only new batches
		repository.WithSnapshots(snapshots, 1, 100), // state every 100 versions, schema 1
	)
}

func TestLongHistoriesSnippet(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	id := uuid.NewString()
	require.NoError(t, store.Store(ctx, transport.Ref{Type: "ledger", ID: id}, []transport.Event{{EventType: "Posted", Data: []byte(`{"cents":5}`)}}, transport.Any))
	repo := ledgerRepository(store, snapshot.NewMemory())
	_, err := repo.Update(ctx, id, func(r *aggregate.Root[Ledger]) error { return r.Record(EntryPosted{Cents: 7}) })
	require.NoError(t, err)
	root, err := repo.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, int64(12), root.State().Balance)
}

// docs/feeds.md: consumer groups (preview).

func feedsGroup(ctx context.Context, store transport.Feeder, pool *pgxpool.Pool, member string) error {
	cps, err := pgcheckpoint.New(ctx, pool) // pool: a *pgxpool.Pool on the read model's database
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS order_list (id text PRIMARY KEY, last_event text NOT NULL)"); err != nil {
		return err
	}
	return group.Run(ctx, cps, "order-list", member, 8, func(p transport.Partition, fence group.Fence) (*subscription.Subscription, error) {
		fenced := cps.WithFence(fence) // its writes fail once another member holds the partition
		sub, err := subscription.New(store, "order-list", fenced, subscription.Feed("order"), subscription.Partition(p.Count, p.Number))
		if err != nil {
			return nil, err
		}
		sub.OnEntry(fenced.Apply(sub.Name(), func(ctx context.Context, tx pgx.Tx, e transport.FeedEntry) error {
			_, err := tx.Exec(ctx, "INSERT INTO order_list (id, last_event) VALUES ($1, $2) "+
				"ON CONFLICT (id) DO UPDATE SET last_event = excluded.last_event", e.AggregateID, e.Events[0].EventType)
			return err
		}))
		return sub, nil
	})
}

// The group snippet runs against a throwaway PostgreSQL (skipped without
// one, unless SOURCED_REQUIRE_POSTGRES=1).
func TestFeedsGroupSnippet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := pgtest.Start(ctx)
	defer cluster.Stop()
	pgtest.Need(t, cluster, err)
	url, err := cluster.NewDatabase(ctx)
	require.NoError(t, err)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()

	store := memory.New()
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = uuid.NewString()
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: ids[i]}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))
	}
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	count := func() int {
		var n int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM order_list").Scan(&n)
		return n
	}
	go func() { done <- feedsGroup(gctx, store, pool, "replica-1") }()
	require.Eventually(t, func() bool { return count() > 0 }, 30*time.Second, 10*time.Millisecond)
	go func() { done <- feedsGroup(gctx, store, pool, "replica-2") }() // joins, takes its share
	for range 20 {
		id := uuid.NewString()
		require.NoError(t, store.Store(ctx, transport.Ref{Type: "order", ID: id}, []transport.Event{{EventType: "feedOrderPaid", Data: []byte(`{"amount":7}`)}}, transport.Any))
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return count() == len(ids) }, 30*time.Second, 10*time.Millisecond)
	stop()
	require.NoError(t, <-done)
	require.NoError(t, <-done)
}
