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
// WithHTTPClient, WithLogger, WithRetry, WithTimeout, WithMaxResponseBytes,
// WithMaxRateLimitWait, WithClock, WithTracerProvider. New refuses a key with
// whitespace, a control character or a byte outside ASCII (a trailing
// newline read from a file, say). NewFromEnv reads SERIALIZED_ACCESS_KEY and
// SERIALIZED_SECRET_ACCESS_KEY, and SERIALIZED_BASE_URL when set; a base URL
// on a loopback address needs no keys when neither is set (a local server
// started without keys), and otherwise a missing key is an error naming the
// variables to set. The default HTTP client reuses connections and times out
// as the official Java client does: 10 s to connect, 60 s for a request.
//
// No redirect is followed, with the default client or one given with
// WithHTTPClient: a redirect would carry the keys to wherever it points and
// turn a store into a GET, so a 3xx answer is an error.
//
// Event data travels byte for byte: the client writes it as given (not
// compacted or re-escaped, white space kept) and reads back every byte the
// server sent for it, so over a server that keeps bytes, such as package
// localserver, it comes back unchanged.
//
// # Errors
//
// Every failure is a *transport.Error wrapping one sentinel: 400 and 422
// are transport.ErrInvalid (a 422 carries the server's messages), 401
// ErrUnauthorized, 403 ErrBadDeleteToken on ConfirmDelete and
// ErrUnauthorized elsewhere, 404 ErrNotFound, 409 ErrConflict, 429
// ErrRateLimited (with the Serialized-RateLimit-* values, or Retry-After as
// the reset), 408, 5xx, a 304 (the client sends no conditional request) and
// connection failures ErrUnavailable, except after a store went out (below).
// A failure after retries says how many attempts were made over how long.
//
// A page that contradicts the request or itself (a Load page whose version
// does not move past since, goes back or moves further than its events
// allow, or that says hasMore without events; a feed page whose entries do
// not all carry rising sequence numbers after since) fails with an error
// matching both ErrInconsistentPage and transport.ErrUnavailable: taking it
// would replay events, commit a version that is not the aggregate's, or
// read forever.
//
// # Retries, and why a store is never resent blindly
//
// Loads, HEAD, list and delete requests are safe to repeat: they are
// retried with exponential backoff on 408, 429, 5xx and connection errors,
// waiting at least until Serialized-RateLimit-Reset or Retry-After (bounded
// by WithMaxRateLimitWait). When that time is past the caller's deadline,
// the call fails at once with the 429 and its reset. Each retry is logged at
// Warn.
//
// A store (POST) is retried only when it is certain the server did not take
// it: on 408 and 429, and when the connection failed before the request was
// written. It is never resent by net/http on its own: the request has no
// GetBody, so the HTTP/2 transport cannot replay it after a stream reset.
// When the request went out and then the outcome was lost (a timeout, a
// reset connection, any 5xx, since a proxy answers 502, 503 or 504 after the
// backend took the request, a 304, or an answer too large or too broken to
// read), the batch may or may not have been stored. The client does not
// guess: it returns an error wrapping transport.ErrAmbiguous. package
// repository resolves it by looking for the batch's event ids in the history
// before it runs a command again, so nothing is stored twice.
//
// # Secrets
//
// The keys go into request headers and nowhere else: not in logs, error
// messages, span status or panics, and a Client (value or pointer) prints
// them masked. Text taken from a response, which a server or proxy may fill
// with the request's headers, has the keys' values masked and is cut to a
// bounded length before it reaches an error, a log line or a span. Names and
// ids are validated before any request is sent.
package serialized
