// Package e2e holds end-to-end tests that run the whole stack (repository,
// HTTP transport, local server, memory store) under injected faults. It has
// no code of its own.
package e2e
