package postgres_test

import (
	"context"
	"fmt"
	"os"

	"github.com/sourced-go/sourced/transport/postgres"
)

// Open a store on a PostgreSQL database; several processes may share it.
// (Not run: it needs a server.)
func ExampleOpen() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"), postgres.WithSchema("sourced"))
	if err != nil {
		fmt.Println(err) // never holds the password
		return
	}
	defer store.Close()
	fmt.Println("tables in schema", store.Schema())
}
