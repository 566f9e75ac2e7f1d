// Package localserver serves the Serialized Aggregates API over HTTP on top
// of any transport.Transport: a thin HTTP face over the port, not a second
// store. It lets the HTTP transport, the examples and your integration
// tests run against real HTTP on loopback, where the hosted service is out
// of reach; the official Serialized clients work against it unchanged
// apart from their base URL.
//
// Start one from a test in one line, as with net/http/httptest:
//
//	srv := localserver.NewServer(memory.New(), localserver.WithKeys("key", "secret"))
//	defer srv.Close()
//	client, _ := serialized.New(serialized.WithBaseURL(srv.URL), serialized.WithKeys("key", "secret"))
//
// or run the binary: go run ./cmd/sourced-server -addr 127.0.0.1:8080.
//
// What it answers, as the API does: 401 without the right keys (compared in
// constant time); 400 for a bad aggregate type, id, tenant or query
// parameter; 404; 409 on a version conflict; 415 for a write whose
// Content-Type is not application/json; 422 with {"errors":[...]} for an
// invalid body (bad JSON, no events, a missing or bad eventType, more than
// transport.MaxBatchEvents events, encryptedData over
// transport.MaxEncryptedData bytes); 413 for a body over the size bound;
// 200 with a deleteToken for the first step of a delete, 204 for the
// second, 403 for an unknown, expired or other-target token; 304 for a
// matching If-None-Match; 405 with Allow for a wrong method. Every answer to
// a request with the keys (every answer, without keys configured) carries
// the Serialized-RateLimit-Limit, -Remaining and -Reset headers; over the
// limit it answers 429 with {"code":429,"message":...}. Requests without
// valid keys spend a budget of their own (WithUnauthenticatedRateLimit) and
// their answers carry no rate-limit headers. The Serialized-Tenant-Id header
// scopes every aggregate call.
//
// Without WithKeys the server is for one machine: it answers only requests
// whose Host is a loopback name (421 otherwise) and whose Origin, when a
// browser sends one, is its own (403 otherwise), so neither a DNS-rebinding
// page nor a cross-site form can reach it; WithAnyHost lifts that.
//
// Load and feed answers hold at most transport.MaxPageBytes of events (at
// least one batch; hasMore says when more follow), and are streamed as they
// are encoded. Event data goes out byte for byte as stored. GET answers
// carry Cache-Control: private, no-store, Vary on the tenant and key
// headers, and loads an ETag naming the version, the tenant and a digest of
// the content.
//
// Request logs (zap) carry method, path, status, duration, tenant and the
// client's address (from X-Forwarded-For only for WithTrustedProxies);
// never a header value of the keys. Untrusted values are cut to 256 bytes.
package localserver
