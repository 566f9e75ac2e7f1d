// Package serialized is the transport for the Serialized Aggregates API over
// HTTP: the hosted service (https://api.serialized.io) or any server that
// speaks the same API, such as package localserver.
//
//	client, err := serialized.NewFromEnv() // SERIALIZED_ACCESS_KEY, SERIALIZED_SECRET_ACCESS_KEY
//	repo := repository.New(client, orders)
//
// # Configuration
//
// New takes options: WithBaseURL (default DefaultBaseURL), WithKeys,
// WithHTTPClient, WithLogger, WithRetry, WithTimeout, WithMaxResponseBytes.
// NewFromEnv reads SERIALIZED_ACCESS_KEY and SERIALIZED_SECRET_ACCESS_KEY,
// and SERIALIZED_BASE_URL when set. The default HTTP client reuses
// connections and times out as the official Java client does: 10 s to
// connect, 60 s for a request. It follows no redirect: one would carry the
// keys to wherever it points, so a 3xx answer is an error.
//
// # Errors
//
// Every failure is a *transport.Error wrapping one sentinel: 400 and 422
// are transport.ErrInvalid (a 422 carries the server's messages), 401
// ErrUnauthorized, 403 ErrBadDeleteToken, 404 ErrNotFound, 409
// ErrConflict, 429 ErrRateLimited (with the Serialized-RateLimit-* values),
// 5xx and connection failures ErrUnavailable.
//
// # Retries, and why a store is never resent blindly
//
// Loads, HEAD, list and delete requests are safe to repeat: they are
// retried with exponential backoff on 429, 5xx and connection errors,
// waiting at least until Serialized-RateLimit-Reset after a 429.
//
// A store (POST) is retried only when it is certain the server did not take
// it: on 429 and 503, and when the connection failed before the request was
// written. When the request went out and then the outcome was lost (a
// timeout, a reset connection, a 500, 502 or 504), the batch may or may not
// have been stored. The client does not guess: it returns an error wrapping
// transport.ErrAmbiguous. package repository resolves it by looking for the
// batch's event ids in the history before it runs a command again, so
// nothing is stored twice.
//
// # Secrets
//
// The keys go into request headers and nowhere else: not in logs, error
// messages or panics, and a Client prints them masked. With WithHTTPClient,
// refuse redirects in that client's CheckRedirect, or they carry the keys
// along. Names and ids are
// validated before any request is sent.
package serialized
