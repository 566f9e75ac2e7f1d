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
// parameter; 404; 409 on a version conflict; 422 with {"errors":[...]} for
// an invalid body (bad JSON, no events, a missing or bad eventType, more
// than transport.MaxBatchEvents events, encryptedData over
// transport.MaxEncryptedData bytes); 413 for a body over the size bound;
// 200 with a deleteToken for the first step of a delete, 204 for the
// second, 403 for an unknown, expired or other-target token; 304 for a
// matching If-None-Match; 405 with Allow for a wrong method. Every response
// carries the Serialized-RateLimit-Limit, -Remaining and -Reset headers;
// over the limit it answers 429 with {"code":429,"message":...}. The
// Serialized-Tenant-Id header scopes every aggregate call.
//
// Request logs (zap) carry method, path, status, duration and tenant; never
// a header value, so never a key.
package localserver
