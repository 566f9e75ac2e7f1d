// Command order walks one order through its life on sourced: placed, paid
// in two parts, shipped; then shows the rules refusing what they must, a
// retry when two clerks race on the same order, and the stored history.
//
//	go run ./examples/order                 # embedded in-memory store
//	go run ./examples/order -data shop.db   # events in a local file; run it twice
//	go run ./examples/order -api http://127.0.0.1:8080   # a Serialized-compatible API
//
// At the end a durable subscription brings the order list, a read model
// kept beside the data, up to date: run the example twice over -data or the
// local server and the second run applies only the new batches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/examples/internal/backend"
	"github.com/sourced-go/sourced/examples/order/orderlist"
	"github.com/sourced-go/sourced/examples/order/orders"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("order", flag.ContinueOnError)
	var store backend.Flags
	store.Register(fs)
	verbose := fs.Bool("v", false, "log the repository's retries through zap")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := store.OpenContext(ctx, getenv)
	if err != nil {
		return err
	}
	defer st.Close()
	tr, desc := st.Transport, st.Desc

	log := zap.NewNop()
	if *verbose {
		log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(out), zap.InfoLevel))
	}
	repo := repository.New(tr, orders.Definition, repository.WithLogger(log))
	p := &printer{out: out}
	p.title("sourced: the life of an order")
	p.line("store: %s", desc)

	id := uuid.NewString()
	p.step("Ann places order %s for %s", short(id), money(120000))
	res, err := repo.Create(ctx, id, orders.Place("ann", 120000))
	if err != nil {
		return err
	}
	p.stored(res, "OrderPlaced")

	p.step("She pays %s now", money(50000))
	res, err = repo.Update(ctx, id, orders.Pay(50000))
	if err != nil {
		return err
	}
	p.stored(res, "PaymentReceived")

	p.step("The warehouse tries to ship before the order is paid")
	_, err = repo.Update(ctx, id, orders.Ship("TRK-881"))
	if !errors.Is(err, orders.ErrNotFullyPaid) {
		return fmt.Errorf("expected the rules to refuse shipping, got %v", err)
	}
	p.refused(err)

	p.step("Two clerks take the rest of the payment at the same moment")
	if err := race(ctx, repo, id, p); err != nil {
		return err
	}

	p.step("The warehouse ships it")
	res, err = repo.Update(ctx, id, orders.Ship("TRK-881"))
	if err != nil {
		return err
	}
	p.stored(res, "OrderShipped")

	p.step("A double click ships it again")
	res, err = repo.Update(ctx, id, orders.Ship("TRK-881"))
	if err != nil {
		return err
	}
	p.line("nothing to do: %d events stored, still at version %d", res.Events, res.Version)

	p.step("Ann tries to cancel")
	_, err = repo.Update(ctx, id, orders.Cancel("changed my mind"))
	if !errors.Is(err, orders.ErrAlreadyShipped) {
		return fmt.Errorf("expected the rules to refuse canceling, got %v", err)
	}
	p.refused(err)

	p.step("Reload the order from its events")
	root, err := repo.Load(ctx, id)
	if err != nil {
		return err
	}
	o := root.State()
	p.line("version %d: paid %s of %s, shipped=%v (tracking %s)", root.Version(), money(o.Paid), money(o.Amount), o.Shipped, o.TrackingNumber)
	if err := history(ctx, tr, root, p); err != nil {
		return err
	}
	return orderList(ctx, st, id, p)
}

// orderList brings the order list up to date through a durable
// subscription and shows it.
func orderList(ctx context.Context, st *backend.Store, id string, p *printer) error {
	feed, err := st.Feeder()
	if err != nil {
		return err
	}
	if st.Pool != nil {
		return orderListPostgres(ctx, st, feed, id, p)
	}
	list, err := orderlist.Open(st.ViewPath("order-list"))
	if err != nil {
		return err
	}
	defer list.Close()
	from, applied, err := list.CatchUp(ctx, feed)
	if err != nil {
		return err
	}
	p.step("The order list, a read model kept by a durable subscription")
	if from == 0 {
		p.line("built from the start of the feed: %d batches applied", applied)
	} else {
		p.line("picked up after sequence number %d, where the last run stopped: %d new batches applied", from, applied)
	}
	rows, totals, err := list.Rows()
	if err != nil {
		return err
	}
	showRows(p, id, rows, totals)
	return nil
}

