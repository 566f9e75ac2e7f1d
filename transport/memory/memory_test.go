package memory_test

import (
	"testing"
	"time"

	"github.com/sourced-go/sourced/transport"
	"github.com/sourced-go/sourced/transport/memory"
	"github.com/sourced-go/sourced/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.RunWithClock(t, func(t *testing.T, now func() time.Time) transport.Transport {
		return memory.New(memory.WithClock(now))
	})
}
