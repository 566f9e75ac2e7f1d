package repository_test

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/sourced-go/sourced/aggregate"
	"github.com/sourced-go/sourced/repository"
	"github.com/sourced-go/sourced/snapshot"
	"github.com/sourced-go/sourced/transport/memory"
)

// A repository for long-lived aggregates: hot roots stay cached between
// Updates, and a snapshot every 100 versions keeps cold loads short.
func ExampleWithCache() {
	ctx := context.Background()
	repo := repository.New(memory.New(), counters,
		repository.WithCache(1000),
		repository.WithSnapshots(snapshot.NewMemory(), 1, 100),
	)
	id := uuid.NewString()
	if _, err := repo.Create(ctx, id, create); err != nil {
		fmt.Println(err)
		return
	}
	for range 250 {
		if _, err := repo.Update(ctx, id, func(r *aggregate.Root[counter]) error { return r.Record(Incremented{By: 2}) }); err != nil {
			fmt.Println(err)
			return
		}
	}
	root, err := repo.Load(ctx, id) // from the snapshot at version 200, then 51 batches
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("version", root.Version(), "count", root.State().Count)
	// Output: version 251 count 500
}
