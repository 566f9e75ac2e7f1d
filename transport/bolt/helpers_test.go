package bolt_test

import (
	"errors"
	"sync/atomic"

	"github.com/sourced-go/sourced/transport"
)

type atomicCounter struct{ v atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.v.Add(1) - 1 }

func isNotFound(err error) bool { return errors.Is(err, transport.ErrNotFound) }
