package main

import (
	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/bolt"
)

// openFile opens the durable event file named by -data.
func openFile(path string) (transport.Transport, func(), string, error) {
	store, err := bolt.Open(path)
	if err != nil {
		return nil, nil, "", err
	}
	return store, func() { _ = store.Close() }, "file " + path, nil
}
