package repository_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/transport/memory"
)

type Ticket struct {
	Title  string
	Closed bool
}

type TicketOpened struct {
	Title string `json:"title"`
}

type TicketClosed struct{}

var errAlreadyClosed = errors.New("ticket already closed")

// Update loads the aggregate, runs the command on its state, and stores the
// events it recorded; on a version conflict it reloads and runs it again.
func ExampleRepository_Update() {
	tickets := aggregate.MustNew[Ticket]("ticket",
		aggregate.On(func(t *Ticket, e TicketOpened) { t.Title = e.Title }),
		aggregate.On(func(t *Ticket, _ TicketClosed) { t.Closed = true }),
	)
	repo := repository.New(memory.New(), tickets)
	ctx := context.Background()
	id := "0b8f6a52-3c1e-4d7a-9f2b-6e5d4c3b2a19"

	res, _ := repo.Create(ctx, id, func(t *aggregate.Root[Ticket]) error {
		return t.Record(TicketOpened{Title: "Printer on fire"})
	})
	fmt.Println("created at version", res.Version)

	closeTicket := func(t *aggregate.Root[Ticket]) error {
		if t.State().Closed {
			return errAlreadyClosed
		}
		return t.Record(TicketClosed{})
	}
	res, _ = repo.Update(ctx, id, closeTicket)
	fmt.Println("closed at version", res.Version, "with", res.Events, "event")

	_, err := repo.Update(ctx, id, closeTicket)
	fmt.Println(errors.Is(err, errAlreadyClosed))

	t, _ := repo.Load(ctx, id)
	fmt.Printf("%+v at version %d\n", *t.State(), t.Version())
	// Output:
	// created at version 1
	// closed at version 2 with 1 event
	// true
	// {Title:Printer on fire Closed:true} at version 2
}
