//go:build !unix

package postgres_test

import "time"

// processCPU is not measured here (see cpu_unix_test.go).
func processCPU() (self, children time.Duration) { return 0, 0 }
