// Package backend chooses the store the examples run on: the embedded
// in-memory transport by default, or the Serialized HTTP API (the local
// server or the hosted service) when asked by flag or environment.
package backend

import (
	"flag"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
)

// Flags are the example binaries' store flags.
type Flags struct {
	API string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.API, "api", "", "base URL of a Serialized-compatible API (the local server or https://api.serialized.io); keys from SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY")
}

// Open returns the chosen transport and a line describing it.
func (f *Flags) Open(getenv func(string) string) (transport.Transport, string, error) {
	return openBackend(f, getenv)
}

func openMemory() (transport.Transport, string, error) {
	return memory.New(), "embedded in-memory store (events vanish when the program ends)", nil
}