// showRows prints the order id's row of the list and the list's totals.
func showRows(p *printer, id string, rows []orderlist.Row, totals orderlist.Totals) {
	for _, r := range rows {
		if r.ID == id {
			p.line("this order: %s, paid %s of %s, %s", r.Customer, money(r.Paid), money(r.Amount), r.Status)
		}
	}
	p.line("all orders: %d, worth %s, paid %s, %d shipped", totals.Orders, money(totals.Amount), money(totals.Paid), totals.Shipped)
}

// orderListPostgres brings the order list in PostgreSQL up to date as a
// member of the list's consumer group, sharing the partitions with the
// processes that run beside it, and shows it.
func orderListPostgres(ctx context.Context, st *backend.Store, feed transport.Feeder, id string, p *printer) error {
	list, err := orderlist.OpenPostgres(ctx, st.Pool)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	member := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), short(uuid.NewString()))
	applied, err := list.CatchUp(ctx, feed, member)
	if err != nil {
		return err
	}
	p.step("The order list, a read model in PostgreSQL kept by a consumer group")
	p.line("member %s of group %q (%d partitions): %d batches applied by this process", member, orderlist.Name, orderlist.Partitions, applied)
	rows, totals, err := list.Rows(ctx)
	if err != nil {
		return err
	}
	showRows(p, id, rows, totals)
	return nil
}

// race lets clerk A's payment lose a race against clerk B's: A's first run
// sees version 2, B stores version 3 meanwhile, A's store conflicts, and the
// repository reloads and runs A's command again on fresh state, where the
// order is already paid.
func race(ctx context.Context, repo *repository.Repository[orders.Order], id string, p *printer) error {
	attempt := 0
	_, err := repo.Update(ctx, id, func(r *aggregate.Root[orders.Order]) error {
		attempt++
		p.line("clerk A, attempt %d: sees version %d, paid %s", attempt, r.Version(), money(r.State().Paid))
		if attempt == 1 {
			res, err := repo.Update(ctx, id, orders.Pay(70000))
			if err != nil {
				return err
			}
			p.line("clerk B: stored PaymentReceived + OrderFullyPaid at version %d", res.Version)
		}
		return orders.Pay(70000)(r)
	})
	if !errors.Is(err, orders.ErrAlreadyPaid) {
		return fmt.Errorf("expected clerk A to find the order paid, got %v", err)
	}
	p.line("clerk A: version conflict, so the repository reloaded and ran the command again")
	p.refused(err)
	p.line("the customer was charged once, not twice")
	return nil
}

func history(ctx context.Context, tr transport.Transport, root *aggregate.Root[orders.Order], p *printer) error {
	page, err := tr.Load(ctx, transport.Ref{Type: root.Type(), ID: root.ID()}, 0, 0)
	if err != nil {
		return err
	}
	p.step("The stored history (%d events in %d batches)", len(page.Events), page.Version)
	for _, e := range page.Events {
		p.line("%-16s %s", e.EventType, e.Data)
	}
	return nil
}

type printer struct {
	out io.Writer
	n   int
}

func (p *printer) title(s string) { fmt.Fprintf(p.out, "%s\n%s\n", s, strings.Repeat("=", len(s))) }
func (p *printer) step(format string, args ...any) {
	p.n++
	fmt.Fprintf(p.out, "\n%d. %s\n", p.n, fmt.Sprintf(format, args...))
}
func (p *printer) line(format string, args ...any) {
	fmt.Fprintf(p.out, "   %s\n", fmt.Sprintf(format, args...))
}
func (p *printer) stored(res repository.Result, what string) {
	p.line("stored %s: %d event(s), now at version %d", what, res.Events, res.Version)
}
func (p *printer) refused(err error) { p.line("refused: %v", err) }

func money(cents int64) string { return fmt.Sprintf("%d.%02d SEK", cents/100, cents%100) }
func short(id string) string   { return id[:8] }
