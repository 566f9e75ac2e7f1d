package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/postgres"
)

// The child processes of the multi-process tests: the test binary, run
// again with childEnv set to "<mode> <url> <schema> <args...>".
const childEnv = "SOURCED_POSTGRES_CHILD"

type counter struct{ N int }

// Incremented is the counter's one event.
type Incremented struct{}

var counters = aggregate.MustNew[counter]("counter", aggregate.On(func(c *counter, _ Incremented) { c.N++ }))

func runChild() bool {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return false
	}
	f := strings.Fields(spec)
	if err := child(f[0], f[1], f[2], f[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	return true
}

func child(mode, url, schema string, args []string) error {
	ctx := context.Background()
	tr, err := postgres.Open(ctx, url, postgres.WithSchema(schema))
	if err != nil {
		return err
	}
	defer tr.Close()
	switch mode {
	case "increment": // args: goroutines, increments, aggregate ids...
		goroutines, _ := strconv.Atoi(args[0])
		increments, _ := strconv.Atoi(args[1])
		ids := args[2:]
		repo := repository.New(tr, counters, repository.WithRetry(func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = time.Millisecond, 20*time.Millisecond, 0
			return backoff.WithMaxRetries(b, 1000)
		}))
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range increments {
					id := ids[(g+i)%len(ids)]
					if _, err := repo.Update(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{}) }); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return errors.Join(<-errs)
	case "hang": // store one batch and hold its transaction open until killed
		postgres.SetBeforeCommit(tr, func(context.Context, pgx.Tx) {
			fmt.Println("in transaction")
			time.Sleep(time.Hour)
		})
		return tr.Store(ctx, transport.Ref{Type: "counter", ID: args[0]}, []transport.Event{{EventType: "Incremented"}, {EventType: "Incremented"}}, transport.Any)
	}
	return fmt.Errorf("unknown mode %q", mode)
}
