package main

import (
	"errors"

	"github.com/sourced-go/sourced/transport"
)

// openFile opens a durable store. The bbolt transport is not built yet.
func openFile(path string) (transport.Transport, func(), string, error) {
	return nil, nil, "", errors.New("-data: durable storage is not available in this build yet")
}
